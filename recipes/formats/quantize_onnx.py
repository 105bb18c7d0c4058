"""ONNX quantization: ORT dynamic int8, static QDQ int8 calibrated on the
train split, int4 weight-only (MatMulNBits) and fp16.

Thin, typed wrappers around onnxruntime.quantization and ORT's float16
converter; what they add is the calibration reader over our own train split
and the mapping of profile knobs onto their arguments.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.fsutil import atomic_path, write_json
from recipes.inputs.data import load_split
from recipes.params import MAX_SAMPLES, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage, tagged

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph

@dataclass(frozen=True)
class StaticInt8:
    method: Literal["static"]
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    calibration_samples: int = bounded(128, min=1, max=MAX_SAMPLES)
    # Calibration examples per batch; the histogram calibrators need equal batches.
    calibration_batch: int = bounded(8, min=1, max=4096)
    per_channel: bool = True
    op_types: tuple[str, ...] = ("MatMul",)
    activation_type: Literal["uint8", "int8"] = "uint8"
    # The embedding tables are weight-only int8 in the QDQ model too.
    quantize_embeddings: bool = True


@dataclass(frozen=True)
class WeightOnlyInt4:
    method: Literal["weight_only"]
    # MatMulNBits packs blocks of a power of two, at least 16 weights.
    block_size: int = bounded(32, min=16, max=256)
    symmetric: bool = True
    # ONNX Runtime's accuracy levels: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute.
    accuracy_level: int = bounded(4, min=0, max=4)
    quantize_embeddings: bool = False


@dataclass(frozen=True)
class Fp16:
    method: Literal["fp16"]
    keep_io_types: bool = True


OnnxQuantSpec = DynamicInt8 | StaticInt8 | WeightOnlyInt4 | Fp16
ONNX_QUANTIZERS = tagged(DynamicInt8, StaticInt8, WeightOnlyInt4, Fp16)


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

    def __init__(self, texts: list[str], encoder: Encoder, input_names: tuple[str, ...], length: int, batch_size: int):
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
    reader = _TrainSplitReader(texts, Encoder(tokenizer_json, length), input_names, length, params.calibration_batch)
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


@dataclass(frozen=True)
class QuantizeArgs:
    src: Path
    dst: Path
    report: Path
    params: OnnxQuantSpec = field(metadata=ONNX_QUANTIZERS)
    input_names: tuple[str, ...] = ()
    # Static calibration only: the train split, the tokenizer and the padded length.
    train_jsonl: Path | None = None
    tokenizer_json: Path | None = None
    length: int | None = None


def _static(args: QuantizeArgs) -> dict[str, Any]:
    return quantize_static(args.src, args.dst, args.train_jsonl, args.tokenizer_json, args.params, args.input_names, args.length)


METHODS: dict[type, Callable[[QuantizeArgs], dict[str, Any]]] = {
    DynamicInt8: lambda a: quantize_dynamic(a.src, a.dst, a.params),
    StaticInt8: _static,
    WeightOnlyInt4: lambda a: quantize_int4(a.src, a.dst, a.params),
    Fp16: lambda a: convert_fp16(a.src, a.dst, a.params),
}


def build(args: QuantizeArgs) -> dict[str, Any]:
    info = METHODS[type(args.params)](args)
    write_json(args.report, info)
    return info


STAGE = Stage("quantize", QuantizeArgs, build, modules=("formats.quantize_onnx", "formats.dynamic_int8", "textenc", "inputs.data", "params", "runtime.tokenize"),
              packages=("onnx", "onnxruntime"))


def declare(g: "Graph", src: Path, params: OnnxQuantSpec, precision: str, data_dir: Path, tokenizer_json: Path,
            length: int) -> Path:
    """`src` quantized or converted by `params`. Only static calibration reads data: a dynamic
    model must not depend on the profile's shapes, or targets could not share it."""
    static = isinstance(params, StaticInt8)
    calibration = {"train_jsonl": data_dir / "train.jsonl", "tokenizer_json": tokenizer_json, "length": length} if static else {}
    sources = [src] + ([data_dir / "train.jsonl", tokenizer_json] if static else [])
    identity = {"src": src, "params": params, "input_names": g.input_names, "train_jsonl": None, "tokenizer_json": None,
                "length": None, **calibration}
    out = g.stage_dir(f"onnx-{precision}-{params.method}", identity)
    args = QuantizeArgs(src=src, dst=out / "model.onnx", report=out / "quantize.json", params=params,
                        input_names=g.input_names, **calibration)
    g.stage(STAGE, [args.dst, args.report], sources, args)
    return args.dst
