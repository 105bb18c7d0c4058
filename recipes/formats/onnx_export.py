"""PyTorch checkpoint -> fp32 ONNX with dynamic batch and sequence axes.

Uses the torch.export-based exporter (`dynamo=True`). The legacy TorchScript
exporter traces transformers 5's mask code into shape-specialised constants:
on this stack it gave logits off by 0.05 for padded batches, which is why the
export is always verified against PyTorch on several shapes with padding,
and a mismatch above the tolerance fails the stage.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import StageError
from recipes.formats.model_io import VERIFY_SHAPES, verification_inputs
from recipes.formats.onnx_paths import strip_host_paths
from recipes.fsutil import atomic_path, write_json
from recipes.params import MAX_BATCH, MAX_SEQUENCE, bounded
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model

# Export bounds wide enough for every profile, so all targets share one ONNX.
EXPORT_MAX_BATCH = 1024
# The opsets the torch.export-based exporter emits and ONNX Runtime 1.2x runs;
# the exporter itself needs 18 or newer.
OPSETS = (18, 23)


@dataclass(frozen=True)
class ExportParams:
    opset: int = bounded(18, min=OPSETS[0], max=OPSETS[1])
    # Max |logit difference| allowed between ONNX Runtime and PyTorch; also
    # the tolerance of every converter verified against the export (fusion, .ptl, .pte).
    atol: float = bounded(1e-4, min=0.0, min_exclusive=True, max=1.0)
    # "eager" exports attention as plain MatMul/Softmax, which ONNX Runtime
    # quantizes and runs faster on CPU than the decomposed SDPA graph.
    attention: Literal["eager", "sdpa"] = "eager"


@dataclass(frozen=True)
class ExportArgs:
    model_dir: Path
    dst: Path
    report: Path
    params: ExportParams
    input_names: tuple[str, ...]
    max_batch: int
    max_sequence: int

def export_onnx(model_dir: Path, dst: Path, report_path: Path, params: ExportParams,
                input_names: tuple[str, ...], max_batch: int, max_sequence: int) -> dict[str, Any]:
    import torch

    from recipes.models.hf import load_classifier, quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    model = load_classifier(model_dir, attention=params.attention)
    reference = load_classifier(model_dir)  # the teacher as it is served in PyTorch
    vocab = int(model.config.vocab_size)

    example = {k: torch.from_numpy(v) for k, v in verification_inputs(vocab, input_names, *VERIFY_SHAPES[0], seed=0).items()}
    # torch.export specialises dimensions of size 0/1, so the trace example is
    # (2, 16) and the ranges start at 1 and 2 only through Dim bounds.
    batch = torch.export.Dim("batch", min=1, max=max(max_batch, 2))
    sequence = torch.export.Dim("sequence", min=2, max=max(max_sequence, 17))
    with atomic_path(dst) as tmp:
        torch.onnx.export(
            model,
            (),
            kwargs=example,
            f=str(tmp),
            input_names=list(input_names),
            output_names=[output_name(model)],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
            opset_version=params.opset,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
        strip_host_paths(tmp)
        check_opset(tmp, params.opset, dst.name)
        checks = verify(tmp, reference, input_names, vocab, params.atol, max_sequence)
    report = {"opset": params.opset, "atol": params.atol, "attention": params.attention, "checks": checks,
              "max_abs_diff": max(c["max_abs_diff"] for c in checks)}
    write_json(report_path, report)
    return report


def output_name(model) -> str:
    """"logits" for a classifier, "sentence_embedding" for an embedding model (recipes/models/embedding.py)."""
    return getattr(model, "output_name", "logits")


def check_opset(onnx_path: Path, opset: int, name: str) -> None:
    """The file must carry the opset that export.json records (the exporter may silently pick another)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    found = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if found != [opset]:
        raise StageError(f"{name}: the exporter wrote ONNX opset {found[0] if found else 'none'}, not stages.export.opset = "
                         f"{opset}; use an opset this torch exports ({OPSETS[0]} to {OPSETS[1]})")


def verify(onnx_path: Path, reference, input_names: tuple[str, ...], vocab: int, atol: float, max_sequence: int) -> list[dict[str, Any]]:
    import numpy as np
    import onnxruntime as ort
    import torch

    try:
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime's pybind errors share no useful base class
        raise StageError(f"{onnx_path.name}: the exported graph does not load in ONNX Runtime "
                         f"({' '.join(str(e).split())[:300]}); the export is wrong, do not ship it") from None
    checks = []
    for i, (b, s) in enumerate(VERIFY_SHAPES):
        s = min(s, max_sequence)
        feeds = verification_inputs(vocab, input_names, b, s, seed=100 + i)
        with torch.inference_mode():
            ref = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        out = session.run([output_name(reference)], feeds)[0]
        diff = float(np.abs(out - ref).max())
        checks.append({"batch": b, "sequence": s, "max_abs_diff": diff})
        if not diff <= atol:
            raise StageError(
                f"{onnx_path.name}: ONNX Runtime {output_name(reference)} differs from PyTorch by {diff:.3g} at batch {b}, "
                f"sequence {s} (tolerance stages.export.atol = {atol}); the export is wrong, do not ship it"
            )
    return checks


def build(args: ExportArgs) -> dict[str, Any]:
    return export_onnx(args.model_dir, args.dst, args.report, args.params, args.input_names, args.max_batch, args.max_sequence)


STAGE = Stage("export", ExportArgs, build,
              modules=("formats.onnx_export", "formats.model_io", "formats.onnx_paths", "models.hf", "models.embedding", "models.slim", "models.archs", "params"),
              packages=("torch", "transformers", "onnx", "onnxscript", "onnxruntime"))


def declare(g: "Graph", model: "Model", params: ExportParams) -> Path:
    """The verified fp32 ONNX of `model`, with batch and sequence axes as wide as any profile needs."""
    identity = {"model_dir": model.dir, "params": params, "input_names": g.input_names, "max_batch": EXPORT_MAX_BATCH,
                "max_sequence": g.max_positions}
    out = g.stage_dir("onnx-fp32", identity)
    args = ExportArgs(model_dir=model.dir, dst=out / "model.onnx", report=out / "export.json", params=params,
                      input_names=g.input_names, max_batch=EXPORT_MAX_BATCH, max_sequence=g.max_positions)
    g.stage(STAGE, [args.dst, args.report], model.weights, args)
    return args.dst
