"""Latency of every artifact of a target, measured side by side.

This machine class is noisy, so artifacts are timed in interleaved rounds
rather than one after another: drift and neighbours' load hit all of them
alike, and the ratios are what we trust. Within a round each artifact runs a
short block after a pause and one untimed call, because PyTorch's OpenMP workers and ONNX
Runtime's pool keep spinning for a moment after a call and would otherwise
steal the cores from whichever engine runs next.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.fsutil import write_json
from recipes.inputs.data import load_split
from recipes.measure.runners import open_runner
from recipes.params import MAX_BATCH, MAX_SEQUENCE, MAX_THREADS, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph

ROUNDS = 3
SETTLE_S = 0.05


@dataclass(frozen=True)
class EvaluateParams:
    """The profile's [evaluate] table: how latency is measured (timings never enter an artifact)."""
    batch_sizes: tuple[int, ...] = bounded((1, 32), min=1, max=MAX_BATCH)
    sequence_length: int = bounded(128, min=1, max=MAX_SEQUENCE)
    warmup: int = bounded(3, min=0, max=10_000)
    repeats: int = bounded(15, min=1, max=100_000)
    # 0 = every core of the build host; the teacher gets the same count.
    threads: int = bounded(0, min=0, max=MAX_THREADS)


@dataclass(frozen=True)
class TimedArtifact:
    name: str
    format: str                  # recipes.measure.runners key
    path: Path
    input_names: tuple[str, ...]


def full_length_texts(texts: list[str], batch: int) -> list[str]:
    """`batch` texts long enough to fill the sequence with real tokens.

    "Sequence length 128" means 128 attended tokens: padding changes the work
    (masked attention is measurably slower in ONNX Runtime), so each row joins
    eval sentences, rotated per row, and truncation cuts it to the length.
    """
    rows = []
    for i in range(batch):
        k = i % len(texts)
        rows.append(" ".join(texts[k:] + texts[:k]))
    return rows


def measure(artifacts: list[dict[str, Any]], data_dir: Path, tokenizer_json: Path, params: EvaluateParams, dst: Path) -> dict[str, Any]:
    """`artifacts`: [{"name", "format", "path", "input_names"}]; writes {name: {batch: ms}}."""
    threads = params.threads or os.cpu_count() or 1
    texts = [e.text for e in load_split(data_dir / "eval.jsonl")]
    encoder = Encoder(tokenizer_json, params.sequence_length)
    runners = {a["name"]: open_runner(a["format"], Path(a["path"]), tuple(a["input_names"]), threads) for a in artifacts}
    results: dict[str, dict[str, float]] = {name: {} for name in runners}
    for batch in params.batch_sizes:
        feeds = encoder.encode(full_length_texts(texts, batch), ("input_ids", "attention_mask", "token_type_ids"),
                               pad_to=params.sequence_length)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for name, run in runners.items():
            for _ in range(params.warmup):
                run(feeds)
        block = max(1, params.repeats // ROUNDS)
        for _ in range(ROUNDS):
            for name, run in runners.items():
                time.sleep(SETTLE_S)  # the previous engine's spinning threads go to sleep
                run(feeds)  # untimed: wakes this engine's pool
                for _ in range(block):
                    start = time.perf_counter()
                    run(feeds)
                    times[name].append((time.perf_counter() - start) * 1000.0)
        for name in runners:
            results[name][str(batch)] = round(statistics.median(times[name]), 4)
    out = {
        "threads": threads,
        "sequence_length": params.sequence_length,
        "repeats": ROUNDS * max(1, params.repeats // ROUNDS),
        "rounds": ROUNDS,
        "warmup": params.warmup,
        "median_ms": results,
    }
    write_json(dst, out)
    return out


@dataclass(frozen=True)
class LatencyArgs:
    artifacts: tuple[TimedArtifact, ...]
    data_dir: Path
    tokenizer_json: Path
    params: EvaluateParams
    dst: Path


def build(args: LatencyArgs) -> dict[str, Any]:
    artifacts = [{"name": a.name, "format": a.format, "path": str(a.path), "input_names": list(a.input_names)}
                 for a in args.artifacts]
    return measure(artifacts, args.data_dir, args.tokenizer_json, args.params, args.dst)


STAGE = Stage("latency", LatencyArgs, build,
              modules=("measure.latency", "measure.runners", "measure.nf4_runner", "measure.mobile_runners", "textenc",
                       "inputs.data", "models.hf", "models.slim", "models.archs", "params", "runtime.nf4", "runtime.tokenize"),
              lock="exclusive")


def declare(g: "Graph", artifacts: list[TimedArtifact], files: list[Path], tokenizer_json: Path, params: EvaluateParams,
            dst: Path) -> Path:
    """Every artifact of a target timed side by side, in interleaved rounds, into `dst`."""
    args = LatencyArgs(artifacts=tuple(artifacts), data_dir=g.data_dir, tokenizer_json=tokenizer_json, params=params, dst=dst)
    g.stage(STAGE, [dst], files + [g.data_dir / "eval.jsonl", tokenizer_json], args)
    return dst
