"""Fine-tune a classification head (and optionally the encoder) = the teacher.

Deterministic: fixed seeds, deterministic algorithms, a fixed thread count
and a seeded shuffle, so the same inputs give the same safetensors bytes.
The loop is written out rather than using transformers.Trainer, which pulls
in accelerate and writes run-dependent state; ours is 40 lines.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from recipes.inputs.data import load_labels, load_split
from recipes.models.model_dir import write_model_dir
from recipes.wiring.profile import FinetuneParams
from recipes.textenc import Encoder


def finetune(model_dir: Path, data_dir: Path, dst: Path, params: FinetuneParams, input_names: tuple[str, ...]) -> dict[str, Any]:
    import torch
    from tqdm import tqdm

    from recipes.models.hf import load_classifier

    torch.manual_seed(params.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(params.threads)

    labels = load_labels(data_dir / "data.json")
    train = load_split(data_dir / "train.jsonl")
    label_ids = {l: i for i, l in enumerate(labels)}
    model = load_classifier(
        model_dir,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_ids,
        ignore_mismatched_sizes=True,
    )
    encoder = Encoder(model_dir / "tokenizer.json", params.max_length)

    head = [p for n, p in model.named_parameters() if n.startswith(("classifier.", "pre_classifier."))]
    body = [p for n, p in model.named_parameters() if not n.startswith(("classifier.", "pre_classifier."))]
    for p in body:
        p.requires_grad_(params.train_encoder)
    groups = [{"params": head, "lr": params.head_learning_rate}]
    if params.train_encoder:
        groups.append({"params": body, "lr": params.learning_rate})
    optim = torch.optim.AdamW(groups, weight_decay=params.weight_decay)
    steps_per_epoch = math.ceil(len(train) / params.batch_size)
    total = steps_per_epoch * params.epochs
    warmup = int(total * params.warmup_ratio)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup))
    )

    history = []
    model.train()
    gen = torch.Generator().manual_seed(params.seed)
    # In a terminal the bar redraws in place; in a CI log each redraw is a
    # line, so redraw rarely there.
    interval = 0.1 if sys.stderr.isatty() else 10.0
    with tqdm(total=total, desc="finetune", unit="step", dynamic_ncols=True, mininterval=interval) as bar:
        for epoch in range(params.epochs):
            order = torch.randperm(len(train), generator=gen).tolist()
            epoch_loss = 0.0
            for start in range(0, len(order), params.batch_size):
                batch = [train[i] for i in order[start:start + params.batch_size]]
                feeds = encoder.encode([e.text for e in batch], input_names)
                inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
                target = torch.tensor([label_ids[e.label] for e in batch])
                loss = torch.nn.functional.cross_entropy(model(**inputs).logits, target)
                optim.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optim.step()
                sched.step()
                epoch_loss += loss.item() * len(batch)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.4f}")
                bar.update()
            history.append({"epoch": epoch + 1, "loss": round(epoch_loss / len(train), 6)})
    model.eval()

    summary = {"labels": labels, "train_examples": len(train), "steps": total, "history": history}
    write_model_dir(model, model_dir, dst, "training.json", summary)
    return summary


def finetune_stage(model_dir: str, data_dir: str, dst: str, params: dict, input_names: list[str]) -> None:
    from recipes.wiring.schema import from_plain

    finetune(Path(model_dir), Path(data_dir), Path(dst), from_plain(FinetuneParams, params), tuple(input_names))
