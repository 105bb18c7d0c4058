"""The files a QAT stage writes beside its checkpoint (recipes/models/qat.py), named once for it and for the
formats that ship them. A module of its own so that editing the artifact options (formats/qat_int8.py) does
not retrain every QAT model: the training stage's signature includes only this."""
QDQ_ONNX = "qat.qdq.onnx"   # the converted program as QDQ ONNX (ONNX Runtime, TensorRT)
PROGRAM = "qat.pt2"         # the converted program (torch.export), lowered to ExecuTorch
RECORD = "qat.json"
