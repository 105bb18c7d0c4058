"""Artifact formats: ONNX export, fusion and quantizers, TorchScript/.ptl/.pte, nf4, TensorRT engines."""
