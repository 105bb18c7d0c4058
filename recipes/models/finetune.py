"""Fine-tune a classification head (and optionally the encoder) = the teacher.

Runs only when the checkpoint has no trained head. Deterministic like every
training stage (see recipes/models/training.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.inputs.data import load_labels, load_split
from recipes.models.model_dir import write_model_dir
from recipes.models.training import deterministic_torch, train
from recipes.params import MAX_EPOCHS, MAX_SEQUENCE, MAX_THREADS, SEED_MAX, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # the graph is SCons-side; importing it would put it in this stage's signature
    from recipes.wiring.graph import Graph, Inputs

HEAD_PREFIXES = ("classifier.", "pre_classifier.")


@dataclass(frozen=True)
class FinetuneParams:
    epochs: int = bounded(3, min=1, max=MAX_EPOCHS)
    learning_rate: float = bounded(5e-5, min=0.0, min_exclusive=True, max=1.0)
    head_learning_rate: float = bounded(1e-3, min=0.0, min_exclusive=True, max=1.0)
    batch_size: int = bounded(16, min=1, max=4096)
    max_length: int = bounded(128, min=1, max=MAX_SEQUENCE)
    train_encoder: bool = True
    weight_decay: float = bounded(0.01, min=0.0, max=1.0)
    warmup_ratio: float = bounded(0.1, min=0.0, max=1.0)
    max_grad_norm: float = bounded(1.0, min=0.0, min_exclusive=True, max=1e6)
    seed: int = bounded(42, min=0, max=SEED_MAX)
    # Part of the signature: CPU kernels may sum in a different order with a
    # different thread count, and training must be byte-reproducible.
    threads: int = bounded(2, min=1, max=MAX_THREADS)


@dataclass(frozen=True)
class FinetuneArgs:
    model_dir: Path
    data_dir: Path
    dst: Path
    params: FinetuneParams
    input_names: tuple[str, ...]


def build(args: FinetuneArgs) -> dict[str, Any]:
    import torch

    from recipes.models.hf import load_classifier

    params = args.params
    deterministic_torch(params.seed, params.threads)
    labels = load_labels(args.data_dir / "data.json")
    train_split = load_split(args.data_dir / "train.jsonl")
    label_ids = {l: i for i, l in enumerate(labels)}
    model = load_classifier(args.model_dir, new_head=True, num_labels=len(labels), id2label=dict(enumerate(labels)),
                            label2id=label_ids)
    encoder = Encoder(args.model_dir / "tokenizer.json", params.max_length)

    head = [p for n, p in model.named_parameters() if n.startswith(HEAD_PREFIXES)]
    body = [p for n, p in model.named_parameters() if not n.startswith(HEAD_PREFIXES)]
    for p in body:
        p.requires_grad_(params.train_encoder)
    groups = [{"params": head, "lr": params.head_learning_rate}]
    if params.train_encoder:
        groups.append({"params": body, "lr": params.learning_rate})

    def step_losses(batch):
        feeds = encoder.encode([e.text for e in batch], args.input_names)
        target = torch.tensor([label_ids[e.label] for e in batch])
        logits = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
        return {"loss": torch.nn.functional.cross_entropy(logits, target)}

    steps, history = train(model, train_split, step_losses, param_groups=groups, params=params, desc="finetune")
    summary = {"labels": labels, "train_examples": len(train_split), "steps": steps, "history": history}
    write_model_dir(model, args.model_dir, args.dst, "training.json", summary)
    return summary


STAGE = Stage("finetune", FinetuneArgs, build,
              modules=("models.finetune", "models.training", "models.model_dir", "inputs.checkpoint", "inputs.data",
                       "models.hf", "models.embedding", "models.slim", "models.archs", "textenc", "params", "runtime.tokenize"),
              packages=("torch", "transformers", "tokenizers"))


def declare(g: "Graph", inputs: "Inputs", data_dir: Path, params: FinetuneParams) -> tuple[Path, list[Path]]:
    """The teacher checkpoint dir and its files: the input itself when it has a head, else fine-tuned."""
    info = inputs.model
    if info.has_head:
        return info.root, list(info.files)
    identity = {"model_dir": info.root, "data_dir": data_dir, "params": params, "input_names": info.arch.input_names}
    out = g.stage_dir("teacher", identity)
    args = FinetuneArgs(model_dir=info.root, data_dir=data_dir, dst=out, params=params, input_names=info.arch.input_names)
    names = ["config.json", "model.safetensors"] + [f.name for f in info.files if f.name not in ("config.json", "model.safetensors")]
    targets = [out / n for n in names] + [out / "training.json", out / "manifest.json"]
    g.stage(STAGE, targets, list(info.files) + [data_dir / "train.jsonl", data_dir / "data.json"], args)
    return out, targets
