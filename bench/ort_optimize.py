"""ONNX Runtime optimizations offline (`ort_optimize`) against at session start, on the demo's int8 model.

Run after `make demo`. Takes the cpu bundle's default int8 model, runs the
ort_optimize stage on it at both levels (the stage's own build function),
then measures, each configuration in its own fresh process and in
alternation (thread pools of two sessions in one process disturb each
other): session creation time, and median latency at batch 1 and 32
(sequence 128, 2 threads). Writes bench/results/ort_optimize.md.

    .venv/bin/python bench/ort_optimize.py
"""
from __future__ import annotations

import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ROUNDS = 5
THREADS = 2
SEQ = 128

# One measurement in a fresh process: load time, then latency per batch.
CHILD = r"""
import json, statistics, sys, time
import numpy as np
import onnxruntime as ort
path, level, threads, seq = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
options = ort.SessionOptions()
options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
options.intra_op_num_threads = threads
start = time.perf_counter()
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
load_ms = (time.perf_counter() - start) * 1000
names = [i.name for i in session.get_inputs()]
out = {"load_ms": load_ms}
rng = np.random.default_rng(0)
for batch in (1, 32):
    feeds = {"input_ids": rng.integers(1000, 20000, (batch, seq), dtype=np.int64),
             "attention_mask": np.ones((batch, seq), dtype=np.int64),
             "token_type_ids": np.zeros((batch, seq), dtype=np.int64)}
    feeds = {k: v for k, v in feeds.items() if k in names}
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(10 if batch == 1 else 5):
        t = time.perf_counter()
        session.run(None, feeds)
        times.append((time.perf_counter() - t) * 1000)
    out[f"b{batch}_ms"] = statistics.median(times)
print(json.dumps(out))
"""


def measure(path: Path, level: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), level, str(THREADS), str(SEQ)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    from recipes.formats.ort_optimize import OrtOptimize, OrtOptimizeArgs, build

    bundle = ROOT / "build" / "cpu" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    default = next(a for a in manifest["artifacts"] if a["name"] == manifest["default_artifact"])
    src = bundle / default["path"]
    names = tuple(i["name"] for i in manifest["inputs"])
    vocab = len(json.loads((bundle / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"])
    max_sequence = manifest["shapes"]["sequence"]["max"]
    work = Path(tempfile.mkdtemp(prefix="ort-optimize-"))
    models = {"as built (optimized at session start)": (src, "ORT_ENABLE_ALL")}
    for level in ("basic", "extended"):
        out = work / level
        report = build(OrtOptimizeArgs(src, out / "model.onnx", out / "report.json", OrtOptimize(level), names,
                                       vocab, max_sequence, 1e-4))
        models[f"ort_optimize {level}, ORT_ENABLE_ALL at start"] = (out / "model.onnx", "ORT_ENABLE_ALL")
        models[f"ort_optimize {level}, no optimization at start"] = (out / "model.onnx", "ORT_DISABLE_ALL")
        print(f"{level}: {sum(report['ops_before'].values())} -> {sum(report['ops_after'].values())} nodes")
    results: dict[str, list[dict]] = {name: [] for name in models}
    for _ in range(ROUNDS):
        for name, (path, level) in models.items():
            results[name].append(measure(path, level))
    base = {k: statistics.median(r[k] for r in results["as built (optimized at session start)"])
            for k in ("load_ms", "b1_ms", "b32_ms")}
    lines = ["# ort_optimize on the demo's default int8 model", "",
             f"`{default['name']}` of the cpu bundle (`make demo`), ONNX Runtime, {THREADS} threads, sequence {SEQ}; "
             f"each configuration in its own process, {ROUNDS} rounds in alternation, medians; ratios against the model "
             f"as built. Host: {platform.machine()}, Python {platform.python_version()}.", "",
             "| model | session start ms | ratio | b1 ms | ratio | b32 ms | ratio |", "|---|---|---|---|---|---|---|"]
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("load_ms", "b1_ms", "b32_ms")}
        lines.append(f"| {name} | {med['load_ms']:.1f} | {med['load_ms'] / base['load_ms']:.2f} | {med['b1_ms']:.2f} | "
                     f"{med['b1_ms'] / base['b1_ms']:.2f} | {med['b32_ms']:.1f} | {med['b32_ms'] / base['b32_ms']:.2f} |")
    out = ROOT / "bench" / "results" / "ort_optimize.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
