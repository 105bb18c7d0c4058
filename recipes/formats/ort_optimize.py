"""ONNX Runtime's graph optimizations applied once, at build time, and saved.

ONNX Runtime optimizes every model when a session is created (constant
folding, redundant-node removal, and at the "extended" level its contrib-op
fusions). Doing it offline (SessionOptions.optimized_model_filepath) ships
the optimized graph, so the device skips that work at every start. The saved
model is ONNX Runtime-specific: "extended" writes com.microsoft contrib ops
that only ONNX Runtime's CPU execution provider runs, which is why this is an
option of ONNX artifacts for ONNX Runtime, and why the "all" level (layout
transforms tied to the build host's CPU) is not offered.

The saved graph is checked against the graph it came from on the shared
verification shapes; a difference above stages.export.atol fails the stage.

    [[artifacts]]
    name = "int8_dynamic"
    format = "onnx"
    precision = "int8"
    quantize = { method = "dynamic" }
    ort_optimize = { level = "extended" }
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import StageError
from recipes.formats.model_io import VERIFY_SHAPES, verification_inputs
from recipes.fsutil import atomic_path, write_json
from recipes.wiring.stage import ArtifactOption, Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model

LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED"}


@dataclass(frozen=True)
class OrtOptimize:
    level: Literal["basic", "extended"] = "extended"


@dataclass(frozen=True)
class OrtOptimizeArgs:
    src: Path
    dst: Path
    report: Path
    params: OrtOptimize
    input_names: tuple[str, ...]
    vocab_size: int
    max_sequence: int
    atol: float            # stages.export.atol


def _op_counts(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))


def build(args: OrtOptimizeArgs) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[args.params.level])
    options.intra_op_num_threads = 1
    with atomic_path(args.dst) as tmp:
        options.optimized_model_filepath = str(tmp)
        ort.InferenceSession(str(args.src), options, providers=["CPUExecutionProvider"])
        if not tmp.is_file():
            raise StageError(f"{args.dst.name}: ONNX Runtime {ort.__version__} did not save the optimized model; "
                             "remove ort_optimize from this artifact")
        # Load the saved graph as the device will, with no further optimization, and compare.
        plain = ort.SessionOptions()
        plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        optimized = ort.InferenceSession(str(tmp), plain, providers=["CPUExecutionProvider"])
        source = ort.InferenceSession(str(args.src), plain, providers=["CPUExecutionProvider"])
        checks = []
        for i, (b, s) in enumerate(VERIFY_SHAPES):
            s = min(s, args.max_sequence)
            feeds = verification_inputs(args.vocab_size, args.input_names, b, s, seed=300 + i)
            diff = float(np.abs(optimized.run(None, feeds)[0] - source.run(None, feeds)[0]).max())
            checks.append({"batch": b, "sequence": s, "max_abs_diff": diff})
            if not diff <= args.atol:
                raise StageError(f"{args.dst.name}: ONNX Runtime's {args.params.level} optimizations changed the logits by "
                                 f"{diff:.3g} at batch {b}, sequence {s} (tolerance stages.export.atol = {args.atol}); "
                                 "use level = 'basic' or remove ort_optimize from this artifact")
        after = _op_counts(tmp)
    report = {"level": args.params.level, "onnxruntime": ort.__version__, "provider": "CPUExecutionProvider",
              "ops_before": _op_counts(args.src), "ops_after": after, "checks": checks,
              "note": "optimized offline for ONNX Runtime's CPU execution provider"}
    write_json(args.report, report)
    return report


STAGE = Stage("ort_optimize", OrtOptimizeArgs, build, modules=("formats.ort_optimize", "formats.model_io"),
              packages=("onnx", "onnxruntime"))


def declare(g: "Graph", spec: Any, model: "Model", src: Path, params: OrtOptimize) -> Path:
    atol = g.profile.stages.export.atol
    identity = {"src": src, "params": params, "input_names": g.input_names, "vocab_size": g.vocab_size,
                "max_sequence": g.max_positions, "atol": atol}
    out = g.stage_dir(f"onnx-ort-{params.level}", identity)
    args = OrtOptimizeArgs(src=src, dst=out / "model.onnx", report=out / "ort_optimize.json", params=params,
                           input_names=g.input_names, vocab_size=g.vocab_size, max_sequence=g.max_positions, atol=atol)
    g.stage(STAGE, [args.dst, args.report], [src], args)
    return args.dst


ARTIFACT_OPTIONS = (ArtifactOption("ort_optimize", OrtOptimize, formats=("onnx",), declare=declare, order=10,
                                   doc="ONNX Runtime's graph optimizations applied offline and saved"),)
