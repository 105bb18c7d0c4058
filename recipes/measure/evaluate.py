"""Accuracy and agreement of one artifact on the eval split.

Deterministic (no timings), so its output is a stable cached node; latency is
measured separately, side by side for all artifacts of a target.
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import numpy as np

from recipes.inputs.data import load_labels, load_split
from recipes.fsutil import atomic_path, write_json
from recipes.measure.runners import open_runner
from recipes.textenc import Encoder

EVAL_BATCH = 32


def compressed_size(path: Path) -> int:
    """Size after zlib level 6, i.e. roughly what the bundle tarball costs."""
    comp = zlib.compressobj(6)
    total = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            total += len(comp.compress(block))
    return total + len(comp.flush())


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def evaluate(fmt: str, artifact: Path, size_paths: list[Path], data_dir: Path, tokenizer_json: Path, max_length: int,
             input_names: tuple[str, ...], dst_metrics: Path, dst_logits: Path, teacher_logits: Path | None = None) -> dict[str, Any]:
    labels = load_labels(data_dir / "data.json")
    examples = load_split(data_dir / "eval.jsonl")
    encoder = Encoder(tokenizer_json, max_length)
    runner = open_runner(fmt, artifact, input_names, threads=0)
    chunks = []
    for start in range(0, len(examples), EVAL_BATCH):
        batch = examples[start:start + EVAL_BATCH]
        chunks.append(runner(encoder.encode([e.text for e in batch], input_names)))
    logits = np.concatenate(chunks).astype(np.float32)
    gold = np.array([labels.index(e.label) for e in examples])
    pred = logits.argmax(axis=1)
    metrics: dict[str, Any] = {
        "examples": len(examples),
        "accuracy": float((pred == gold).mean()),
        "size_bytes": sum(artifact_size(p) for p in size_paths),
        "compressed_bytes": sum(compressed_size(p) for p in size_paths if p.is_file()),
    }
    if teacher_logits is not None:
        ref = np.load(teacher_logits)
        metrics["agreement"] = float((pred == ref.argmax(axis=1)).mean())
        metrics["max_abs_logit_diff"] = float(np.abs(logits - ref).max())
    with atomic_path(dst_logits) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, logits)
    write_json(dst_metrics, metrics)
    return metrics


def evaluate_stage(fmt: str, artifact: str, size_paths: list[str], data_dir: str, tokenizer_json: str, max_length: int,
                   input_names: list[str], metrics: str, logits: str, teacher_logits: str | None) -> None:
    evaluate(fmt, Path(artifact), [Path(p) for p in size_paths], Path(data_dir), Path(tokenizer_json), max_length,
             tuple(input_names), Path(metrics), Path(logits), Path(teacher_logits) if teacher_logits else None)
