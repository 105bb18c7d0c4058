"""Movement pruning (Sanh, Wolf & Rush 2020), trained against the teacher.

Every prunable unit has a learnable importance score S, starting at 0 (the
paper's `mask_init = constant, mask_scale = 0` for hard movement). Before
each training step the scores pick a hard mask M = TopK(S) at the step's
scheduled keep ratio; the forward pass uses W * M. The mask is passed
straight through in the backward pass, so dL/dS = dL/d(W * M) * W: a score
grows while its weights move away from zero, whatever their size now (the
"movement"), unlike magnitude pruning, which keeps what is large at the start.
The weights train at the same time (masked ones get no gradient). Masks are
re-chosen every step, so a unit pruned early can come back.

The keep ratio follows the paper's cubic schedule: full density for the first
`schedule_start` of the steps, then keep = final + (1 - final) * (1 - p)^3 up
to `schedule_end`, then the final ratio. The loss is knowledge distillation
from the teacher-logits stage (looked up by example id, as distill.py does)
plus the paper's cross-entropy term: alpha * T^2 * KL + (1 - alpha) * CE.

Two structures:

- unstructured: one score per weight of every encoder nn.Linear, TopK per
  matrix (as the paper's code). The masked weights become exact zeros. The
  checkpoint keeps its dense shapes: it compresses much better, but dense
  kernels (ONNX Runtime, OpenVINO, TensorRT, PyTorch) do not skip zeros, so
  it is not faster, and the record says so.
- structured (Lagunas et al. 2021, "Block Pruning For Faster Transformers"):
  one score per FFN neuron (a row of the FFN input projection and the matching
  column of its output projection) and one per attention head (its rows of Q,
  K and V and its columns of the attention output projection); the block's
  score gradient is the sum over its weights. FFN neurons are chosen per layer
  with the same count everywhere (the checkpoint stays loadable by plain
  transformers), heads globally with at least one per layer. At the end the
  pruned units are physically removed with recipes.models.slim: smaller
  matrices, faster on every runtime.

The masks are PyTorch parametrizations of the existing weights
(torch.nn.utils.parametrize), so no model class is rewritten; they are removed
before the model is saved. Training is the shared loop (recipes.models.training).
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional

from recipes.errors import ModelError, ProfileError, StageError
from recipes.models.distill import distillation_loss
from recipes.models.slim import get_module, head_size, keep_ffn, keep_heads, layers_of
from recipes.models.training import TrainParams, train
from recipes.params import MAX_EPOCHS, MAX_SEQUENCE, MAX_THREADS, SEED_MAX, bounded

if TYPE_CHECKING:
    from recipes.inputs.data import Example
    from recipes.models.teacher_logits import TeacherLogits
    from recipes.textenc import Encoder


@dataclass(frozen=True)
class MovementPrune:
    method: Literal["movement"]
    # No default: "unstructured" only compresses (dense kernels do not skip
    # zeros), "structured" removes whole FFN neurons and heads and is faster;
    # the profile says which it wants.
    structure: Literal["unstructured", "structured"]
    # unstructured: share of the weights of every encoder nn.Linear set to zero,
    # each matrix alike (the paper's TopK is per matrix). 0.9: the paper's
    # regime; movement beats magnitude pruning at high sparsity, not at low.
    sparsity: float = bounded(0.9, min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # structured: share of FFN neurons kept, the same count in every layer
    # (1 = leave the FFN alone). 0.5 as prune.method = "ffn".
    ffn_keep_ratio: float = bounded(0.5, min=0.0, max=1.0, min_exclusive=True)
    # structured: share of all attention heads removed, at least one kept per
    # layer (0 = leave the heads alone). 0.25 as prune.method = "heads".
    heads_fraction: float = bounded(0.25, min=0.0, max=1.0, max_exclusive=True)
    # Pruning happens while training, so epochs are the pruning budget. 3 as
    # recovery's default; the paper trains 10+ epochs for its highest sparsities.
    epochs: int = bounded(3, min=1, max=MAX_EPOCHS)
    # Weights: 3e-5 is the paper's BERT-base rate. Scores start at 0 and must
    # overtake each other within a few epochs: the paper's 1e-2.
    learning_rate: float = bounded(3e-5, min=0.0, max=1.0, min_exclusive=True)
    score_learning_rate: float = bounded(1e-2, min=0.0, max=1.0, min_exclusive=True)
    # 16 as the other training stages.
    batch_size: int = bounded(16, min=1, max=4096)
    # Tokens per training example; when not given, stages.finetune.max_length (resolved at profile load).
    max_length: Optional[int] = bounded(None, min=1, max=MAX_SEQUENCE)
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels);
    # the paper distils with T = 2, alpha_distil = 0.9 and alpha_ce = 0.1.
    temperature: float = bounded(2.0, min=0.0, min_exclusive=True, max=100.0)
    alpha: float = bounded(0.9, min=0.0, max=1.0)
    # Learning-rate warm-up share of the steps (linear, then linear decay), as TrainParams.
    warmup_ratio: float = bounded(0.1, min=0.0, max=1.0)
    # Cubic sparsity schedule, as shares of all steps: full density until
    # schedule_start, the final keep ratio from schedule_end on. The paper's
    # code holds the start for one learning-rate warm-up (initial_warmup = 1)
    # and the end for the last two (final_warmup = 2): with warmup_ratio 0.1,
    # 0.1 and 0.8. schedule_end <= schedule_start prunes at once at
    # schedule_start; schedule_end = 1 reaches the target only when training ends.
    schedule_start: float = bounded(0.1, min=0.0, max=1.0, max_exclusive=True)
    schedule_end: float = bounded(0.8, min=0.0, max=1.0, min_exclusive=True)
    # Any value; 0 as the other pruning methods.
    seed: int = bounded(0, min=0, max=SEED_MAX)
    # Part of the signature (CPU sums depend on it) and of the teacher-logits
    # table's key: give the same as a `recover` table to share one table.
    threads: int = bounded(2, min=1, max=MAX_THREADS)


# Not profile fields: the paper's values (its code's defaults), and what the
# shared loop needs besides the fields above.
WEIGHT_DECAY = 0.0
MAX_GRAD_NORM = 1.0
# The masked model and the saved (zeroed or physically smaller) one must agree
# on a probe batch; they differ only by float summation order.
EQUIVALENCE_ATOL = 1e-4


def check(params: MovementPrune, source: str, key: str = "prune") -> None:
    """What the field ranges cannot say: a structured run must remove something (`key`: the table in `source`)."""
    if params.structure == "structured" and params.ffn_keep_ratio == 1 and params.heads_fraction == 0:
        raise ProfileError(f"{source}: {key}.ffn_keep_ratio = 1 and {key}.heads_fraction = 0: structured movement "
                           "pruning would remove nothing; lower ffn_keep_ratio or raise heads_fraction")


def training_params(p: MovementPrune) -> TrainParams:
    return TrainParams(temperature=p.temperature, alpha=p.alpha, epochs=p.epochs, learning_rate=p.learning_rate,
                       batch_size=p.batch_size, max_length=p.max_length, weight_decay=WEIGHT_DECAY,
                       warmup_ratio=p.warmup_ratio, max_grad_norm=MAX_GRAD_NORM, seed=p.seed, threads=p.threads)


def pruned_share(step: int, total: int, start: float, end: float) -> float:
    """How far the cubic schedule is at `step` (0 = dense, 1 = the final ratio)."""
    t = step / max(1, total)
    if t < start:
        return 0.0
    if end <= start or t >= end:
        return 1.0
    p = (t - start) / (end - start)
    return 1.0 - (1.0 - p) ** 3


def topk_mask(scores, keep: int):
    """1 for the `keep` highest scores, else 0; ties go to the lower index (a stable sort), so masks are reproducible."""
    import torch

    flat = scores.reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros_like(flat)
    mask[order[:keep]] = 1.0
    return mask.view_as(scores)


def heads_mask(scores: list, keep: int) -> list:
    """Per layer, a 0/1 mask over its heads: `keep` heads in all, at least one per layer.

    Each layer's best head first, then the rest by score across layers."""
    import torch

    masks = [torch.zeros_like(s) for s in scores]
    for s, m in zip(scores, masks):
        m[int(torch.sort(s, descending=True, stable=True).indices[0])] = 1.0
    rest = [(i, h) for i, s in enumerate(scores) for h in range(len(s)) if masks[i][h] == 0]
    if rest and keep > len(scores):
        values = torch.stack([scores[i][h] for i, h in rest])
        for k in torch.sort(values, descending=True, stable=True).indices[: keep - len(scores)].tolist():
            i, h = rest[k]
            masks[i][h] = 1.0
    return masks


@functools.cache
def _masked_class() -> type:
    """The parametrization, made on first use: stage modules are imported while SCons reads the build (no torch)."""
    import torch

    class Masked(torch.nn.Module):
        """weight -> weight * mask; the mask is the step's hard TopK mask, passed straight through to the scores."""

        def __init__(self, masks: "Masks", key: str, dim: int | None, repeat: int):
            super().__init__()
            self.masks, self.key, self.dim, self.repeat = masks, key, dim, repeat
            self.scores = masks.scores[key]  # shared by every matrix of a structure (a head's Q, K, V and output)

        def forward(self, weight):
            return weight * self.masks.expanded(self.key, self.dim, self.repeat, straight_through=True)

    return Masked


class Masks:
    """Scores by key, the hard masks they currently select, and the matrices they mask."""

    def __init__(self, select: Callable[[dict, float], dict]):
        self.scores: dict[str, Any] = {}
        self.hard: dict[str, Any] = {}
        self.select = select
        self.targets: list[tuple[Any, str, int | None, int]] = []  # (nn.Linear, key, dim, repeat)

    def add_scores(self, key: str, shape) -> None:
        import torch

        self.scores[key] = torch.nn.Parameter(torch.zeros(shape))  # the paper's constant 0 initialisation

    def update(self, share: float) -> None:
        """Choose the hard masks for pruned share `share` of the schedule (1 = the target)."""
        import torch

        with torch.no_grad():
            self.hard = self.select({k: s.detach() for k, s in self.scores.items()}, share)

    def expanded(self, key: str, dim: int | None, repeat: int, straight_through: bool = False):
        """The mask for one matrix: per weight (dim None), or per unit over rows (dim 0) or columns (dim 1)."""
        m = self.hard[key]
        if straight_through:
            s = self.scores[key]
            m = m + (s - s.detach())  # forward: exactly the hard mask; backward: identity to the scores
        if repeat > 1:
            m = m.repeat_interleave(repeat)
        if dim == 0:
            return m[:, None]
        if dim == 1:
            return m[None, :]
        return m

    def attach(self, module: Any, key: str, dim: int | None = None, repeat: int = 1) -> None:
        from torch.nn.utils import parametrize

        parametrize.register_parametrization(module, "weight", _masked_class()(self, key, dim, repeat))
        self.targets.append((module, key, dim, repeat))

    def make_permanent(self) -> None:
        """Drop the parametrizations, leaving the trained weights with the masked entries exactly +0."""
        import torch
        from torch.nn.utils import parametrize

        for module, key, dim, repeat in self.targets:
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
            with torch.no_grad():
                module.weight.masked_fill_(self.expanded(key, dim, repeat).expand_as(module.weight) == 0, 0.0)


def unstructured_masks(linears: list[tuple[str, Any]], sparsity: float) -> Masks:
    def select(scores, share):
        return {k: topk_mask(s, s.numel() - int(round(s.numel() * sparsity * share))) for k, s in scores.items()}

    masks = Masks(select)
    for name, module in linears:
        masks.add_scores(name, module.weight.shape)
    masks.update(0.0)
    for name, module in linears:
        masks.attach(module, name)
    return masks


def head_counts(model: Any, arch) -> list[int]:
    return [int(get_module(layer, arch.attention_self).num_attention_heads) for layer in layers_of(model, arch)]


def structured_masks(model: Any, arch, params: MovementPrune) -> Masks:
    layers = list(layers_of(model, arch))
    prune_heads = params.heads_fraction > 0
    prune_ffn = params.ffn_keep_ratio < 1
    if prune_heads and not arch.attention_self:
        raise ModelError(f"prune.heads_fraction = {params.heads_fraction}: head pruning is not supported for model_type "
                         f"{arch.model_type!r}; set heads_fraction = 0")
    width = get_module(layers[0], arch.ffn_in).out_features
    counts = head_counts(model, arch) if prune_heads else []
    d = head_size(model.config)

    def select(scores, share):
        hard = {}
        if prune_ffn:
            kept = max(1, int(round(width * (1.0 - (1.0 - params.ffn_keep_ratio) * share))))
            hard.update({f"ffn.{i}": topk_mask(scores[f"ffn.{i}"], kept) for i in range(len(layers))})
        if prune_heads:
            total = sum(counts)
            kept = max(len(counts), total - int(round(total * params.heads_fraction * share)))
            hard.update({f"heads.{i}": m for i, m in
                         enumerate(heads_mask([scores[f"heads.{i}"] for i in range(len(layers))], kept))})
        return hard

    masks = Masks(select)
    for i, layer in enumerate(layers):
        if prune_ffn:
            masks.add_scores(f"ffn.{i}", (width,))
        if prune_heads:
            masks.add_scores(f"heads.{i}", (counts[i],))
    masks.update(0.0)
    for i, layer in enumerate(layers):
        if prune_ffn:
            masks.attach(get_module(layer, arch.ffn_in), f"ffn.{i}", dim=0)    # neuron = a row of the input projection
            masks.attach(get_module(layer, arch.ffn_out), f"ffn.{i}", dim=1)   # and a column of the output projection
        if prune_heads:
            attn = get_module(layer, arch.attention_self)
            for name in arch.qkv:
                masks.attach(getattr(attn, name), f"heads.{i}", dim=0, repeat=d)   # a head = d rows of Q, K and V
            masks.attach(get_module(layer, arch.attention_out), f"heads.{i}", dim=1, repeat=d)  # and d output columns
    return masks


def kept_units(masks: Masks, prefix: str, layers: int) -> dict[int, list[int]]:
    return {i: masks.hard[f"{prefix}.{i}"].nonzero().flatten().tolist() for i in range(layers)}


def movement_prune(model: Any, arch, params: MovementPrune, linears: list[tuple[str, Any]], examples: list["Example"],
                   table: "TeacherLogits", encoder: "Encoder", labels: list[str], input_names) -> dict[str, Any]:
    """Train `model` (in place) with movement pruning against the teacher's logits; returns the record's fields."""
    import torch

    label_ids = {l: i for i, l in enumerate(labels)}
    structured = params.structure == "structured"
    masks = structured_masks(model, arch, params) if structured else unstructured_masks(linears, params.sparsity)
    tp = training_params(params)
    # The shared loop takes this many steps (one step_losses call each); the schedule follows them.
    total = math.ceil(len(examples) / tp.batch_size) * tp.epochs
    done = [0]

    def kept_shares() -> dict[str, float]:
        out = {}
        for kind in ("ffn", "heads") if structured else ("weights",):
            keys = [k for k in masks.hard if k.startswith(kind)] if structured else list(masks.hard)
            if keys:
                out[f"{kind}_kept"] = sum(float(masks.hard[k].sum()) for k in keys) / sum(masks.hard[k].numel() for k in keys)
        return out

    def step_losses(batch):
        masks.update(pruned_share(done[0], total, params.schedule_start, params.schedule_end))
        done[0] += 1
        t_logits = torch.from_numpy(table.lookup([e.id for e in batch]))
        feeds = encoder.encode([e.text for e in batch], input_names)
        target = torch.tensor([label_ids[e.label] for e in batch])
        logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
        loss, kl, ce = distillation_loss(logits, t_logits, target, params.temperature, params.alpha)
        return {"loss": loss, "kl": kl, "ce": ce, **{k: torch.tensor(v) for k, v in kept_shares().items()}}

    score_ids = {id(s) for s in masks.scores.values()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in score_ids], "lr": params.learning_rate},
              {"params": list(masks.scores.values()), "lr": params.score_learning_rate, "weight_decay": 0.0}]
    steps, history = train(model, examples, step_losses, param_groups=groups, params=tp, desc="movement")

    # The final masks at the target, then the masks made part of the weights.
    masks.update(1.0)
    probe = encoder.encode([e.text for e in examples[: tp.batch_size]], input_names)
    probe = {k: torch.from_numpy(v) for k, v in probe.items()}
    model.eval()
    with torch.no_grad():
        masked = model(**probe).logits
    info: dict[str, Any] = {"structure": params.structure, "train_examples": len(examples), "steps": steps,
                            "history": history, "schedule": {"start": params.schedule_start, "end": params.schedule_end}}
    if structured:
        layers = len(layers_of(model, arch))
        ffn = kept_units(masks, "ffn", layers) if params.ffn_keep_ratio < 1 else None
        heads = kept_units(masks, "heads", layers) if params.heads_fraction > 0 else None
        masks.make_permanent()
        width = get_module(layers_of(model, arch)[0], arch.ffn_in).out_features
        counts = head_counts(model, arch) if arch.attention_self else []
        removed = {i: [h for h in range(counts[i]) if h not in heads[i]] for i in range(layers)} if heads else {}
        if heads:
            keep_heads(model, arch, {i: heads[i] for i in range(layers) if removed[i]})
        if ffn:
            keep_ffn(model, arch, ffn)
        info.update({
            "intermediate_size_before": width,
            "intermediate_size_after": get_module(layers_of(model, arch)[0], arch.ffn_in).out_features,
            "heads_total": sum(counts), "heads_removed": sum(len(v) for v in removed.values()),
            "removed": {str(i): v for i, v in sorted(removed.items()) if v},
            "heads_per_layer": head_counts(model, arch) if counts else [],
            "speeds_up_dense_kernels": True,
            "note": "whole FFN neurons and attention heads are physically removed: smaller matrices, faster on every runtime",
        })
    else:
        masks.make_permanent()
        zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
        weights = sum(m.weight.numel() for _, m in linears)
        everything = sum(p.numel() for p in model.parameters())
        info.update({
            "sparsity_target": params.sparsity,
            "encoder_linear_sparsity": round(zeros / weights, 4),
            "model_sparsity": round(sum(int((p == 0).sum()) for p in model.parameters()) / everything, 4),
            "per_module_sparsity": {n: round(float((m.weight == 0).float().mean()), 4) for n, m in linears},
            "speeds_up_dense_kernels": False,
            "note": "zeros stored in dense matrices: the bundle compresses better, dense kernels do not run faster",
        })
    with torch.no_grad():
        diff = float((model(**probe).logits - masked).abs().max())
    if not diff <= EQUIVALENCE_ATOL * max(1.0, float(masked.abs().max())):
        raise StageError(f"movement pruning: the saved model's logits differ from the masked model's by {diff:.3g} "
                         f"on {len(examples[: tp.batch_size])} train examples; the masks were not applied faithfully")
    info["masked_vs_saved_max_abs_diff"] = diff
    return info
