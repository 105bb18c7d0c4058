"""ONNX Runtime int8 quantization: dynamic, and static QDQ calibrated on train.

Thin, typed wrappers around onnxruntime.quantization; what they add is the
calibration reader over our own train split and the mapping of profile knobs
onto ORT arguments.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .data import load_split
from .fsutil import atomic_path
from .profile import DynamicInt8, StaticInt8
from .textenc import Encoder


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
    return {"method": "static", "calibration": params.calibration, "samples": len(texts), "op_types": op_types,
            "per_channel": params.per_channel, "activation_type": params.activation_type}


def quantize_stage(src: str, dst: str, report: str, params: dict, train_jsonl: str | None, tokenizer_json: str | None,
                   input_names: list[str], length: int | None) -> None:
    from .fsutil import write_json
    from .profile import QUANTIZERS
    from .schema import from_plain

    spec = from_plain(QUANTIZERS[params["method"]], params)
    if isinstance(spec, DynamicInt8):
        info = quantize_dynamic(Path(src), Path(dst), spec)
    elif isinstance(spec, StaticInt8):
        info = quantize_static(Path(src), Path(dst), Path(train_jsonl), Path(tokenizer_json), spec, tuple(input_names), length)
    else:
        raise ValueError(f"quantize stage got method {params['method']!r}; the graph only routes dynamic/static here")
    write_json(Path(report), info)
