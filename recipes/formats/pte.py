""".pte is ExecuTorch: torch.export with dynamic batch and sequence, lowered
with the XNNPACK partitioner, fp32 or 8-bit dynamic activations with 4-bit
grouped weights (torchao Int8DynamicActivationIntxWeightConfig, the 0.18 name
of "8da4w"). XNNPACK's grouped 4-bit linear needs a group size that is a
multiple of 32 and divides the layer's input width; layers it does not
divide stay fp32 and are listed in the report. The report also counts what
XNNPACK took and what is left to ExecuTorch's portable kernels; a matmul or a
quantize op left outside the delegate fails the stage.

ExecuTorch plans activation memory for the upper bounds of the dynamic
dimensions, so `max_batch` and `max_sequence` should be the profile's shapes,
not the export-wide limits; the planned size is in the report.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from recipes.errors import ConfigError, StageError
from recipes.formats.quantize_torch import (
    TRACE_SHAPE,
    example_args,
    load_logits_module,
    quiet,
    reference_model,
    verify,
    versions,
)
from recipes.fsutil import atomic_path, write_json
from recipes.formats.qat_int8 import PROGRAM, QatInt8
from recipes.params import bounded
from recipes.wiring.stage import Format, Stage, tagged

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Built, Graph, Model


@dataclass(frozen=True)
class Int8DynActInt4Weight:
    method: Literal["8da4w"]
    # XNNPACK's 4-bit grouped linear: a multiple of 32 (checked at profile load).
    group_size: int = bounded(32, min=32, max=8192)


# Ops that must run inside XNNPACK: matmuls and the dynamic-quantization ops
# (the portable runtime would run them slowly, or not at all).
MATMULS = {"linear", "mm", "addmm", "bmm", "matmul", "baddbmm"}
QUANT_WORDS = ("choose_qparams", "quantize")
# Bookkeeping nodes that are not compute.
NOT_COMPUTE = ("getitem", "sym_size", "executorch_call_delegate")


@dataclass(frozen=True)
class PteArgs:
    model_dir: Path
    dst: Path
    report: Path
    # None: fp32; QatInt8: the QAT model's own int8 program (`program`), lowered as it is.
    params: Optional[Int8DynActInt4Weight | QatInt8] = field(metadata=tagged(Int8DynActInt4Weight, QatInt8))
    input_names: tuple[str, ...]
    max_batch: int
    max_sequence: int
    atol: float                              # stages.export.atol, for the fp32 file
    program: Optional[Path] = None           # qat.pt2 of a QAT model


def _op_name(target) -> str:
    # Edge ops name themselves in __name__ ("aten.linear.default"), ATen ops
    # in str() ("aten.sym_size.int"), Python operators in __name__ ("mul").
    name = getattr(target, "__name__", "") or str(target)
    if name.count(".") < 2 and not str(target).startswith("<"):
        name = str(target)
    # "aten.linear.default" -> "aten.linear"; "torchao.quantize_affine.default" -> "torchao.quantize_affine"
    parts = name.split(".")
    return ".".join(parts[:-1]) if len(parts) > 2 else name


def delegation(graph_module) -> dict[str, Any]:
    """Compute ops inside XNNPACK delegates vs. left to the portable runtime."""
    inside: Counter[str] = Counter()
    outside: Counter[str] = Counter()
    subgraphs = 0
    for node in graph_module.graph.nodes:
        if node.op == "get_attr" and node.name.startswith("lowered_module_"):
            subgraphs += 1
            lowered = getattr(graph_module, node.target)
            for n in lowered.original_module.graph.nodes:
                if n.op == "call_function" and not any(word in _op_name(n.target) for word in NOT_COMPUTE):
                    inside[_op_name(n.target)] += 1
        elif node.op == "call_function":
            name = _op_name(node.target)
            if not any(word in name for word in NOT_COMPUTE):
                outside[name] += 1
    return {"delegated_subgraphs": subgraphs, "delegated_nodes": sum(inside.values()),
            "non_delegated_nodes": sum(outside.values()),
            "delegated_ops": dict(sorted(inside.items())), "non_delegated_ops": dict(sorted(outside.items()))}


def _must_delegate(op: str) -> bool:
    base = op.rsplit(".", 1)[-1]
    return base in MATMULS or any(w in base for w in QUANT_WORDS)


def check_group_size(group_size: int) -> None:
    if group_size <= 0 or group_size % 32:
        raise ConfigError(f"quantize.group_size = {group_size}: XNNPACK's 4-bit grouped linear needs a positive multiple "
                          "of 32 (32, 64, 128, ...)")


def quantize_8da4w(module, spec: Int8DynActInt4Weight) -> dict[str, Any]:
    """In place: 8-bit dynamic activations, 4-bit weights in groups along the input axis."""
    import torch
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    check_group_size(spec.group_size)
    linears = {name: m for name, m in module.named_modules() if isinstance(m, torch.nn.Linear)}
    skipped = sorted(name for name, m in linears.items() if m.in_features % spec.group_size)
    if len(skipped) == len(linears):
        widths = sorted({m.in_features for m in linears.values()})
        raise ConfigError(f"quantize.group_size = {spec.group_size} divides none of the model's linear input widths "
                          f"{widths}; use a multiple of 32 that divides them")

    def wanted(m, fqn: str) -> bool:
        return isinstance(m, torch.nn.Linear) and m.in_features % spec.group_size == 0

    with quiet():
        quantize_(module, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                                weight_granularity=PerGroup(spec.group_size)),
                  filter_fn=wanted)
    return {"method": "8da4w", "api": "torchao.quantization.Int8DynamicActivationIntxWeightConfig",
            "weights": "int4 symmetric, per group", "activations": "int8 asymmetric, dynamic per token",
            "group_size": spec.group_size, "quantized_linears": len(linears) - len(skipped),
            "skipped_linears": skipped, "embeddings": "fp32"}


def qat_program(program: Path, model_dir: Path, input_names: tuple[str, ...]):
    """The QAT stage's converted int8 program as a module (re-exported below with this profile's shapes),
    and a reference that runs it for verification."""
    import json
    from types import SimpleNamespace

    import torch

    with quiet():
        module = torch.export.load(str(program)).module()
    vocab = int(json.loads((model_dir / "config.json").read_text(encoding="utf-8"))["vocab_size"])

    def reference(**feeds):
        with torch.no_grad():
            return SimpleNamespace(logits=module(*[feeds[n] for n in input_names]))
    return module, vocab, reference


def export_pte(model_dir: Path, dst: Path, report_path: Path, spec: Int8DynActInt4Weight | QatInt8 | None,
               input_names: tuple[str, ...], max_batch: int, max_sequence: int, atol: float = 1e-4,
               program: Path | None = None) -> dict[str, Any]:
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackPartitioner,
    )
    from executorch.exir import to_edge_transform_and_lower

    from recipes.measure.mobile_runners import PteRunner

    info: dict[str, Any] = {"method": None}
    if isinstance(spec, QatInt8):
        module, vocab, reference = qat_program(program, model_dir, input_names)
        info = {"method": "qat", "program": PROGRAM, "weights": "int8 symmetric per channel (trained)",
                "activations": "int8 static, scales from training"}
        tolerance = None  # recorded, and judged on the eval set by format parity (formats/qat_int8.py)
    else:
        module, vocab = load_logits_module(model_dir, input_names)
        reference = reference_model(model_dir)
        tolerance = atol if spec is None else None
        if spec is not None:
            info = quantize_8da4w(module, spec)
    example = example_args(vocab, input_names, *TRACE_SHAPE, seed=0)
    # torch.export specialises sizes 0/1, hence the (2, 16) example and explicit
    # lower bounds; the upper bounds size the planned memory. A profile whose
    # batch.max is 1 gets a fixed batch of 1 (less memory, a simpler program),
    # traced on the padded second row so the mask path is the general one.
    seq_max = max(max_sequence, TRACE_SHAPE[1] + 1)
    sequence = torch.export.Dim("sequence", min=2, max=seq_max)
    if max_batch <= 1:
        batch_max = 1
        example = tuple(t[1:] for t in example)
        dims = {n: {1: sequence} for n in input_names}
    else:
        batch_max = max_batch
        batch = torch.export.Dim("batch", min=1, max=batch_max)
        dims = {n: {0: batch, 1: sequence} for n in input_names}
    with quiet(), torch.no_grad():
        try:
            program = torch.export.export(module, example, dynamic_shapes=dims, strict=False)
        except Exception as e:  # torch.export raises many types; keep the cause
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StageError(f"{dst.name}: torch.export failed ({first}); this model cannot be shipped as .pte") from e
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
        counts = delegation(lowered.exported_program().graph_module)
        stray = {op: n for op, n in counts["non_delegated_ops"].items() if _must_delegate(op)}
        if stray:
            raise StageError(f"{dst.name}: XNNPACK did not take {stray}; they would run on ExecuTorch's portable "
                             "kernels (slow or missing); do not ship it")
        et_program = lowered.to_executorch()
    plan = et_program.executorch_program.execution_plan[0]
    with atomic_path(dst) as tmp:
        tmp.write_bytes(et_program.buffer)
        # Full padded batches: the runner splits them to the program's batch bound.
        checks = verify(PteRunner(tmp, input_names), reference, vocab, input_names, seq_max, tolerance, dst.name)
    precision = {type(None): "fp32", Int8DynActInt4Weight: "int4", QatInt8: "int8"}[type(spec)]
    report = {"format": "pte", "precision": precision, "quantize": info, "attention": "eager",
              "backend": "XnnpackBackend", "delegation": counts,
              "batch": {"min": 1, "max": batch_max}, "sequence": {"min": 2, "max": seq_max},
              "planned_memory_bytes": int(sum(plan.non_const_buffer_sizes)),
              "toolchain": versions("torch", "transformers", "executorch", "torchao"), **checks}
    write_json(report_path, report)
    return report


def build(args: PteArgs) -> dict[str, Any]:
    return export_pte(args.model_dir, args.dst, args.report, args.params, args.input_names, args.max_batch,
                      args.max_sequence, args.atol, args.program)


STAGE = Stage("pte", PteArgs, build,
              modules=("formats.pte", "formats.qat_int8", "formats.qat_files", "formats.quantize_torch", "formats.dynamic_int8", "measure.mobile_runners", "models.hf", "models.embedding",
                       "models.slim", "models.archs", "formats.model_io", "params"),
              packages=("torch", "transformers", "executorch", "torchao"))


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    """An ExecuTorch program of `model` lowered to XNNPACK: fp32, or 8da4w when `spec.quantize` is given."""
    p = g.profile
    identity = {"model_dir": model.dir, "params": spec.quantize, "input_names": g.input_names,
                "max_sequence": p.shapes.sequence.max, "max_batch": p.shapes.batch.max, "atol": p.stages.export.atol}
    out = g.stage_dir(f"pte-{spec.precision}", identity)
    program = model.dir / PROGRAM if isinstance(spec.quantize, QatInt8) else None
    args = PteArgs(model_dir=model.dir, dst=out / "model.pte", report=out / "pte.json", params=spec.quantize,
                   input_names=g.input_names, max_batch=p.shapes.batch.max, max_sequence=p.shapes.sequence.max,
                   atol=p.stages.export.atol, program=program)
    g.stage(STAGE, [args.dst, args.report], model.weights + [model.tokenizer] + ([program] if program else []), args)
    return g.file_artifact(spec, model, args.dst, args.report, "pte", "pte", "run with the ExecuTorch runtime (XNNPACK) on this host")


FORMAT = Format("pte", "executorch", {"fp32": (), "int8": ("qat",), "int4": ("8da4w",)}, declare_artifact)
