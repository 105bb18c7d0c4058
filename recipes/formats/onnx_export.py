"""PyTorch checkpoint -> fp32 ONNX with dynamic batch and sequence axes.

Uses the torch.export-based exporter (`dynamo=True`). The legacy TorchScript
exporter traces transformers 5's mask code into shape-specialised constants:
on this stack it gave logits off by 0.05 for padded batches, which is why the
export is always verified against PyTorch on several shapes with padding,
and a mismatch above the tolerance fails the stage.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recipes.errors import StageError
from recipes.fsutil import atomic_path, write_json
from recipes.formats.model_io import VERIFY_SHAPES, verification_inputs
from recipes.wiring.profile import ExportParams

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
            output_names=["logits"],
            dynamic_shapes={name: {0: batch, 1: sequence} for name in input_names},
            opset_version=params.opset,
            dynamo=True,
            external_data=False,
            optimize=True,
            verbose=False,
        )
        checks = verify(tmp, reference, input_names, vocab, params.atol, max_sequence)
    report = {"opset": params.opset, "atol": params.atol, "attention": params.attention, "checks": checks,
              "max_abs_diff": max(c["max_abs_diff"] for c in checks)}
    write_json(report_path, report)
    return report


def verify(onnx_path: Path, reference, input_names: tuple[str, ...], vocab: int, atol: float, max_sequence: int) -> list[dict[str, Any]]:
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    checks = []
    for i, (b, s) in enumerate(VERIFY_SHAPES):
        s = min(s, max_sequence)
        feeds = verification_inputs(vocab, input_names, b, s, seed=100 + i)
        with torch.inference_mode():
            ref = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
        out = session.run(["logits"], feeds)[0]
        diff = float(np.abs(out - ref).max())
        checks.append({"batch": b, "sequence": s, "max_abs_diff": diff})
        if not diff <= atol:
            raise StageError(
                f"{onnx_path.name}: ONNX Runtime logits differ from PyTorch by {diff:.3g} at batch {b}, "
                f"sequence {s} (tolerance stages.export.atol = {atol}); the export is wrong, do not ship it"
            )
    return checks


def export_stage(model_dir: str, dst: str, report: str, params: dict, input_names: list[str], max_batch: int, max_sequence: int) -> None:
    from recipes.wiring.schema import from_plain

    export_onnx(Path(model_dir), Path(dst), Path(report), from_plain(ExportParams, params), tuple(input_names), max_batch, max_sequence)
