"""Build one OpenVINO IR artifact: convert, quantize or compress with NNCF, verify, record.

Outputs, in the stage directory: model.xml + model.bin (the IR), ov_config.json
(what the runtime needs to run it as built: inference precision, CPU features)
and openvino.json (the record the report summarises: versions, the check
against the source model, what NNCF did).

The fp32 IR must match the model it came from (the verified ONNX, run by ONNX
Runtime, or the PyTorch model) within stages.export.atol on the shared
verification inputs; quantized and bf16 IRs are held to their gates by the
evaluation instead, and their distance from the source is recorded.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from recipes.errors import StageError
from recipes.formats.model_io import VERIFY_SHAPES, verification_inputs
from recipes.formats.openvino_params import NncfPtq, OpenVinoQuant, WeightCompression
from recipes.fsutil import atomic_dir, write_json
from recipes.inputs.data import load_split
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage, tagged

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph, Model

OUTPUT_NAME = "logits"  # a classifier's; an embedding model's is "sentence_embedding", as in its ONNX


@dataclass(frozen=True)
class OpenVinoArgs:
    source: Literal["onnx", "pytorch"]
    src: Path                      # the fp32 ONNX, or the model directory (source = pytorch)
    model_xml: Path
    config: Path                   # ov_config.json
    record: Path                   # openvino.json
    precision: str
    inference_precision: Literal["f32", "bf16"]
    requires_cpu_any: tuple[str, ...]
    requires_why: str
    params: OpenVinoQuant | None = field(default=None, metadata=tagged(NncfPtq, WeightCompression))
    input_names: tuple[str, ...] = ()
    vocab_size: int = 0
    atol: float = 1e-4
    # NNCF post-training quantization only: the train split, its tokenizer and the
    # allowed drop in agreement with the float model (1 - min_agreement).
    train_jsonl: Path | None = None
    tokenizer_json: Path | None = None
    length: int | None = None
    max_drop: float | None = None


def convert(args: OpenVinoArgs) -> Any:
    """The fp32 ov.Model of the source, with its one output named as the exported ONNX names it (logits, or an
    embedding model's "sentence_embedding")."""
    import openvino as ov

    from recipes.models.embedding import OUTPUT_NAME as EMBEDDING, read_pooling

    if args.source == "onnx":
        model = ov.convert_model(str(args.src))
        embedding = EMBEDDING in model.outputs[0].get_names()
    else:
        model = _convert_pytorch(args)
        embedding = read_pooling(args.src) is not None
    if len(model.outputs) != 1:
        raise StageError(f"{args.src}: expected one output (the logits), the converted model has {len(model.outputs)}")
    model.outputs[0].get_tensor().set_names({EMBEDDING if embedding else OUTPUT_NAME})
    return model


def _convert_pytorch(args: OpenVinoArgs) -> Any:
    import openvino as ov
    import torch

    from recipes.models.hf import load_classifier

    classifier = load_classifier(args.src)
    names = args.input_names

    class Logits(torch.nn.Module):
        """Positional inputs in the ONNX order, logits out: the interface every other artifact has."""

        def __init__(self) -> None:
            super().__init__()
            self.model = classifier

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(names, inputs))).logits

    batch, seq = VERIFY_SHAPES[0]
    example = verification_inputs(args.vocab_size, names, batch, seq, seed=0)
    with torch.no_grad():
        model = ov.convert_model(Logits().eval(), example_input=tuple(torch.from_numpy(example[n]) for n in names))
    for port, name in zip(model.inputs, names):
        port.get_tensor().set_names({name})
    return model


def reference_runner(args: OpenVinoArgs) -> Callable[[dict], Any]:
    """The source model's logits: ONNX Runtime on the verified ONNX, or PyTorch."""
    import numpy as np

    if args.source == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(args.src), providers=["CPUExecutionProvider"])
        return lambda inputs: session.run(None, inputs)[0].astype(np.float32)
    import torch

    from recipes.models.hf import load_classifier

    model = load_classifier(args.src)

    def run(inputs: dict) -> Any:
        with torch.inference_mode():
            return model(**{k: torch.from_numpy(v) for k, v in inputs.items()}).logits.float().numpy()
    return run


def _compiled(model: Any, hint: str) -> Any:
    import openvino as ov

    return ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": hint})


def verify(args: OpenVinoArgs, fp32: Any, final: Any) -> list[dict[str, Any]]:
    """Distance of the fp32 IR (gated by atol) and of the shipped IR (recorded) from the source model."""
    import numpy as np

    fp32_run, final_run, reference = _compiled(fp32, "f32"), _compiled(final, "f32"), reference_runner(args)
    checks = []
    for i, (batch, seq) in enumerate(VERIFY_SHAPES):
        inputs = verification_inputs(args.vocab_size, args.input_names, batch, seq, seed=i)
        ref = reference(inputs)
        ir = np.asarray(fp32_run(inputs)[0], dtype=np.float32)
        shipped = np.asarray(final_run(inputs)[0], dtype=np.float32)
        diff = float(np.abs(ir - ref).max())
        if diff > args.atol:
            raise StageError(f"{args.model_xml}: the OpenVINO IR differs from its {args.source} source by {diff:.3g} > "
                             f"stages.export.atol {args.atol} at batch {batch}, sequence {seq}; the conversion is wrong, "
                             "do not ship it (try [openvino] source = \"onnx\" or \"pytorch\")")
        checks.append({"batch": batch, "sequence": seq, "fp32_ir_max_abs_diff": diff,
                       "artifact_max_abs_diff_f32": float(np.abs(shipped - ref).max())})
    return checks


def sample_indices(total: int, calibration: int, validation: int) -> tuple[list[int], list[int]]:
    """Disjoint, evenly spread positions in the (id-sorted) train split: calibration first, validation from the rest."""
    def spread(pool: list[int], count: int) -> list[int]:
        step = max(1, len(pool) // count) if count else 1
        return pool[::step][:count]

    if calibration + validation > total:
        # A small train split is shared: calibration gets at most half, validation the rest. The
        # counts used are in the stage's record and the report's note.
        calibration = min(calibration, max(1, total // 2)) if validation else min(calibration, total)
        validation = min(validation, total - calibration)
    calib = spread(list(range(total)), calibration)
    taken = set(calib)
    return calib, spread([i for i in range(total) if i not in taken], validation)


def _feeds(args: OpenVinoArgs, indices: list[int]) -> list[dict]:
    """Batch-1 feeds of the train examples at `indices`, unpadded, as the device sees single texts."""
    examples = load_split(args.train_jsonl)
    encoder = Encoder(args.tokenizer_json, args.length)
    return [encoder.encode([examples[i].text], args.input_names) for i in indices]


def quantize_ptq(args: OpenVinoArgs, model: Any, params: NncfPtq) -> tuple[Any, dict[str, Any]]:
    import nncf
    import numpy as np

    total = len(load_split(args.train_jsonl))
    validation_samples = params.validation_samples if params.accuracy_control else 0
    calib_at, valid_at = sample_indices(total, params.calibration_samples, validation_samples)
    calibration = _feeds(args, calib_at)
    common = {"preset": getattr(nncf.QuantizationPreset, params.preset.upper()), "subset_size": len(calibration),
              "fast_bias_correction": params.fast_bias_correction, "model_type": nncf.ModelType.TRANSFORMER}
    info: dict[str, Any] = {"method": "nncf_ptq", "calibration_samples": len(calibration), "preset": params.preset}
    if not params.accuracy_control:
        quantized = nncf.quantize(model, nncf.Dataset(calibration), **common)
        return quantized, {**info, "fake_quantize_nodes": _fake_quantize_count(quantized)}

    # Validation examples are train examples the calibration did not see.
    fp32 = _compiled(model, "f32")
    feeds = _feeds(args, valid_at)
    if not feeds:
        raise StageError(f"{args.train_jsonl}: {total} train example(s): too few to both calibrate and validate NNCF's "
                         "accuracy control; add data or set quantize.accuracy_control = false")
    reference = [int(np.asarray(fp32(f)[0]).argmax()) for f in feeds]
    items = list(zip(feeds, reference))

    def agreement(compiled: Any, data: Any) -> tuple[float, list[float]]:
        hits = [float(int(np.asarray(compiled(f)[0]).argmax()) == ref) for f, ref in data]
        return (sum(hits) / len(hits) if hits else 1.0), hits

    quantized = nncf.quantize_with_accuracy_control(
        model, nncf.Dataset(calibration), nncf.Dataset(items, lambda item: item[0]), agreement,
        max_drop=args.max_drop, drop_type=nncf.DropType.ABSOLUTE,
        advanced_accuracy_restorer_parameters=nncf.AdvancedAccuracyRestorerParameters(max_num_iterations=params.max_iterations),
        **common)
    achieved, _ = agreement(_compiled(quantized, "f32"), items)
    info.update({"accuracy_control": True, "validation_samples": len(items), "max_drop": args.max_drop,
                 "validation_agreement": achieved, "fake_quantize_nodes": _fake_quantize_count(quantized)})
    if achieved < 1.0 - args.max_drop - 1e-9:
        raise StageError(f"{args.model_xml}: NNCF's accuracy control reached agreement {achieved:.3f} with the float model on "
                         f"{len(items)} validation examples, below the gate's {1.0 - args.max_drop:.3f} after "
                         f"{params.max_iterations} iterations; raise quantize.max_iterations, lower gates.min_agreement, "
                         "or ship a float artifact")
    return quantized, info


def _fake_quantize_count(model: Any) -> int:
    """FakeQuantize nodes left in the model (accuracy control reverts the most harmful to float)."""
    return sum(1 for op in model.get_ops() if op.get_type_name() == "FakeQuantize")


def compress(model: Any, params: WeightCompression) -> tuple[Any, dict[str, Any]]:
    import nncf

    int4 = params.mode.startswith("int4")
    options: dict[str, Any] = {"mode": getattr(nncf.CompressWeightsMode, params.mode.upper())}
    if int4:
        options.update(group_size=params.group_size, ratio=params.ratio)
    compressed = nncf.compress_weights(model, **options)
    info = {"method": "weight_compression", "mode": params.mode}
    if int4:
        info.update(group_size=params.group_size, ratio=params.ratio)
    return compressed, info


QUANTIZERS: dict[type, Callable[[OpenVinoArgs, Any, Any], tuple[Any, dict[str, Any]]]] = {
    NncfPtq: quantize_ptq,
    WeightCompression: lambda args, model, params: compress(model, params),
}


def build(args: OpenVinoArgs) -> dict[str, Any]:
    import openvino as ov

    from runtime.cpu_features import host_features

    logging.getLogger("nncf").setLevel(logging.WARNING)
    fp32 = convert(args)
    model, info = (fp32, {}) if args.params is None else QUANTIZERS[type(args.params)](args, fp32.clone(), args.params)
    checks = verify(args, fp32, model)
    out = args.model_xml.parent
    have = host_features() or frozenset()
    config = {"precision": args.precision, "inference_precision": args.inference_precision,
              "requires_cpu_any": list(args.requires_cpu_any), "why": args.requires_why,
              "openvino_version": metadata.version("openvino")}
    record = {"source": args.source, "precision": args.precision, "inference_precision": args.inference_precision,
              "quantization": info, "checks": checks, "openvino": metadata.version("openvino"),
              "nncf": metadata.version("nncf") if args.params is not None else None,
              "requires_cpu_any": list(args.requires_cpu_any),
              "build_host_has": sorted(set(args.requires_cpu_any) & set(have))}
    with atomic_dir(out) as tmp:
        # bf16 runs from fp16-stored weights at half the size (fp16 holds more mantissa than bf16);
        # fp32 keeps fp32 weights so it stays the exact reference.
        ov.save_model(model, str(tmp / args.model_xml.name), compress_to_fp16=args.precision == "bf16")
    write_json(args.config, config)
    write_json(args.record, record)
    return record


STAGE = Stage("openvino", OpenVinoArgs, build,
              modules=("formats.openvino_ir", "formats.openvino_params", "formats.model_io", "inputs.data", "textenc", "params",
                       "models.hf", "models.embedding", "models.slim", "models.archs", "runtime.cpu_features", "runtime.tokenize"),
              packages=("openvino", "nncf", "onnxruntime", "torch", "transformers"))


def declare(g: "Graph", spec: Any, model: "Model", needs: tuple[str, ...], why: str, hint: str,
            onnx: Path | None) -> OpenVinoArgs:
    p = g.profile
    params = spec.quantize
    ptq = isinstance(params, NncfPtq)
    data = {"train_jsonl": g.data_dir / "train.jsonl", "tokenizer_json": model.tokenizer,
            "length": p.shapes.sequence.max} if ptq else {}
    max_drop = round(1.0 - p.gates_for(spec).min_agreement, 6) if ptq and params.accuracy_control else None
    source = p.openvino.source
    src = onnx if source == "onnx" else model.dir
    identity = {"source": source, "src": src, "precision": spec.precision, "hint": hint, "needs": needs, "params": params,
                "input_names": g.input_names, "atol": p.stages.export.atol, "max_drop": max_drop, **data}
    out = g.stage_dir(f"openvino-{spec.precision}" + (f"-{params.method}" if params else ""), identity)
    args = OpenVinoArgs(source=source, src=src, model_xml=out / "model.xml", config=out / "ov_config.json",
                        record=out / "openvino.json", precision=spec.precision, inference_precision=hint,
                        requires_cpu_any=needs, requires_why=why, params=params, input_names=g.input_names,
                        vocab_size=g.vocab_size, atol=p.stages.export.atol, max_drop=max_drop, **data)
    sources = ([src] if source == "onnx" else list(model.weights)) + ([data["train_jsonl"], model.tokenizer] if ptq else [])
    g.stage(STAGE, [args.model_xml, out / "model.bin", args.config, args.record], sources, args)
    return args
