"""A random-weight stand-in for a search candidate: the shape it will have, none of its training.

Latency, size and peak memory depend on a model's shape and format, not on its trained weights.
So before a [search] distils or recovers anything, each candidate's shape (layers, FFN width,
attention heads) is built here with random weights from the teacher's config, and put through the
same format stages (export, quantization, conversion) and the same latency and memory stages as the
real candidate will be. recipes/measure/screen.py then skips the candidates that cannot meet the
budget, and they are never trained.

The shape is exact for layers and FFN width (FFN pruning keeps round(width * keep) neurons in every
layer, as here). For head pruning it is exact in total: the trained model removes the same number of
heads, chosen by importance across layers, where the stand-in spreads them evenly; the attention cost
is the same sum of per-layer head counts. The record says so.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from recipes.errors import ModelError
from recipes.wiring.stage import Stage

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph, Model

RECORD = "shape.json"
# The stand-ins' weights are random but fixed: the same shape gives the same bytes, and so one cached node.
SEED = 0


@dataclass(frozen=True)
class ShapeArgs:
    base_dir: Path
    dst: Path
    layers: Optional[int]
    ffn_keep_ratio: Optional[float]
    head_fraction: Optional[float]
    seed: int = 0


def heads_per_layer(layers: int, heads: int, fraction: float) -> list[int]:
    """round(fraction * all heads) removed, spread evenly over the layers, at least one kept in each
    (prune.py's head pruning removes the same total and keeps one per layer too)."""
    remove = min(int(round(fraction * layers * heads)), layers * (heads - 1))
    counts = [heads - remove // layers] * layers
    for i in range(remove % layers):
        counts[i] -= 1
    return counts


def build(args: ShapeArgs) -> dict[str, Any]:
    import copy

    import torch
    from transformers import AutoConfig

    from recipes.models.archs import arch_for
    from recipes.models.model_dir import write_model_dir
    from recipes.models.slim import HEADS_KEY, build_model

    torch.manual_seed(args.seed)
    config = copy.deepcopy(AutoConfig.from_pretrained(args.base_dir, local_files_only=True))
    arch = arch_for(config.model_type)
    base_layers = getattr(config, arch.layer_count_key)
    layers = args.layers if args.layers is not None else base_layers
    if layers > base_layers:
        raise ModelError(f"shape: {layers} layers requested from a base with {base_layers}")
    setattr(config, arch.layer_count_key, layers)
    ffn_key = "hidden_dim" if config.model_type == "distilbert" else "intermediate_size"
    if args.ffn_keep_ratio is not None:
        width = getattr(config, ffn_key)
        setattr(config, ffn_key, max(1, int(round(width * args.ffn_keep_ratio))))
    if args.head_fraction is not None:
        setattr(config, HEADS_KEY, heads_per_layer(layers, config.num_attention_heads, args.head_fraction))
    model = build_model(config, attention="sdpa")
    record = {"stand_in": "random weights with the candidate's shape, for screening latency, size and peak memory",
              "layers": layers, "ffn_width": getattr(config, ffn_key),
              "heads_per_layer": list(getattr(config, HEADS_KEY, None) or [config.num_attention_heads] * layers),
              "parameters": sum(p.numel() for p in model.parameters()),
              **({"heads_note": "the trained model removes the same number of heads, chosen by importance "
                                "across layers; here they are spread evenly"} if args.head_fraction is not None else {})}
    write_model_dir(model, args.base_dir, args.dst, RECORD, record)
    return record


STAGE = Stage("shape", ShapeArgs, build, modules=("models.random_init", "models.model_dir", "models.slim", "models.archs",
                                                  "inputs.checkpoint"),
              packages=("torch", "transformers", "safetensors"))


def declare(g: "Graph", teacher: "Model", shape: Any) -> "Model":
    """The random-weight model of `shape` (search.CandidateShape), made from the fine-tuned teacher's config."""
    identity = {"base_dir": teacher.dir, "layers": shape.layers, "ffn_keep_ratio": shape.ffn_keep_ratio,
                "head_fraction": shape.head_fraction, "seed": SEED}
    out = g.stage_dir("shape", identity)
    args = ShapeArgs(base_dir=teacher.dir, dst=out, layers=shape.layers, ffn_keep_ratio=shape.ffn_keep_ratio,
                     head_fraction=shape.head_fraction, seed=SEED)
    g.stage(STAGE, g.checkpoint_targets(out, RECORD), teacher.weights + [teacher.tokenizer], args)
    return g.model_at(out, "random weights of the candidate's shape (screening only)", out / RECORD)
