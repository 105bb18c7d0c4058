"""Model surgery: students made of chosen teacher layers, heads and FFN
neurons physically removed, and loading such checkpoints again.

transformers 5 no longer records pruned heads in the config nor re-applies
them on load, so a head-pruned checkpoint stores the head count of every
layer under HEADS_KEY in config.json; `build_model` re-creates those smaller
layers before the weights are loaded (strictly: every tensor must match).
FFN pruning changes `intermediate_size` uniformly and so stays loadable by
plain transformers; head pruning does not (ONNX is its portable form).
"""
from __future__ import annotations

import copy
from typing import Any

from recipes.models.archs import Arch
from recipes.errors import ModelError

HEADS_KEY = "edgesmith_attention_heads"


def get_module(root: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        root = getattr(root, part)
    return root


def set_module(root: Any, dotted: str, value: Any) -> None:
    parent, _, name = dotted.rpartition(".")
    setattr(get_module(root, parent) if parent else root, name, value)


def layers_of(model: Any, arch: Arch) -> Any:
    return get_module(model, arch.layers)


def head_size(config: Any) -> int:
    return config.hidden_size // config.num_attention_heads


def _check_head_pruning(arch: Arch) -> None:
    if not arch.attention_self:
        raise ModelError(f"head pruning is not supported for model_type {arch.model_type!r}; "
                         f"use prune.method = 'ffn' or 'magnitude'")


def keep_heads(model: Any, arch: Arch, keep: dict[int, list[int]]) -> None:
    """Shrink each listed layer's attention to the heads in `keep[layer]` (in place)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    _check_head_pruning(arch)
    d = head_size(model.config)
    counts = list(getattr(model.config, HEADS_KEY, None) or [model.config.num_attention_heads] * len(layers_of(model, arch)))
    for i, layer in enumerate(layers_of(model, arch)):
        if i not in keep:
            continue
        heads = sorted(keep[i])
        if not heads:
            raise ModelError(f"layer {i}: cannot remove every attention head")
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in heads])
        attn = get_module(layer, arch.attention_self)
        for name in arch.qkv:
            setattr(attn, name, prune_linear_layer(getattr(attn, name), index, dim=0))
        set_module(layer, arch.attention_out, prune_linear_layer(get_module(layer, arch.attention_out), index, dim=1))
        _set_head_count(attn, len(heads), d)
        counts[i] = len(heads)
    setattr(model.config, HEADS_KEY, counts)


def _set_head_count(attn: Any, heads: int, d: int) -> None:
    attn.num_attention_heads = heads
    attn.all_head_size = heads * d


def shrink_heads_for_loading(model: Any, arch: Arch, counts: list[int]) -> None:
    """Give a freshly built model the (smaller) layer shapes a checkpoint was saved with."""
    _check_head_pruning(arch)
    full = model.config.num_attention_heads
    keep = {i: list(range(n)) for i, n in enumerate(counts) if n != full}
    keep_heads(model, arch, keep)


def keep_ffn(model: Any, arch: Arch, keep: dict[int, list[int]]) -> None:
    """Keep only the listed intermediate neurons of each layer (same count everywhere)."""
    import torch
    from transformers.pytorch_utils import prune_linear_layer

    sizes = {len(v) for v in keep.values()}
    if len(sizes) != 1:
        raise ModelError("FFN pruning must keep the same number of neurons in every layer, "
                         "or the checkpoint no longer loads with plain transformers")
    for i, layer in enumerate(layers_of(model, arch)):
        index = torch.tensor(sorted(keep[i]), dtype=torch.long)
        set_module(layer, arch.ffn_in, prune_linear_layer(get_module(layer, arch.ffn_in), index, dim=0))
        set_module(layer, arch.ffn_out, prune_linear_layer(get_module(layer, arch.ffn_out), index, dim=1))
    key = "hidden_dim" if arch.model_type == "distilbert" else "intermediate_size"
    setattr(model.config, key, sizes.pop())


def build_model(config: Any, attention: str = "sdpa") -> Any:
    """An untrained *ForSequenceClassification with the checkpoint's exact shapes."""
    from transformers import AutoModelForSequenceClassification

    from recipes.models.archs import arch_for

    model = AutoModelForSequenceClassification.from_config(config, attn_implementation=attention)
    counts = getattr(config, HEADS_KEY, None)
    if counts:
        shrink_heads_for_loading(model, arch_for(config.model_type), list(counts))
    return model


def student_from_layers(model: Any, arch: Arch, layer_ids: list[int], attention: str = "sdpa") -> Any:
    """A shallower copy of `model` whose layer k is a copy of `model`'s layer layer_ids[k]."""
    total = len(layers_of(model, arch))
    bad = [i for i in layer_ids if i >= total]
    if bad:
        raise ModelError(f"distill.layer_ids: layer {bad[0]} does not exist; the base model has layers 0..{total - 1}")
    config = copy.deepcopy(model.config)
    setattr(config, arch.layer_count_key, len(layer_ids))
    counts = getattr(config, HEADS_KEY, None)
    if counts:
        setattr(config, HEADS_KEY, [counts[i] for i in layer_ids])
    student = build_model(config, attention)
    prefix = arch.layers + "."
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith(prefix):
            index, rest = key[len(prefix):].split(".", 1)
            if int(index) in layer_ids:
                state[f"{prefix}{layer_ids.index(int(index))}.{rest}"] = value.clone()
        else:
            state[key] = value.clone()
    student.load_state_dict(state, strict=True)
    return student


def default_layer_ids(total: int, layers: int) -> list[int]:
    """Every other layer (DistilBERT's recipe) for half depth; else evenly spread."""
    if layers <= 0:
        layers = max(1, total // 2)
    if layers > total:
        raise ModelError(f"distill.layers = {layers}: the base model has only {total} layers")
    if layers * 2 == total:
        return list(range(0, total, 2))
    step = total / layers
    return sorted({int(k * step) for k in range(layers)})
