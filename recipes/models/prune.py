"""Pruning: unstructured magnitude sparsity, attention heads, FFN neurons,
and movement pruning trained against the teacher (recipes.models.movement).

Structured importance is measured on train examples with the first-order
Taylor score |activation * gradient| of the loss (Michel et al. 2019 for
heads; the same estimate per neuron for the FFN), the loss being
cross-entropy on the labels. Structures are then physically removed
(recipes.models.slim), so the smaller matrices make every runtime faster.
Magnitude pruning zeroes weights and makes the zeros permanent: it shrinks
the compressed bundle, not dense-kernel latency, and the report says so.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from recipes.errors import StageError
from recipes.inputs.data import load_labels, load_split
from recipes.models import teacher_logits
from recipes.models.model_dir import write_model_dir
from recipes.models.movement import MovementPrune, check as check_movement, movement_prune
from recipes.models.teacher_logits import TeacherLogits
from recipes.models.slim import get_module, head_size, keep_ffn, keep_heads, layers_of
from recipes.params import MAX_SAMPLES, MAX_SEQUENCE, MAX_THREADS, SEED_MAX, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import ModelStep, Stage, tagged

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model


@dataclass(frozen=True)
class MagnitudePrune:
    method: Literal["magnitude"]
    sparsity: float = bounded(0.5, min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # global: one threshold over all encoder weights; layer: the same sparsity in each.
    scope: Literal["global", "layer"] = "global"
    seed: int = bounded(0, min=0, max=SEED_MAX)
    threads: int = bounded(2, min=1, max=MAX_THREADS)


@dataclass(frozen=True)
class HeadPrune:
    method: Literal["heads"]
    # Fraction of all attention heads removed, least important first (at
    # least one head stays in every layer).
    fraction: float = bounded(0.25, min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # Train examples used to score head importance, and how many per backward pass.
    samples: int = bounded(256, min=1, max=MAX_SAMPLES)
    batch_size: int = bounded(16, min=1, max=4096)
    # Tokens per scoring example; when not given, stages.finetune.max_length (resolved at profile load).
    max_length: Optional[int] = bounded(None, min=1, max=MAX_SEQUENCE)
    seed: int = bounded(0, min=0, max=SEED_MAX)
    threads: int = bounded(2, min=1, max=MAX_THREADS)


@dataclass(frozen=True)
class FfnPrune:
    method: Literal["ffn"]
    # Share of FFN neurons kept, the same in every layer, so the result is a
    # plain checkpoint with a smaller intermediate_size.
    keep_ratio: float = bounded(0.5, min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    samples: int = bounded(256, min=1, max=MAX_SAMPLES)
    batch_size: int = bounded(16, min=1, max=4096)
    max_length: Optional[int] = bounded(None, min=1, max=MAX_SEQUENCE)
    seed: int = bounded(0, min=0, max=SEED_MAX)
    threads: int = bounded(2, min=1, max=MAX_THREADS)


PruneSpec = MagnitudePrune | HeadPrune | FfnPrune | MovementPrune
PRUNERS = tagged(MagnitudePrune, HeadPrune, FfnPrune, MovementPrune)


@dataclass(frozen=True)
class PruneArgs:
    base_dir: Path
    data_dir: Path
    dst: Path
    params: PruneSpec = field(metadata=PRUNERS)
    input_names: tuple[str, ...] = ()
    # The teacher-logits stage's output: movement pruning trains against it;
    # None for the other methods.
    logits_dir: Optional[Path] = None


def encoder_linears(model: Any, arch) -> list[tuple[str, Any]]:
    """(name, module) of every nn.Linear inside the encoder layers."""
    import torch

    prefix = arch.layers + "."
    return [(n, m) for n, m in model.named_modules() if n.startswith(prefix) and isinstance(m, torch.nn.Linear)]


def magnitude_prune(model: Any, arch, params: MagnitudePrune) -> dict[str, Any]:
    import torch
    from torch.nn.utils import prune as torch_prune

    linears = encoder_linears(model, arch)
    targets = [(m, "weight") for _, m in linears]
    if params.scope == "global":
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=params.sparsity)
    else:
        for module, name in targets:
            torch_prune.l1_unstructured(module, name, amount=params.sparsity)
    for module, name in targets:
        torch_prune.remove(module, name)  # make the zeros part of the weight
    zeros = sum(int((m.weight == 0).sum()) for _, m in linears)
    total = sum(m.weight.numel() for _, m in linears)
    everything = sum(p.numel() for p in model.parameters())
    everything_zero = sum(int((p == 0).sum()) for p in model.parameters())
    with torch.no_grad():
        per_layer = {n: round(float((m.weight == 0).float().mean()), 4) for n, m in linears}
    return {"encoder_linear_sparsity": round(zeros / total, 4), "model_sparsity": round(everything_zero / everything, 4),
            "per_module_sparsity": per_layer}


def taylor_scores(model: Any, arch, examples, encoder: Encoder, labels: list[str], input_names, kind: str,
                  batch_size: int = 16):
    """Per layer, the importance of each head ("heads") or FFN neuron ("ffn").

    Both are read at the input of a projection: the attention output dense
    sees the heads' concatenated contexts, the FFN output dense sees the
    activated intermediate neurons; removing a unit zeroes its slice there.
    """
    import torch

    layers = layers_of(model, arch)
    captured: dict[int, Any] = {}

    def grab(i):
        def hook(module, args):
            args[0].retain_grad()
            captured[i] = args[0]
        return hook

    where = arch.attention_out if kind == "heads" else arch.ffn_out
    hooks = [get_module(layer, where).register_forward_pre_hook(grab(i)) for i, layer in enumerate(layers)]
    label_ids = {l: k for k, l in enumerate(labels)}
    scores = [0.0] * len(layers)
    model.eval()  # no dropout: scores must be deterministic
    try:
        for start in range(0, len(examples), batch_size):
            batch = examples[start:start + batch_size]
            feeds = encoder.encode([e.text for e in batch], input_names)
            inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
            target = torch.tensor([label_ids[e.label] for e in batch])
            model.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(**inputs).logits, target).backward()
            mask = inputs["attention_mask"].unsqueeze(-1).to(torch.float32)
            for i in range(len(layers)):
                act = captured[i]
                contrib = (act * act.grad * mask).detach()  # [B, S, units]
                if kind == "heads":
                    contrib = contrib.reshape(*contrib.shape[:2], -1, head_size(model.config)).sum(-1)
                # |sum over tokens| per example, then summed over examples.
                scores[i] = scores[i] + contrib.sum(1).abs().sum(0)
    finally:
        for h in hooks:
            h.remove()
    return scores


def prune_heads(model, arch, params: HeadPrune, examples, encoder, labels, input_names) -> dict[str, Any]:

    scores = taylor_scores(model, arch, examples, encoder, labels, input_names, "heads", params.batch_size)
    # Normalise per layer (Michel et al.) so layers compete on equal terms.
    normed = [s / s.norm().clamp(min=1e-12) for s in scores]
    flat = sorted(((float(s[h]), i, h) for i, s in enumerate(normed) for h in range(len(s))))
    total = len(flat)
    to_remove = int(round(params.fraction * total))
    removed: dict[int, list[int]] = {}
    for _, i, h in flat:
        if sum(len(v) for v in removed.values()) >= to_remove:
            break
        if len(removed.get(i, [])) + 1 >= len(normed[i]):
            continue  # every layer keeps at least one head
        removed.setdefault(i, []).append(h)
    keep = {i: [h for h in range(len(s)) if h not in removed.get(i, [])] for i, s in enumerate(normed)}
    keep_heads(model, arch, keep)
    return {"heads_total": total, "heads_removed": sum(len(v) for v in removed.values()),
            "removed": {str(i): sorted(v) for i, v in sorted(removed.items())},
            "importance": [[round(float(x), 6) for x in s] for s in normed], "heads_per_layer": [len(keep[i]) for i in sorted(keep)]}


def prune_ffn(model, arch, params: FfnPrune, examples, encoder, labels, input_names) -> dict[str, Any]:
    import torch

    scores = taylor_scores(model, arch, examples, encoder, labels, input_names, "ffn", params.batch_size)
    width = len(scores[0])
    kept = max(1, int(round(width * params.keep_ratio)))
    keep = {i: sorted(torch.topk(s, kept).indices.tolist()) for i, s in enumerate(scores)}
    keep_ffn(model, arch, keep)
    return {"intermediate_size_before": width, "intermediate_size_after": kept}


def build(args: PruneArgs) -> dict[str, Any]:
    import torch

    from recipes.models.archs import arch_for
    from recipes.models.hf import load_classifier

    params = args.params
    torch.manual_seed(params.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(params.threads)
    model = load_classifier(args.base_dir, attention="eager")
    arch = arch_for(model.config.model_type)
    before = sum(p.numel() for p in model.parameters())
    if isinstance(params, MagnitudePrune):
        info = magnitude_prune(model, arch, params)
    elif isinstance(params, MovementPrune):
        if args.logits_dir is None or not (args.logits_dir / "ids.json").is_file():
            where = "no logits_dir was given" if args.logits_dir is None else f"{args.logits_dir} has no ids.json"
            raise StageError(f"prune.method = 'movement' trains against the teacher's logits, but {where}; "
                             f"build the teacher-logits stage first")
        info = movement_prune(model, arch, params, encoder_linears(model, arch), load_split(args.data_dir / "train.jsonl"),
                              TeacherLogits.load(args.logits_dir), Encoder(args.base_dir / "tokenizer.json", params.max_length),
                              load_labels(args.data_dir / "data.json"), args.input_names)
    else:
        labels = load_labels(args.data_dir / "data.json")
        examples = load_split(args.data_dir / "train.jsonl")[: params.samples]
        encoder = Encoder(args.base_dir / "tokenizer.json", params.max_length)
        fn = prune_heads if isinstance(params, HeadPrune) else prune_ffn
        info = fn(model, arch, params, examples, encoder, labels, args.input_names)
    model.zero_grad(set_to_none=True)
    summary = {"method": params.method, **info, "parameters_before": before,
               "parameters_after": sum(p.numel() for p in model.parameters())}
    write_model_dir(model, args.base_dir, args.dst, "pruning.json", summary)
    return summary


STAGE = Stage("prune", PruneArgs, build,
              modules=("models.prune", "models.movement", "models.distill", "models.training", "models.teacher_logits",
                       "models.model_dir", "inputs.checkpoint", "inputs.data", "models.slim", "models.archs", "models.hf", "models.embedding",
                       "textenc", "params", "runtime.tokenize"),
              packages=("torch", "transformers", "tokenizers"))


def declare(g: "Graph", base: "Model", teacher: "Model", data_dir: Path, params: PruneSpec) -> Path:
    """The pruned `base`; movement pruning also declares the teacher's logits it trains against."""
    identity = {"base_dir": base.dir, "data_dir": data_dir, "params": params, "input_names": g.input_names}
    sources = base.weights + [base.tokenizer, data_dir / "train.jsonl", data_dir / "data.json"]
    logits = None
    if isinstance(params, MovementPrune):
        models = g.profile.models if g.profile else ()
        check_movement(params, g.profile.source if g.profile else "the profile",
                       next((f"models[{i}].prune" for i, m in enumerate(models) if m.prune is params), "prune"))
        # The table's directory is keyed by the teacher, the data, max_length and threads.
        logits = teacher_logits.declare(g, teacher, data_dir, params.max_length, params.threads)
        identity["logits_dir"] = logits  # only here: the other methods keep their stage directories
        sources += [logits / "logits.npy", logits / "ids.json"]
    out = g.stage_dir(f"prune-{params.method}", identity)
    args = PruneArgs(base_dir=base.dir, data_dir=data_dir, dst=out, params=params, input_names=g.input_names,
                     logits_dir=logits)
    g.stage(STAGE, g.checkpoint_targets(out, "pruning.json"), sources, args)
    return out


def declare_model(g: "Graph", base: "Model", teacher: "Model", params: PruneSpec) -> "Model":
    """A [[models]] `prune` step."""
    out = declare(g, base, teacher, g.data_dir, params)
    return g.model_at(out, f"{base.lineage} > prune {params.method}", out / "pruning.json")


MODEL_STEPS = (ModelStep("prune", PruneSpec, declare_model, order=20, metadata=PRUNERS,
                         doc="magnitude sparsity, attention heads or FFN neurons removed, or movement pruning against the teacher"),)
