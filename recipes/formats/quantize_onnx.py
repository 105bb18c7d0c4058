"""ONNX quantization: ORT dynamic int8, static QDQ int8 calibrated on the
train split, int4 weight-only (MatMulNBits) and fp16.

Thin, typed wrappers around onnxruntime.quantization and ORT's float16
converter; what they add is the calibration reader over our own train split
and the mapping of profile knobs onto their arguments.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from recipes.inputs.data import load_split
from recipes.fsutil import atomic_path
from recipes.wiring.profile import DynamicInt8, Fp16, StaticInt8, WeightOnlyInt4
from recipes.textenc import Encoder


def _preprocess(src: Path, dst: Path) -> None:
    """ORT's recommended pre-pass: shape inference and graph cleanup."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference does not understand every op the dynamo
    # exporter emits; ONNX shape inference is enough for quantization.
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_dynamic(src: Path, dst: Path, params: DynamicInt8) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        pre = Path(work) / "pre.onnx"
        _preprocess(src, pre)
        ort_quantize_dynamic(
            str(pre),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=params.per_channel,
            reduce_range=params.reduce_range,
            op_types_to_quantize=list(params.op_types),
        )
    return {"method": "dynamic", "op_types": list(params.op_types), "per_channel": params.per_channel}


class _TrainSplitReader:
    """Feeds tokenized train examples, padded to one fixed length.

    Fixed length because ORT's Percentile and Entropy calibrators stack
    activations across batches and need identical shapes.
    """

    def __init__(self, texts: list[str], encoder: Encoder, input_names: tuple[str, ...], length: int, batch_size: int = 8):
        # Equal batches too: the histogram calibrators also stack along the
        # batch axis, so a short last batch is dropped (when there are others).
        if len(texts) > batch_size:
            texts = texts[: len(texts) - len(texts) % batch_size]
        self.samples = len(texts)
        self.batches = [
            encoder.encode(texts[i:i + batch_size], input_names, pad_to=length) for i in range(0, len(texts), batch_size)
        ]
        self._iter = iter(self.batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self.batches)


CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}


def quantize_static(src: Path, dst: Path, train_jsonl: Path, tokenizer_json: Path, params: StaticInt8,
                    input_names: tuple[str, ...], length: int) -> dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static as ort_quantize_static

    examples = load_split(train_jsonl)
    # Spread the calibration sample across the (id-sorted) split deterministically.
    step = max(1, len(examples) // params.calibration_samples)
    texts = [e.text for e in examples[::step]][: params.calibration_samples]
    reader = _TrainSplitReader(texts, Encoder(tokenizer_json, length), input_names, length)
    op_types = list(params.op_types) + (["Gather"] if params.quantize_embeddings and "Gather" not in params.op_types else [])
    act = QuantType.QUInt8 if params.activation_type == "uint8" else QuantType.QInt8
    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        pre = Path(work) / "pre.onnx"
        _preprocess(src, pre)
        ort_quantize_static(
            str(pre),
            str(tmp),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            per_channel=params.per_channel,
            activation_type=act,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATORS[params.calibration]),
            extra_options={"CalibTensorRangeSymmetric": params.activation_type == "int8"},
        )
    return {"method": "static", "calibration": params.calibration, "samples": reader.samples, "op_types": op_types,
            "per_channel": params.per_channel, "activation_type": params.activation_type}


def quantize_int4(src: Path, dst: Path, params: WeightOnlyInt4) -> dict[str, Any]:
    """4-bit block-wise weights: MatMul -> MatMulNBits; optionally the
    embedding tables too (Gather -> GatherBlockQuantized), which are about
    half of a small BERT and otherwise stay fp32."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    op_types = ("MatMul", "Gather") if params.quantize_embeddings else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(
        str(src), bits=4, block_size=params.block_size, is_symmetric=params.symmetric,
        accuracy_level=params.accuracy_level, op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    with atomic_path(dst) as tmp:
        quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
    return {"method": "weight_only", "bits": 4, "block_size": params.block_size, "symmetric": params.symmetric,
            "accuracy_level": params.accuracy_level, "op_types": list(op_types)}


def convert_fp16(src: Path, dst: Path, params: Fp16) -> dict[str, Any]:
    """fp16 weights and compute; with keep_io_types the graph still takes int64
    ids and returns fp32 logits, so callers need no change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=params.keep_io_types)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return {"method": "fp16", "keep_io_types": params.keep_io_types}


def quantize_stage(src: str, dst: str, report: str, params: dict, train_jsonl: str | None, tokenizer_json: str | None,
                   input_names: list[str], length: int | None) -> None:
    from recipes.fsutil import write_json
    from recipes.wiring.profile import QUANTIZERS
    from recipes.wiring.schema import from_plain

    spec = from_plain(QUANTIZERS[params["method"]], params)
    if isinstance(spec, DynamicInt8):
        info = quantize_dynamic(Path(src), Path(dst), spec)
    elif isinstance(spec, StaticInt8):
        info = quantize_static(Path(src), Path(dst), Path(train_jsonl), Path(tokenizer_json), spec, tuple(input_names), length)
    elif isinstance(spec, WeightOnlyInt4):
        info = quantize_int4(Path(src), Path(dst), spec)
    elif isinstance(spec, Fp16):
        info = convert_fp16(Path(src), Path(dst), spec)
    else:
        raise ValueError(f"quantize stage got method {params['method']!r}; ONNX quantization is dynamic, static, weight_only or fp16")
    write_json(Path(report), info)
