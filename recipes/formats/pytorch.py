"""The `torch` artifact format: PyTorch serving on the host or a GPU server.

fp32 is the model's checkpoint itself (config + safetensors); int8 is a
dynamic-int8 TorchScript file (formats/quantize_torch.py); nf4 a bitsandbytes
checkpoint (formats/quantize_nf4.py). Each precision is a table entry.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recipes.formats import quantize_nf4, quantize_torch
from recipes.wiring.stage import Format

if TYPE_CHECKING:
    from recipes.wiring.graph import Built, Graph, Model


def checkpoint(g: "Graph", spec: Any, model: "Model") -> "Built":
    """The checkpoint itself (config + safetensors) is the artifact."""
    bundle = [(f, f"models/{spec.name}/{f.name}") for f in model.weights]
    return g.built(spec, model, path=model.dir, files=model.weights, runner="torch", bundle=bundle,
                   entry=f"models/{spec.name}/model.safetensors")


def nf4(g: "Graph", spec: Any, model: "Model") -> "Built":
    directory, files = quantize_nf4.declare(g, model, spec.quantize, g.data_dir, g.profile.shapes.sequence.max)
    return g.built(spec, model, path=directory, files=files, runner="nf4",
                   bundle=[(f, f"models/{spec.name}/{f.name}") for f in files], entry=f"models/{spec.name}/model.safetensors",
                   note="bitsandbytes nf4 measured on this host's CPU; it is meant for CUDA serving")


BY_PRECISION = {"fp32": checkpoint, "int8": quantize_torch.declare_artifact, "nf4": nf4}


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    return BY_PRECISION[spec.precision](g, spec, model)


FORMAT = Format("torch", "pytorch", {"fp32": (), "int8": ("dynamic",), "nf4": ("nf4",)}, declare_artifact)
