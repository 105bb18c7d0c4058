"""Knowledge distillation: a student (fewer layers, initialised from chosen
layers of its base) or a pruned model (recovery) learns from the teacher.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * CE(student, labels)
       + hidden_loss * MSE(student layer k, teacher layer it came from)

Teacher logits come from the teacher-logits stage, looked up by example id
for every shuffled batch (see `paired_batches`). Deterministic like the
fine-tune: seeds, deterministic algorithms, a fixed thread count.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from recipes.inputs.data import Example, load_labels, load_split
from recipes.models.model_dir import write_model_dir
from recipes.wiring.profile import DistillParams, TrainParams
from recipes.models.teacher_logits import TeacherLogits
from recipes.textenc import Encoder


def paired_batches(examples: list[Example], table: TeacherLogits, order: list[int],
                   batch_size: int) -> Iterator[tuple[list[Example], np.ndarray]]:
    """Batches in `order`, each with its own examples' teacher logits (by id)."""
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start:start + batch_size]]
        yield batch, table.lookup([e.id for e in batch])


def distillation_loss(student_logits, teacher_logits, target, temperature: float, alpha: float):
    import torch.nn.functional as F

    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                  reduction="batchmean", log_target=True) * (t * t)
    ce = F.cross_entropy(student_logits, target)
    return alpha * kl + (1.0 - alpha) * ce, kl, ce


def masked_mse(student_hidden, teacher_hidden, mask):
    m = mask.unsqueeze(-1).to(student_hidden.dtype)
    return ((student_hidden - teacher_hidden) ** 2 * m).sum() / (m.sum() * student_hidden.shape[-1]).clamp(min=1.0)


def distill(base_dir: Path, teacher_dir: Path, logits_dir: Path, data_dir: Path, dst: Path, params: TrainParams,
            input_names: tuple[str, ...], select_layers: bool) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from recipes.models.archs import arch_for
    from recipes.models.hf import load_classifier
    from recipes.models.slim import default_layer_ids, layers_of, student_from_layers

    torch.manual_seed(params.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(params.threads)

    labels = load_labels(data_dir / "data.json")
    label_ids = {l: i for i, l in enumerate(labels)}
    train = load_split(data_dir / "train.jsonl")
    table = TeacherLogits.load(logits_dir)
    base = load_classifier(base_dir, attention="eager")
    arch = arch_for(base.config.model_type)
    total = len(layers_of(base, arch))
    if select_layers:
        assert isinstance(params, DistillParams)
        layer_ids = list(params.layer_ids) or default_layer_ids(total, params.layers)
        model = student_from_layers(base, arch, layer_ids, attention="eager")
        del base
    else:
        layer_ids = list(range(total))
        model = base
    teacher = None
    if params.hidden_loss > 0:
        teacher = load_classifier(teacher_dir, attention="eager")
        for p in teacher.parameters():
            p.requires_grad_(False)
    encoder = Encoder(base_dir / "tokenizer.json", params.max_length)

    optim = torch.optim.AdamW(model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    total_steps = steps_per_epoch * params.epochs
    warmup = int(total_steps * params.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
    )
    gen = torch.Generator().manual_seed(params.seed)
    history = []
    model.train()
    interval = 0.1 if sys.stderr.isatty() else 10.0
    with tqdm(total=total_steps, desc="distill", unit="step", dynamic_ncols=True, mininterval=interval) as bar:
        for epoch in range(params.epochs):
            order = torch.randperm(len(train), generator=gen).tolist()
            sums = {"loss": 0.0, "kl": 0.0, "ce": 0.0, "hidden": 0.0}
            for batch, t_logits in paired_batches(train, table, order, params.batch_size):
                feeds = encoder.encode([e.text for e in batch], input_names)
                inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
                target = torch.tensor([label_ids[e.label] for e in batch])
                out = model(**inputs, output_hidden_states=teacher is not None)
                loss, kl, ce = distillation_loss(out.logits, torch.from_numpy(t_logits), target,
                                                 params.temperature, params.alpha)
                hidden = torch.zeros(())
                if teacher is not None:
                    with torch.no_grad():
                        t_states = teacher(**inputs, output_hidden_states=True).hidden_states
                    mask = inputs["attention_mask"]
                    hidden = sum(masked_mse(out.hidden_states[k + 1], t_states[i + 1], mask)
                                 for k, i in enumerate(layer_ids)) / len(layer_ids)
                    loss = loss + params.hidden_loss * hidden
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                for name, value in (("loss", loss), ("kl", kl), ("ce", ce), ("hidden", hidden)):
                    sums[name] += float(value.detach()) * len(batch)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                bar.update()
            history.append({"epoch": epoch + 1, **{k: round(v / len(train), 6) for k, v in sums.items()}})
    model.eval()

    summary = {"layer_ids": layer_ids, "base_layers": total, "train_examples": len(train), "steps": total_steps,
               "history": history, "parameters": sum(p.numel() for p in model.parameters())}
    write_model_dir(model, base_dir, dst, "training.json", summary)
    return summary


def distill_stage(base_dir: str, teacher_dir: str, logits_dir: str, data_dir: str, dst: str, params: dict,
                  input_names: list[str], select_layers: bool) -> None:
    from recipes.wiring.schema import from_plain

    cls = DistillParams if select_layers else TrainParams
    distill(Path(base_dir), Path(teacher_dir), Path(logits_dir), Path(data_dir), Path(dst), from_plain(cls, params),
            tuple(input_names), select_layers)
