"""Latency of every artifact of a target, measured side by side.

This machine class is noisy, so artifacts are timed in interleaved rounds
rather than one after another: drift and neighbours' load hit all of them
alike, and the ratios are what we trust. Each runtime runs in its own
process (their thread pools disturb one another in one process), and within a
round each artifact runs a short block after a pause and one untimed call,
because PyTorch's OpenMP workers, ONNX Runtime's and OpenVINO's pools keep
spinning for a moment after a call and would otherwise steal the cores from
whichever engine runs next.
"""
from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.errors import StageError
from recipes.fsutil import write_json
from recipes.inputs.data import load_split
from recipes.measure.runners import NotMeasurable, open_runner
from recipes.params import MAX_BATCH, MAX_SEQUENCE, MAX_THREADS, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage
from runtime.cpu_features import cpu_model_name, known_host_features, normalized_arch

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


def _worker(conn: Any, artifacts: list[dict[str, Any]], threads: int) -> None:
    """One runtime's process: open its artifacts, then time what the parent asks, until told to stop."""
    runners, not_measured = {}, {}
    for a in artifacts:
        try:
            runners[a["name"]] = open_runner(a["format"], Path(a["path"]), tuple(a["input_names"]), threads)
        except NotMeasurable as exc:
            not_measured[a["name"]] = str(exc)
    conn.send(not_measured)
    while (job := conn.recv()) is not None:
        name, feeds, warmup, count = job
        run = runners[name]
        for _ in range(warmup):
            run(feeds)
        times = []
        for _ in range(count):
            start = time.perf_counter()
            run(feeds)
            times.append((time.perf_counter() - start) * 1000.0)
        conn.send(times)


def worker_context():
    """How the timing and memory processes start: forked from this stage's process where the platform allows.

    The stage process has imported its libraries (forked itself from the preloading stage server) but has
    run no operator and started no thread pool when it starts these workers, so a fork gives each a clean
    runtime without paying the 1-6 s import again that a spawned process did, per runtime and per target.
    Elsewhere (no fork), a spawned process."""
    import multiprocessing

    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")


class RuntimeProcesses:
    """A child process per runtime (format), so ONNX Runtime's, OpenVINO's and PyTorch's
    thread pools never share a process: one process's spinning workers or allocator
    state cannot slow another runtime's calls. Only one child works at a time; the
    others wait on their pipe (their pools go to sleep)."""

    def __init__(self, artifacts: list[dict[str, Any]], threads: int):
        ctx = worker_context()  # before any thread pool exists: no forked copies of one
        groups: dict[str, list[dict[str, Any]]] = {}
        for a in artifacts:
            groups.setdefault(a["format"], []).append(a)
        self.owner: dict[str, Any] = {}
        self.procs = []
        self.not_measured: dict[str, str] = {}
        for group in groups.values():
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, group, threads), daemon=True)
            proc.start()
            self.procs.append((proc, parent))
            self.not_measured.update(self._receive(proc, parent))
            for a in group:
                if a["name"] not in self.not_measured:
                    self.owner[a["name"]] = (proc, parent)

    @staticmethod
    def _receive(proc: Any, conn: Any) -> Any:
        try:
            return conn.recv()
        except EOFError:
            raise StageError(f"latency: the timing process for one runtime died (exit code {proc.exitcode}); "
                             "see the output above") from None

    @property
    def names(self) -> list[str]:
        return list(self.owner)

    def time(self, name: str, feeds: Any, warmup: int, count: int) -> list[float]:
        proc, conn = self.owner[name]
        conn.send((name, feeds, warmup, count))
        return self._receive(proc, conn)

    def close(self) -> None:
        for proc, conn in self.procs:
            try:
                conn.send(None)
            except OSError:
                pass
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


def measure(artifacts: list[dict[str, Any]], data_dir: Path, tokenizer_json: Path, params: EvaluateParams, dst: Path) -> dict[str, Any]:
    """`artifacts`: [{"name", "format", "path", "input_names"}]; writes {name: {batch: ms}}."""
    threads = params.threads or os.cpu_count() or 1
    texts = [e.text for e in load_split(data_dir / "eval.jsonl")]
    encoder = Encoder(tokenizer_json, params.sequence_length)
    pool = RuntimeProcesses(artifacts, threads)
    try:
        results: dict[str, dict[str, float]] = {name: {} for name in pool.names}
        for batch in params.batch_sizes:
            feeds = encoder.encode(full_length_texts(texts, batch), ("input_ids", "attention_mask", "token_type_ids"),
                                   pad_to=params.sequence_length)
            times: dict[str, list[float]] = {name: [] for name in pool.names}
            for name in pool.names:
                pool.time(name, feeds, params.warmup, 0)
            block = max(1, params.repeats // ROUNDS)
            for _ in range(ROUNDS):
                for name in pool.names:
                    time.sleep(SETTLE_S)  # the previous engine's spinning threads go to sleep
                    # one untimed call wakes this engine's pool
                    times[name] += pool.time(name, feeds, 1, block)
            for name in pool.names:
                results[name][str(batch)] = round(statistics.median(times[name]), 4)
    finally:
        pool.close()
    out = {
        "threads": threads,
        "sequence_length": params.sequence_length,
        "repeats": ROUNDS * max(1, params.repeats // ROUNDS),
        "rounds": ROUNDS,
        "warmup": params.warmup,
        "processes": "one per runtime",
        "median_ms": results,
        "not_measured": pool.not_measured,
        "measured_on": measured_on(),
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


def runner_entries(artifacts: tuple[TimedArtifact, ...]) -> list[dict[str, Any]]:
    """What the measuring processes are sent (plain values: they cross a process boundary)."""
    return [{"name": a.name, "format": a.format, "path": str(a.path), "input_names": list(a.input_names)} for a in artifacts]


def build(args: LatencyArgs) -> dict[str, Any]:
    return measure(runner_entries(args.artifacts), args.data_dir, args.tokenizer_json, args.params, args.dst)


def measured_on() -> dict[str, Any]:
    """The machine this stage runs on: the build host, or the Ray node executor=ray sent it to (its task names
    the node in EDGESMITH_NODE; recipes/wiring/ray_task.py). The manifest's measured_on comes from here."""
    where = {"cpu": cpu_model_name(), "arch": normalized_arch(), "cpu_features": known_host_features()}
    if os.environ.get("EDGESMITH_NODE"):
        where["node"] = os.environ["EDGESMITH_NODE"]
    return where


STAGE = Stage("latency", LatencyArgs, build,
              modules=("measure.latency", "measure.runners", "measure.nf4_runner", "measure.mobile_runners", "textenc",
                       "inputs.data", "models.hf", "models.embedding", "models.slim", "models.archs", "params", "runtime.nf4", "runtime.tokenize",
                       "runtime.openvino_backend", "runtime.cpu_features"),
              lock="exclusive")


def declare(g: "Graph", artifacts: list[TimedArtifact], files: list[Path], tokenizer_json: Path, params: EvaluateParams,
            dst: Path) -> Path:
    """Every artifact of a target timed side by side, in interleaved rounds, into `dst`."""
    args = LatencyArgs(artifacts=tuple(artifacts), data_dir=g.data_dir, tokenizer_json=tokenizer_json, params=params, dst=dst)
    g.stage(STAGE, [dst], files + [g.data_dir / "eval.jsonl", tokenizer_json], args,
            {"host_cpu_features": known_host_features()})
    return dst
