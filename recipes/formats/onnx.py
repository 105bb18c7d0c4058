"""The `onnx` artifact format, for ONNX Runtime (and the ONNX that TensorRT builds from).

fp32 export (verified against PyTorch), then, as the artifact asks: fusion
into ONNX Runtime's transformer kernels, and a quantizer or converter
(dynamic or static int8, int4 weight-only, fp16), then the artifact options
it names (recipes/formats/ort_optimize.py). Each step is its own cached
stage, so artifacts that share a prefix of the chain share its nodes.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.formats import fuse_onnx, onnx_export, quantize_onnx
from recipes.formats.qat_int8 import QDQ_ONNX, QatInt8
from recipes.wiring.stage import Format

if TYPE_CHECKING:
    from recipes.wiring.graph import Built, Graph, Model


def precision_onnx(g: "Graph", spec: Any, model: "Model", fuse: bool = False) -> Path:
    """The ONNX file `spec` asks for: exported, optionally fused, optionally quantized; or, for
    quantize.method = "qat", the QDQ graph the QAT stage exported with its trained scales."""
    if isinstance(spec.quantize, QatInt8):
        return model.dir / QDQ_ONNX  # the profile check guarantees a QAT model here
    path = onnx_export.declare(g, model, g.profile.stages.export)
    if fuse:
        path = fuse_onnx.declare(g, path, g.profile.stages.export.atol)
    if spec.quantize is not None:
        path = quantize_onnx.declare(g, path, spec.quantize, spec.precision, g.data_dir, model.tokenizer,
                                     g.profile.shapes.sequence.max)
    return path


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    path = precision_onnx(g, spec, model, spec.fuse)
    # Optional passes the artifact asks for (e.g. ort_optimize), in registry order.
    for option, params in g.options_for(spec):
        path = option.declare(g, spec, model, path, params)
    return g.built(spec, model, path=path, files=[path], runner="onnx", bundle=[(path, f"models/{spec.name}.onnx")],
                   entry=f"models/{spec.name}.onnx", onnx=path)


FORMAT = Format("onnx", "onnxruntime", {"fp32": (), "fp16": ("fp16",), "int8": ("dynamic", "static", "qat"), "int4": ("weight_only",)},
                declare_artifact)
