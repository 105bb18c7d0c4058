"""Peak memory of every artifact of a target: what loading it and running its largest batch adds to a process.

Each artifact gets a fresh process (spawned, so it inherits no allocator state or thread pools). Not
forked, as the latency stage's timing processes are: a forked child's page tables lack the shared
library pages its parent had touched (the kernel faults them in on use), so the runtime's own code,
already paid for at import, was counted again as the artifact's (7-16 MiB more on the tiny model). The
process imports the artifact's runtime library, encodes nothing itself (the feeds arrive ready), and
then records its resident set as the baseline. It resets the kernel's high-water mark
(`/proc/self/clear_refs`, value 5: the import's own transient peak must not count), opens the
artifact with the same runner that latency and evaluation use (the bundle runtime's session options),
and runs the largest evaluation batch twice: the first call grows the runtime's arenas, and the second
shows they are reused. Peak memory = VmHWM - baseline.

Where /proc cannot reset the mark (not Linux), the high-water mark is read from getrusage and the
record says so: the import's own peak may then be counted, so the figure is an upper bound.

The processes run one after another: peak resident memory does not depend on the machine being quiet,
but running them together would make the host's memory pressure part of the figure.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.errors import StageError
from recipes.fsutil import write_json
from recipes.inputs.data import load_split
from recipes.measure.latency import (EvaluateParams, LatencyArgs, TimedArtifact, full_length_texts, measured_on,
                                     runner_entries)
from recipes.measure.runners import RUNTIME_MODULES, NotMeasurable, open_runner
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph

MIB = 1024 * 1024
CALLS = 2


def _status_kb(field: str) -> int | None:
    """A `VmRSS:`/`VmHWM:` line of /proc/self/status, in KiB (None where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_high_water_mark() -> bool:
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _rusage_peak_kb() -> int:
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB on Linux


def _import_runtime(fmt: str, path: Path) -> None:
    """Import what opening `path` will import, so that code is in the baseline rather than the artifact's figure.

    transformers imports a model's class on first use: for a checkpoint, the classes its config names are
    imported here (without building a model, whose freed memory would blur the baseline)."""
    import importlib
    import json

    if fmt in ("torch", "nf4"):
        from recipes.models.hf import quiet_transformers

        quiet_transformers()  # as the runner's loader does: torchao's import-time chatter is not the user's concern
    for module in RUNTIME_MODULES.get(fmt, ()):
        importlib.import_module(module)
    config = path / "config.json"
    if fmt in ("torch", "nf4") and config.is_file():
        import transformers

        for name in json.loads(config.read_text(encoding="utf-8")).get("architectures") or ():
            getattr(transformers, name, None)


def probe(fmt: str, path: str, input_names: tuple[str, ...], threads: int, feeds: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: the resident memory that opening `path` and running `feeds` CALLS times adds."""
    _import_runtime(fmt, Path(path))
    exact = _reset_high_water_mark() and _status_kb("VmHWM") is not None
    baseline_kb = _status_kb("VmRSS") if exact else _rusage_peak_kb()
    try:
        run = open_runner(fmt, Path(path), tuple(input_names), threads)
    except NotMeasurable as exc:
        return {"not_measured": str(exc)}
    for _ in range(CALLS):
        run(feeds)
    peak_kb = _status_kb("VmHWM") if exact else _rusage_peak_kb()
    return {"baseline_mb": round(baseline_kb * 1024 / MIB, 2), "peak_mb": round((peak_kb - baseline_kb) * 1024 / MIB, 2),
            "method": "VmHWM reset after imports" if exact else "ru_maxrss (upper bound: includes the import's peak)"}


def _probe_child(conn: Any, *args: Any) -> None:
    try:
        conn.send(probe(*args))
    except Exception as exc:  # the runtime refused the artifact: one line for the parent, not a child's traceback
        conn.send({"error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"})
    finally:
        conn.close()


def probe_in_fresh_process(fmt: str, path: Path, input_names: tuple[str, ...], threads: int,
                           feeds: dict[str, Any], name: str) -> dict[str, Any]:
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_probe_child, args=(child, fmt, str(path), tuple(input_names), threads, feeds), daemon=True)
    proc.start()
    child.close()
    try:
        result = parent.recv()
    except EOFError:
        proc.join()
        raise StageError(f"memory: the process measuring {name} ({path.name}) died with exit code {proc.exitcode} "
                         "(killed for memory, or a crash in its runtime; see the output above)") from None
    proc.join()
    if "error" in result:
        raise StageError(f"memory: {name} ({path}) could not be opened and run in a fresh process: {result['error']}")
    return result


def measure(artifacts: list[dict[str, Any]], data_dir: Path, tokenizer_json: Path, params: EvaluateParams,
            dst: Path) -> dict[str, Any]:
    """`artifacts`: [{"name", "format", "path", "input_names"}]; writes {name: peak MiB} and the baselines."""
    threads = params.threads or os.cpu_count() or 1
    batch = max(params.batch_sizes)
    texts = [e.text for e in load_split(data_dir / "eval.jsonl")]
    feeds = Encoder(tokenizer_json, params.sequence_length).encode(
        full_length_texts(texts, batch), ("input_ids", "attention_mask", "token_type_ids"), pad_to=params.sequence_length)
    peak, baseline, methods, not_measured = {}, {}, set(), {}
    for a in artifacts:
        got = probe_in_fresh_process(a["format"], Path(a["path"]), tuple(a["input_names"]), threads, feeds, a["name"])
        if "not_measured" in got:
            not_measured[a["name"]] = got["not_measured"]
            continue
        peak[a["name"]], baseline[a["name"]] = got["peak_mb"], got["baseline_mb"]
        methods.add(got["method"])
    out = {"batch": batch, "sequence_length": params.sequence_length, "threads": threads, "calls": CALLS,
           "unit": "MiB", "method": sorted(methods), "peak_mb": peak, "baseline_mb": baseline, "not_measured": not_measured,
           "measured_on": measured_on()}
    write_json(dst, out)
    return out


def build(args: LatencyArgs) -> dict[str, Any]:
    """The same arguments as the latency stage's: the target's artifacts, its eval data and [evaluate] shapes."""
    return measure(runner_entries(args.artifacts), args.data_dir, args.tokenizer_json, args.params, args.dst)


STAGE = Stage("memory", LatencyArgs, build,
              modules=("measure.memory", "measure.latency", "measure.runners", "measure.nf4_runner",
                       "measure.mobile_runners", "textenc", "inputs.data", "models.hf", "models.embedding", "models.slim", "models.archs",
                       "params", "runtime.nf4", "runtime.tokenize", "runtime.openvino_backend", "runtime.cpu_features"))


def declare(g: "Graph", artifacts: list[TimedArtifact], files: list[Path], tokenizer_json: Path, params: EvaluateParams,
            dst: Path) -> Path:
    """Every artifact's peak memory, each in a fresh process, into `dst`."""
    args = LatencyArgs(artifacts=tuple(artifacts), data_dir=g.data_dir, tokenizer_json=tokenizer_json, params=params, dst=dst)
    g.stage(STAGE, [dst], files + [g.data_dir / "eval.jsonl", tokenizer_json], args)
    return dst
