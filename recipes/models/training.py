"""The one training loop: fine-tuning, distillation and recovery all run it.

Deterministic: the caller seeds torch (`deterministic_torch`) before it
builds the model, so a freshly initialised head is reproducible too; the loop
shuffles with its own seeded generator and uses deterministic algorithms and
a fixed thread count, so the same inputs give the same safetensors bytes.

Written out rather than taken from transformers.Trainer, which pulls in
accelerate, writes run-dependent state and cannot look teacher logits up by
example id; this loop is short and every knob is a profile field.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from recipes.params import MAX_EPOCHS, MAX_SEQUENCE, MAX_THREADS, SEED_MAX, bounded



@dataclass(frozen=True)
class TrainParams:
    """Knowledge distillation from the teacher's logits (and hidden states)."""
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)
    temperature: float = bounded(2.0, min=0.0, min_exclusive=True, max=100.0)
    alpha: float = bounded(0.5, min=0.0, max=1.0)
    # Weight of the MSE between student layers and the teacher layers they
    # were initialised from (0 = off); needs equal hidden sizes.
    hidden_loss: float = bounded(0.0, min=0.0, max=1000.0)
    epochs: int = bounded(3, min=1, max=MAX_EPOCHS)
    learning_rate: float = bounded(1e-4, min=0.0, min_exclusive=True, max=1.0)
    batch_size: int = bounded(16, min=1, max=4096)
    max_length: int = bounded(128, min=1, max=MAX_SEQUENCE)
    weight_decay: float = bounded(0.01, min=0.0, max=1.0)
    warmup_ratio: float = bounded(0.1, min=0.0, max=1.0)
    # Gradients are clipped to this global norm before every step.
    max_grad_norm: float = bounded(1.0, min=0.0, min_exclusive=True, max=1e6)
    seed: int = bounded(42, min=0, max=SEED_MAX)
    # Part of the signature: CPU kernels may sum in a different order with a
    # different thread count, and training must be byte-reproducible.
    threads: int = bounded(2, min=1, max=MAX_THREADS)


def deterministic_torch(seed: int, threads: int) -> None:
    """Seed torch and pin what makes CPU training reproducible; call before building the model."""
    import torch

    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def linear_warmup_decay(warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up over `warmup` steps, then linear decay to 0 at `total`."""
    return lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))


def train(model: Any, examples: Sequence[Any], step_losses: Callable[[list[Any]], dict[str, Any]], *,
          param_groups: Iterable[dict[str, Any]], params: Any, desc: str) -> tuple[int, list[dict[str, Any]]]:
    """Train `model` on `examples` for params.epochs; returns (steps, per-epoch mean losses).

    `step_losses(batch)` returns the named loss tensors of one batch; "loss" is
    the one optimised, the others are only recorded. `params` supplies epochs,
    batch_size, weight_decay, warmup_ratio, max_grad_norm and seed.
    """
    import torch
    from tqdm import tqdm

    optim = torch.optim.AdamW(list(param_groups), weight_decay=params.weight_decay)
    total = math.ceil(len(examples) / params.batch_size) * params.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(optim, linear_warmup_decay(int(total * params.warmup_ratio), total))
    gen = torch.Generator().manual_seed(params.seed)
    history = []
    model.train()
    # In a terminal the bar redraws in place; in a CI log each redraw is a
    # line, so redraw rarely there.
    interval = 0.1 if sys.stderr.isatty() else 10.0
    with tqdm(total=total, desc=desc, unit="step", dynamic_ncols=True, mininterval=interval) as bar:
        for epoch in range(params.epochs):
            order = torch.randperm(len(examples), generator=gen).tolist()
            sums: dict[str, float] = {}
            for start in range(0, len(order), params.batch_size):
                batch = [examples[i] for i in order[start:start + params.batch_size]]
                losses = step_losses(batch)
                loss = losses["loss"]
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), params.max_grad_norm)
                optim.step()
                sched.step()
                for name, value in losses.items():
                    sums[name] = sums.get(name, 0.0) + float(value.detach()) * len(batch)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                bar.update()
            history.append({"epoch": epoch + 1, **{k: round(v / len(examples), 6) for k, v in sums.items()}})
    model.eval()
    return total, history
