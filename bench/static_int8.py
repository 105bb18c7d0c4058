"""Static QDQ int8 on ONNX Runtime against the fused dynamic int8: agreement, size, latency and where the time goes.

Takes the demo teacher's built ONNX models (fp32 export, fused fp32, fused dynamic int8) from a stages
directory, quantizes static int8 variants from them with the stage's own code
(recipes.formats.quantize_onnx.quantize_static; calibrated on SST-2 train sentences), then:

- agreement with the fp32 export's predictions on every SST-2 dev sentence, and the largest logit change;
- latency at batch 1 and 32, sequence 128 filled with real tokens (dev sentences joined), 2 intra-op
  threads: every model in its own process, all loaded at once and run in lockstep (each in turn, in a
  shuffled order, per round), so each round's ratio to the dynamic model is taken within a second or two
  on a host other people share; the table gives median latency and the median of the per-round ratios;
- ONNX Runtime's profiler (SessionOptions.enable_profiling) per op type for the dynamic model and the
  static model before, split and after, each in its own process: which kernels the time goes to.

Writes bench/results/static_int8.md. No absolute paths go into it.

    .venv/bin/python bench/static_int8.py --stages ../clone2/build/stages --data-dir ../shared/data/sst2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
WORK = ROOT / "bench" / "work" / "static_int8"
NAMES = ("input_ids", "attention_mask", "token_type_ids")
THREADS = 2
SEQ = 128
# Inferences per model per lockstep round (their median is the round's sample): a few at batch 1, where
# one inference is short enough for a burst of someone else's work to swamp it.
REPS = {1: 7, 32: 1}
PROFILE_PASSES = 3

# One model per process. Reads "batch reps" lines, runs `reps` inferences, prints their median milliseconds;
# "profile BATCH N" runs N profiled inferences and prints the per-op-type totals as JSON.
CHILD = r"""
import json, os, sys, time
import numpy as np
import onnxruntime as ort
path, threads, feeds_npz = sys.argv[1], int(sys.argv[2]), sys.argv[3]
data = np.load(feeds_npz)
feeds = {int(k.split("_")[0][1:]): {} for k in data.files}
for k in data.files:
    b, name = k.split("_", 1)
    feeds[int(b[1:])][name] = data[k]

def session(profile=False):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(os.path.dirname(feeds_npz), "ort_profile")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

mode = sys.argv[4]
if mode == "profile":
    batch, n = int(sys.argv[5]), int(sys.argv[6])
    s = session(profile=True)
    for _ in range(3):
        s.run(None, feeds[batch])
    for _ in range(n):
        s.run(None, feeds[batch])
    events = json.load(open(s.end_profiling()))
    runs = [e for e in events if e.get("name") == "model_run"][-n:]
    start = runs[0]["ts"]
    ops = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start:
            op = e["args"]["op_name"]
            total, count = ops.get(op, (0, 0))
            ops[op] = (total + e["dur"], count + 1)
    print(json.dumps({"run_us": sorted(r["dur"] for r in runs)[len(runs) // 2],
                      "ops": {op: [t / n, c // n] for op, (t, c) in ops.items()}}))
else:
    s = session()
    print("ready", flush=True)
    for line in sys.stdin:
        b, reps = map(int, line.split())
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            s.run(None, feeds[b])
            times.append((time.perf_counter() - t) * 1000)
        print(sorted(times)[len(times) // 2], flush=True)
"""


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            have = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
            return ", ".join(have) or "no AVX2"
    return "unknown"


def host_busy(seconds: float = 0.25) -> float:
    """Share of all cores busy over `seconds`; our children are idle meanwhile, so this is everyone else."""
    def sample():
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        return sum(f), f[3] + f[4]
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def tsv_sentences(path: Path) -> list[str]:
    """The sentence column of a GLUE SST-2 .tsv (header names it `sentence` or `content`)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    head = lines[0].split("\t")
    col = next(i for i, h in enumerate(head) if h in ("sentence", "content", "text"))
    return [line.split("\t")[col] for line in lines[1:] if line.strip()]


def find_models(stages: Path) -> dict[str, Path]:
    """fp32 export, fused fp32 and fused dynamic int8 among the stage directories, told apart by their reports."""
    import onnx

    found: dict[str, Path] = {}
    for d in sorted(stages.iterdir()):
        model = d / "model.onnx"
        if not model.is_file():
            continue
        if (d / "export.json").is_file():
            found.setdefault("fp32", model)
        elif (d / "fuse.json").is_file():
            found.setdefault("fused", model)
        elif (d / "quantize.json").is_file() and json.loads((d / "quantize.json").read_text()).get("method") == "dynamic":
            ops = {n.op_type for n in onnx.load(str(model), load_external_data=False).graph.node}
            if "QAttention" in ops:
                found.setdefault("dynamic", model)
    teachers = sorted(stages.glob("teacher-*/tokenizer.json"))
    if teachers:
        found["tokenizer"] = teachers[0]
    return found


def real_token_feeds(tokenizer: Path, sentences: list[str], batch: int) -> dict:
    """`batch` rows of SEQ real tokens (dev sentences joined until the row is full; no padding)."""
    from recipes.textenc import Encoder

    rows, i = [], 0
    for _ in range(batch):
        text = ""
        while len(text.split()) < 2 * SEQ:
            text += " " + sentences[i % len(sentences)]
            i += 1
        rows.append(text)
    feeds = Encoder(tokenizer, SEQ).encode(rows, NAMES, pad_to=SEQ)
    assert feeds["attention_mask"].all(), "rows must be all real tokens"
    return feeds


def logits(path: Path, tokenizer: Path, texts: list[str], batch: int = 32):
    import numpy as np
    import onnxruntime as ort

    from recipes.textenc import Encoder

    options = ort.SessionOptions()
    options.intra_op_num_threads = THREADS
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    enc = Encoder(tokenizer, SEQ)
    return np.concatenate([session.run(None, enc.encode(texts[i:i + batch], NAMES))[0] for i in range(0, len(texts), batch)])


def lockstep(models: dict[str, Path], feeds_npz: Path, rounds: dict[int, int], reference: str) -> dict:
    """Median ms per batch and median per-round ratio to `reference`, every model in its own process."""
    procs = {}
    for name, path in models.items():
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(THREADS), str(feeds_npz), "serve"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{name}: child did not start")
        procs[name] = p

    def ask(name: str, batch: int) -> float:
        p = procs[name]
        p.stdin.write(f"{batch} {REPS[batch]}\n")
        p.stdin.flush()
        return float(p.stdout.readline())

    out: dict = {"busy": []}
    try:
        for batch, n in rounds.items():
            for name in procs:  # warm-up, one model at a time
                for _ in range(5 if batch == 1 else 2):
                    ask(name, batch)
            times: dict[str, list[float]] = {name: [] for name in procs}
            for r in range(n):
                waited = 0.0
                while (busy := host_busy(0.1)) > 0.5 and waited < 2.0:  # give a burst of others' work a moment
                    waited += 0.1
                out["busy"].append(busy)
                order = list(procs)
                random.Random(r).shuffle(order)
                for name in order:
                    time.sleep(0.02)  # let the previous process's spinning workers park
                    times[name].append(ask(name, batch))
            for name in procs:
                ratios = [a / b for a, b in zip(times[name], times[reference])]
                out.setdefault(name, {})[batch] = {"ms": statistics.median(times[name]), "ratio": statistics.median(ratios),
                                                   "ratio_q": (sorted(ratios)[len(ratios) // 4], sorted(ratios)[3 * len(ratios) // 4]),
                                                   "rounds": n}
            print(f"batch {batch}: " + ", ".join(f"{k} {v[batch]['ms']:.1f} ms ({v[batch]['ratio']:.2f}x)"
                                                 for k, v in out.items() if k != "busy"), flush=True)
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()
    return out


def profile(path: Path, feeds_npz: Path, batch: int, n: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), str(THREADS), str(feeds_npz), "profile", str(batch), str(n)],
                          capture_output=True, text=True, check=True)
    for f in feeds_npz.parent.glob("ort_profile*.json"):
        f.unlink()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def op_table(profiles: dict[str, dict], batch: int, top: int = 8) -> list[str]:
    lines = [f"Batch {batch}: per op type, ms per inference (share of kernel time), nodes run per inference.", "",
             "| model | inference ms | " + " | ".join(f"op {i + 1}" for i in range(top)) + " |",
             "|---|---|" + "---|" * top]
    for name, prof in profiles.items():
        ops = sorted(prof["ops"].items(), key=lambda kv: -kv[1][0])
        total = sum(t for t, _ in prof["ops"].values())
        cells = [f"{op} {t / 1000:.2f} ({100 * t / total:.0f}%, {c})" for op, (t, c) in ops[:top]]
        lines.append(f"| {name} | {prof['run_us'] / 1000:.1f} | " + " | ".join(cells + [""] * (top - len(cells))) + " |")
    return lines


def main() -> None:
    import numpy as np
    import onnxruntime

    from recipes.formats.quantize_onnx import StaticInt8, quantize_static

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", type=Path, default=ROOT / "build" / "stages",
                        help="stage directories of a built cpu profile (fp32 export, fused fp32, fused dynamic int8)")
    parser.add_argument("--fp32", type=Path, help="fp32 export (default: found in --stages)")
    parser.add_argument("--fused", type=Path, help="fused fp32 (default: found in --stages)")
    parser.add_argument("--dynamic", type=Path, help="fused dynamic int8 (default: found in --stages)")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer.json (default: the teacher's in --stages)")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2",
                        help="SST-2 dir with train.tsv and dev.tsv")
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--rounds-b1", type=int, default=60)
    parser.add_argument("--rounds-b32", type=int, default=12)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "static_int8.md")
    args = parser.parse_args()

    found = find_models(args.stages) if args.stages.is_dir() else {}
    paths = {k: getattr(args, k) or found.get(k) for k in ("fp32", "fused", "dynamic", "tokenizer")}
    missing = [k for k, v in paths.items() if v is None]
    if missing:
        sys.exit(f"missing {', '.join(missing)}: pass them or a --stages directory of a built cpu profile")
    WORK.mkdir(parents=True, exist_ok=True)

    # Calibration: every k-th SST-2 train sentence, as the stage's train.jsonl.
    train = tsv_sentences(args.data_dir / "train.tsv")
    step = len(train) // args.calibration_samples
    calib = WORK / "train.jsonl"
    with open(calib, "w", encoding="utf-8") as fh:
        for i, text in enumerate(train[::step][: args.calibration_samples]):
            fh.write(json.dumps({"id": f"sst2-{i:05d}", "text": text, "label": "x"}) + "\n")
    dev = tsv_sentences(args.data_dir / "dev.tsv")

    base = StaticInt8("static", calibration_samples=args.calibration_samples)
    # (row name, source graph, parameters)
    variants = [
        ("static before: unfused, QDQ on all MatMuls (old default)", "fp32", replace(base, placement="all_matmuls")),
        ("static, unfused, QDQ on weight inputs only", "fp32", base),
        ("static, fused, QDQ on all MatMuls, Attention split", "fused", replace(base, placement="all_matmuls", attention="split")),
        ("static, fused, weight inputs, Attention left fp32", "fused", replace(base, attention="float")),
        ("static, fused, weight inputs, Attention split (MultiHeadAttention)", "fused", replace(base, attention="split")),
        ("static, fused, weight inputs, QAttention, per-tensor weights", "fused", replace(base, per_channel=False)),
        ("static, fused, weight inputs, int8 activations (Attention split: QAttention takes uint8 only)", "fused",
         replace(base, activation_type="int8", placement="weight_inputs")),
        ("static after: fused, weight inputs, static QAttention (new default)", "fused", base),
    ]
    models: dict[str, Path] = {"dynamic int8 (fused, the bundle's default)": paths["dynamic"]}
    reports: dict[str, dict] = {}
    for i, (name, src, params) in enumerate(variants):
        out = WORK / f"v{i}" / "model.onnx"
        out.parent.mkdir(exist_ok=True)
        t = time.time()
        reports[name] = quantize_static(paths[src], out, calib, paths["tokenizer"], params, NAMES, SEQ)
        print(f"{name}: built in {time.time() - t:.0f} s: {reports[name]}", flush=True)
        models[name] = out

    ref = logits(paths["fp32"], paths["tokenizer"], dev)
    quality = {}
    for name, path in models.items():
        got = logits(path, paths["tokenizer"], dev)
        quality[name] = (float(np.mean(got.argmax(1) == ref.argmax(1))), float(np.abs(got - ref).max()),
                         path.stat().st_size / 1e6)
        print(f"{name}: agreement {quality[name][0]:.2%}", flush=True)

    feeds_npz = WORK / "feeds.npz"
    np.savez(feeds_npz, **{f"b{b}_{k}": v for b in (1, 32) for k, v in real_token_feeds(paths["tokenizer"], dev, b).items()})
    dynamic = next(iter(models))
    before, split, after = variants[0][0], variants[4][0], variants[-1][0]
    # Profiled processes run one after another, so each row meets a different moment of the shared host:
    # three alternating passes, and per model the least disturbed one (lowest inference time).
    profiles: dict[int, dict[str, dict]] = {1: {}, 32: {}}
    for _ in range(PROFILE_PASSES):
        for b in (1, 32):
            for n in (dynamic, before, split, after):
                got = profile(models[n], feeds_npz, b, 20 if b == 1 else 4)
                if n not in profiles[b] or got["run_us"] < profiles[b][n]["run_us"]:
                    profiles[b][n] = got
    timing = lockstep(models, feeds_npz, {1: args.rounds_b1, 32: args.rounds_b32}, dynamic)

    busy = statistics.median(timing["busy"])
    lines = [
        "# Static QDQ int8 against dynamic int8 on ONNX Runtime",
        "",
        f"Host: {cpu_name()} ({os.cpu_count()} cores; {cpu_flags()}), ONNX Runtime {onnxruntime.__version__}, "
        f"{THREADS} intra-op threads, CPU execution provider, graph optimizations at ORT's default (all). "
        f"Model: the demo teacher (all-MiniLM-L6-v2 fine-tuned, 6 layers, hidden 384). Static variants "
        f"quantized by `recipes.formats.quantize_onnx.quantize_static` (MinMax, {args.calibration_samples} "
        f"SST-2 train sentences, padded to {SEQ}); agreement: share of the {len(dev)} SST-2 dev sentences "
        f"where the model predicts what the fp32 export predicts; max |dlogit| against the fp32 export.",
        "",
        f"Latency: sequence {SEQ} of real tokens (dev sentences joined, no padding); every model in its own "
        f"process, all loaded together and run in lockstep: per round each model in turn, in a shuffled "
        f"order, runs {REPS[1]} inferences at batch 1 (their median is its sample) or {REPS[32]} at batch 32 "
        f"({args.rounds_b1} rounds at batch 1, {args.rounds_b32} at batch 32); ms = median; ratio = "
        f"median of the per-round ratios to the dynamic model [interquartile range]. The host is shared: "
        f"other processes kept a median {busy:.0%} of its cores busy during the rounds, so the ms are "
        f"inflated and only the ratios, taken seconds apart, compare.",
        "",
        "| variant | agreement with fp32 | max abs dlogit | size MB | b1 ms | b1 ratio | b32 ms | b32 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in models:
        agree, dlogit, size = quality[name]
        t1, t32 = timing[name][1], timing[name][32]
        lines.append(f"| {name} | {agree:.2%} | {dlogit:.2f} | {size:.1f} | {t1['ms']:.2f} | {t1['ratio']:.2f} "
                     f"[{t1['ratio_q'][0]:.2f}-{t1['ratio_q'][1]:.2f}] | {t32['ms']:.0f} | {t32['ratio']:.2f} "
                     f"[{t32['ratio_q'][0]:.2f}-{t32['ratio_q'][1]:.2f}] |")
    lines += ["", "Quantizer reports (what each variant did):", ""]
    lines += [f"- {name}: `{json.dumps({k: v for k, v in r.items() if k not in ('method', 'samples')})}`"
              for name, r in reports.items()]
    lines += ["", "## Where the time goes (ONNX Runtime profiler)", "",
              "Kernel time per op type after ORT's graph optimizations: each model in its own process, "
              f"20 profiled runs at batch 1, 4 at batch 32; {PROFILE_PASSES} passes in alternation and per model "
              "the least disturbed (fastest) one. Rows still come from different moments of a shared host: "
              "read the shares and node counts within a row; the lockstep ratios above compare rows.", ""]
    for b in (1, 32):
        lines += op_table(profiles[b], b) + [""]
    lines += [
        "## Why static was slower, and what changed",
        "",
        "- ORT's default QDQ placement (`all_matmuls`) puts Q/DQ on the inputs *and outputs* of every MatMul. "
        "ORT's CPU EP then fuses DQ,DQ -> MatMul -> Q into QLinearMatMul, which requantizes its output to "
        "uint8; the bias Add, Softmax, GELU and the residual Add each need a DequantizeLinear before and a "
        "QuantizeLinear after. The profile of the old model shows QLinearMatMul plus a long tail of "
        "QuantizeLinear / DequantizeLinear / unfused Add, Mul, Erf, Transpose, Softmax, and ORT's own "
        "SkipLayerNormalization, where the dynamic model runs fused kernels.",
        "- The attention score and context MatMuls (Q.K^T and probs.V, activation x activation) were "
        "QDQ'd too: per head they are tiny, and quantizing them costs a requantize and, worse, puts the "
        f"softmax probabilities in uint8, the main accuracy loss (agreement {quality[before][0]:.1%} -> "
        f"{quality[variants[1][0]][0]:.1%} on the same unfused graph once they, the MatMul outputs and the "
        "residual stream stay float).",
        "- The static path quantized the unfused export: no Attention, LayerNorm or GELU kernels. Quantizing "
        "the fused graph needs one more step: QDQ cannot reach the packed QKV weight inside "
        "com.microsoft Attention, so left alone the QKV projections stay fp32 and the model grows to "
        f"{quality[variants[3][0]][2]:.1f} MB (the profile's gate is 30 MB). The quantizer splits each fused "
        "Attention into Q/K/V MatMuls plus MultiHeadAttention (checked equal in fp32 on a calibration batch) "
        "and quantizes those MatMuls like the others (`attention = \"split\"`): "
        f"{timing[split][1]['ratio']:.2f}x / {timing[split][32]['ratio']:.2f}x the dynamic model at batch 1 / 32. "
        "ORT's MultiHeadAttention adds the bias and transposes Q, K and V to heads-first in separate passes "
        "over three separate projection outputs.",
        "- So after quantization it folds each split attention into com.microsoft QAttention, the dynamic "
        "model's int8 attention kernel, fed by the calibrated QuantizeLinear the three projections shared, "
        "with their per-channel int8 weights concatenated (`attention = \"qattention\"`, the default): the "
        "same integer arithmetic (logits identical on a calibration batch, checked by the stage), one GEMM "
        f"that writes heads-first: {timing[after][1]['ratio']:.2f}x / {timing[after][32]['ratio']:.2f}x. "
        "The rest of the model runs every weight MatMul as MatMulIntegerToFloat "
        "(ORT's fusion of DQ,DQ -> MatMul) with a static activation scale, where the dynamic model's "
        "DynamicQuantizeMatMul first scans each activation for its range.",
        "- `MatMulConstBOnly` (named in ORT's docs) is read only by the QOperator/dynamic quantizers, not "
        "by QDQ; the activation x activation MatMuls are excluded by name (`nodes_to_exclude`). "
        "`OpTypesToExcludeOutputQuantization = ['MatMul']` drops the output Q/DQ. No ORT option keeps "
        "the other readers of a quantized tensor on the float tensor; the quantizer rewires them.",
        "- Per-tensor weights and int8 (symmetric) activations were each less faithful on this model "
        "(rows above), and int8 x int8 GEMMs are slower than uint8 x int8 on x86 without VNNI; per-channel "
        "weights with uint8 activations stay the default. TensorRT profiles (int8 activations) keep the "
        "`all_matmuls` placement through `placement = \"auto\"` (TensorRT's strongly typed engines run "
        "whatever is not QDQ'd in fp32).",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
