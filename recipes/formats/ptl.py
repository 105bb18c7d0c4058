"""Android formats: TorchScript-lite `.ptl` and ExecuTorch `.pte`.

.ptl is the legacy PyTorch Mobile path: a traced module (fp32 or dynamic
int8, see quantize_torch.py) saved for the lite interpreter, optimized with
`optimize_for_mobile` where this torch has XNNPACK. CPU-only PyPI wheels of
torch 2.13 have none, so `mobile.optimize_for_mobile` decides: "required"
stops the build, "auto" ships an unoptimized file and says so in the report.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from recipes.errors import StageError
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.formats.quantize_torch import (
    dynamic_int8,
    load_logits_module,
    quiet,
    reference_model,
    torchscript_file,
    trace,
    verify,
    versions,
)
from recipes.fsutil import write_json
from recipes.wiring.stage import Format, Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Built, Graph, Model


@dataclass(frozen=True)
class MobileParams:
    optimize_for_mobile: Literal["required", "auto"] = "auto"


@dataclass(frozen=True)
class PtlArgs:
    model_dir: Path
    dst: Path
    report: Path
    params: Optional[DynamicInt8]      # None: fp32
    mobile: MobileParams
    input_names: tuple[str, ...]
    max_sequence: int
    atol: float                        # stages.export.atol, for the fp32 file


def xnnpack_available() -> bool:
    import torch.backends.xnnpack

    return bool(torch.backends.xnnpack.enabled)


def export_ptl(model_dir: Path, dst: Path, report_path: Path, spec: DynamicInt8 | None, mobile: MobileParams,
               input_names: tuple[str, ...], max_sequence: int, atol: float = 1e-4) -> dict[str, Any]:
    import torch

    from recipes.measure.mobile_runners import PtlRunner

    if xnnpack_available():
        optimized, reason = True, ""
    elif mobile.optimize_for_mobile == "required":
        raise StageError(f"optimize_for_mobile needs a torch build with XNNPACK; this torch {torch.__version__} has none; "
                         "set mobile.optimize_for_mobile = 'auto' to ship an unoptimized .ptl")
    else:
        optimized, reason = False, f"torch {torch.__version__} was built without XNNPACK (torch.backends.xnnpack.enabled is False)"

    module, vocab = load_logits_module(model_dir, input_names)
    info: dict[str, Any] = {"method": None}
    if spec is not None:
        module, info = dynamic_int8(module, spec)
    scripted = trace(module, vocab, input_names)
    if optimized:
        from torch.utils.mobile_optimizer import optimize_for_mobile

        with quiet():
            scripted = optimize_for_mobile(scripted)
    with torchscript_file(scripted, dst, lite=True) as tmp:
        runner = PtlRunner(tmp, input_names)  # QNNPACK kernels, as on the phone
        checks = verify(runner, reference_model(model_dir), vocab, input_names, max_sequence,
                        atol if spec is None else None, dst.name)
    report = {"format": "ptl", "precision": "fp32" if spec is None else "int8", "quantize": info, "attention": "eager",
              "optimized": optimized, "reason": reason, "optimize_for_mobile": mobile.optimize_for_mobile,
              "verified_with_engine": runner.engine,
              "shapes": {"batch": "dynamic", "sequence": "dynamic"},
              "toolchain": versions("torch", "transformers"), **checks}
    write_json(report_path, report)
    return report


def build(args: PtlArgs) -> dict[str, Any]:
    return export_ptl(args.model_dir, args.dst, args.report, args.params, args.mobile, args.input_names,
                      args.max_sequence, args.atol)


STAGE = Stage("ptl", PtlArgs, build,
              modules=("formats.ptl", "formats.dynamic_int8", "formats.quantize_torch", "measure.mobile_runners", "models.hf", "models.embedding",
                       "models.slim", "models.archs", "formats.model_io"),
              packages=("torch", "transformers"))

NOTE = ("run by PyTorch's lite interpreter with QNNPACK, the kernels a phone uses; QNNPACK is tuned for ARM, "
        "so this x86 latency does not predict a phone's")


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    """A .ptl file of `model`: fp32, or dynamic int8 when `spec.quantize` is given."""
    p = g.profile
    identity = {"model_dir": model.dir, "params": spec.quantize, "input_names": g.input_names,
                "max_sequence": p.shapes.sequence.max, "mobile": p.mobile, "atol": p.stages.export.atol}
    out = g.stage_dir(f"ptl-{spec.precision}", identity)
    args = PtlArgs(model_dir=model.dir, dst=out / "model.ptl", report=out / "ptl.json", params=spec.quantize,
                   mobile=p.mobile, input_names=g.input_names, max_sequence=p.shapes.sequence.max, atol=p.stages.export.atol)
    g.stage(STAGE, [args.dst, args.report], model.weights + [model.tokenizer], args)
    return g.file_artifact(spec, model, args.dst, args.report, "ptl", "ptl", NOTE)


FORMAT = Format("ptl", "pytorch_lite", {"fp32": (), "int8": ("dynamic",)}, declare_artifact)
