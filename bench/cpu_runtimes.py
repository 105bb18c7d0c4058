"""CPU runtimes benchmark (issue 11): every CPU artifact of the SST-2 bench teacher,
ONNX Runtime, OpenVINO and PyTorch, timed each in its own process, in alternation.

1. Writes the SST-2 subset exactly as bench/sst2.py does (its write_subset, the
   same rows), so the fine-tuned teacher is the one bench/sst2.py's build made.
2. Builds bench/cpu_sst2.toml with scons, and a profile derived from it that
   converts the fp32 OpenVINO IR straight from PyTorch ([openvino] source =
   "pytorch"), so the IR's source is chosen by measurement.
3. Reads each build's report.json: accuracy, agreement, size, and the
   arithmetic fields (ops, achieved GOPS, floor, % of peak) where present.
4. Times the teacher (PyTorch) and every artifact at batch 1 and 32, sequence
   128 of real tokens, 2 threads: each (artifact, batch) in a fresh process of
   this script (--worker), which opens the artifact with
   recipes.measure.runners.open_runner (the build's own code), warms up and
   times N calls. Artifacts go round-robin for R rounds (the order rotated each
   round); each round's figure is that process's median; the table gives the
   median over rounds and the min-max range.
5. Writes bench/results/cpu_runtimes.md: the machine, the toolchain, the table,
   and the issue's targets marked met or missed.

Usage:
  .venv/bin/python bench/cpu_runtimes.py                      # the real run (~25 min on 2 cores)
  .venv/bin/python bench/cpu_runtimes.py --smoke --work-dir /tmp/cpu-smoke
      # proves the script end to end: 200 train / 200 dev sentences, NNCF sample
      # counts cut to fit, 1 round of 2 calls; results in the work dir, not bench/results
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from sst2 import SCONS, WORK, cpu_name, shown_path, write_subset  # noqa: E402

PROFILE = ROOT / "bench" / "cpu_sst2.toml"
BASELINE = "int8_dynamic_fused"        # today's fused ORT int8: the ratios are to it
STATIC = "int8_static"
OV_FP32 = "ov_fp32"
OV_FP32_PT = "ov_fp32_pt"              # the same fp32 IR, converted from PyTorch (derived profile)
BATCHES = (1, 32)
SEQUENCE = 128
MIN_AGREEMENT = 0.985
TARGET_B32, TARGET_B1, TARGET_STATIC = 0.6, 0.8, 1.15
FORMAT_RUNNER = {"onnx": "onnx", "openvino": "openvino", "torch": "torch"}
RUNTIME_NAME = {"onnxruntime": "ONNX Runtime", "openvino": "OpenVINO", "pytorch": "PyTorch"}
VERSIONS = ("onnxruntime", "openvino", "nncf", "torch", "transformers", "onnx")
# MiniLM-L6 (6 layers, hidden 384, FFN 1536) at sequence 128, per sentence: Q, K, V and
# output projections plus the two FFN matrices per token, and QK^T plus attention x V.
# (The pooler and the 2-way classifier, 0.15 M MACs, are left out.)
L6_LINEAR_MACS = 6 * SEQUENCE * (4 * 384 * 384 + 2 * 384 * 1536)
L6_ATTENTION_MACS = 6 * 2 * SEQUENCE * SEQUENCE * 384


# -- the worker: one (artifact, batch) in this process -------------------------------

def worker(spec: dict[str, Any]) -> dict[str, Any]:
    from recipes.inputs.data import load_split
    from recipes.measure.latency import full_length_texts
    from recipes.measure.runners import NotMeasurable, open_runner
    from recipes.textenc import Encoder

    names = tuple(spec["input_names"])
    texts = [e.text for e in load_split(Path(spec["data_dir"]) / "eval.jsonl")]
    feeds = Encoder(Path(spec["tokenizer"]), spec["sequence"]).encode(
        full_length_texts(texts, spec["batch"]), names, pad_to=spec["sequence"])
    real = int(feeds["attention_mask"].sum()) if "attention_mask" in feeds else None
    started = time.perf_counter()
    try:
        run = open_runner(spec["format"], Path(spec["path"]), names, spec["threads"])
    except NotMeasurable as exc:
        return {"not_measured": str(exc)}
    opened_s = time.perf_counter() - started
    # At least `warmup` calls and `warmup_s` seconds: PyTorch's first calls (oneDNN primitive
    # creation, allocator growth) stay slow for longer than ONNX Runtime's or OpenVINO's.
    warm_start, calls = time.perf_counter(), 0
    while calls < spec["warmup"] or time.perf_counter() - warm_start < spec["warmup_s"]:
        run(feeds)
        calls += 1
    times = []
    for _ in range(spec["repeats"]):
        t0 = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t0) * 1000.0)
    return {"median_ms": statistics.median(times), "times_ms": [round(t, 4) for t in times], "open_s": round(opened_s, 3),
            "real_tokens": real, "tokens": spec["batch"] * spec["sequence"]}


def time_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one worker in a fresh interpreter; its last stdout line is its JSON."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


# -- profiles --------------------------------------------------------------------------

def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _is_table_list(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def dump_toml(data: dict[str, Any]) -> str:
    """Enough TOML for a profile: scalars, arrays, tables, arrays of tables (with inline tables inside)."""
    out: list[str] = []

    def table(path: str, d: dict[str, Any]) -> None:
        plain = {k: v for k, v in d.items() if not isinstance(v, dict) and not _is_table_list(v)}
        if path and (plain or not d):
            out.append(f"\n[{path}]")
        out.extend(f"{k} = {_toml_value(v)}" for k, v in plain.items())
        for k, v in d.items():
            sub = f"{path}.{k}" if path else k
            if isinstance(v, dict):
                table(sub, v)
            elif _is_table_list(v):
                for item in v:
                    out.append(f"\n[[{sub}]]")
                    out.extend(f"{ik} = {_toml_value(iv)}" for ik, iv in item.items())

    table("", data)
    return "\n".join(out).lstrip("\n") + "\n"


def smoke_profile(data: dict[str, Any], n_train: int) -> dict[str, Any]:
    """The profile with sample counts that fit a small train split (NNCF's calibration and
    validation examples must be disjoint train examples); everything else as it is."""
    d = copy.deepcopy(data)
    share = max(10, n_train // 3)
    for art in d["artifacts"]:
        q = art.get("quantize") or {}
        if q.get("method") == "nncf_ptq":
            q["calibration_samples"] = min(q.get("calibration_samples", 300), share)
            q["validation_samples"] = min(q.get("validation_samples", 300), share)
        if q.get("method") == "static":
            q["calibration_samples"] = min(q.get("calibration_samples", 128), share)
    return d


def pytorch_source_profile(data: dict[str, Any]) -> dict[str, Any]:
    """Only the fp32 IR, converted by OpenVINO's PyTorch frontend; the same teacher, data and export."""
    d = copy.deepcopy(data)
    d["openvino"] = {"source": "pytorch"}
    spec = next(a for a in data["artifacts"] if a["name"] == OV_FP32)
    d["artifacts"] = [{**copy.deepcopy(spec), "name": OV_FP32_PT}]
    d["bundle"] = {"artifacts": [OV_FP32_PT], "default_artifact": OV_FP32_PT}
    d["device"]["description"] = d["device"]["description"] + " (fp32 IR from PyTorch)"
    return d


def write_profile(data: dict[str, Any], dst: Path, note: str) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(f"# Generated by bench/cpu_runtimes.py from bench/cpu_sst2.toml: {note}\n" + dump_toml(data), encoding="utf-8")
    return dst


# -- building ---------------------------------------------------------------------------

def run_build(profile: Path, train_csv: Path, dev_csv: Path) -> dict[str, Any]:
    """scons for one profile; a build stopped only by quality gates still gives its report."""
    report_json = ROOT / "build" / profile.stem / "report.json"
    target = os.path.relpath(profile, ROOT) if profile.is_relative_to(ROOT) else str(profile)
    cmd = [SCONS, "-Q", "-k", "-j2", f"target={target}", f"data={train_csv}", f"eval_data={dev_csv}"]
    print("+", " ".join(cmd), flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=ROOT)
    if proc.returncode != 0:
        fresh = report_json.is_file() and report_json.stat().st_mtime >= started - 1
        report = json.loads(report_json.read_text()) if fresh else None
        if not report or not report.get("gate_failures"):
            raise SystemExit(f"cpu_runtimes: the build of {shown_path(profile)} failed (scons exit {proc.returncode}); "
                             "see its output above")
        print(f"cpu_runtimes: the build wrote its report but stopped on quality gates (reported, not fatal here):",
              *[f"  - {f}" for f in report["gate_failures"]], sep="\n", flush=True)
    return json.loads(report_json.read_text())


def at_root(p: str | None) -> Path | None:
    return None if p is None else (Path(p) if Path(p).is_absolute() else ROOT / p)


def input_names(teacher_dir: Path) -> tuple[str, ...]:
    try:
        from recipes.inputs.checkpoint import inspect
        return tuple(inspect(teacher_dir).arch.input_names)
    except Exception:  # noqa: BLE001 - BERT's names, as bench/sst2.py uses
        return ("input_ids", "attention_mask", "token_type_ids")


# -- timing -------------------------------------------------------------------------------

def time_all(entries: list[dict[str, Any]], report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """{name: {batch: {"rounds": [ms...], ...} or {"not_measured"/"failed": why}}}, round-robin over processes."""
    inputs = report["inputs"]
    teacher_dir = at_root(inputs["teacher_dir"])
    base = {"data_dir": str(at_root(inputs["data_dir"])), "tokenizer": str(teacher_dir / "tokenizer.json"),
            "input_names": list(input_names(teacher_dir)), "sequence": SEQUENCE, "threads": args.threads}
    results: dict[str, dict[str, Any]] = {e["name"]: {str(b): {"rounds": []} for b in BATCHES} for e in entries}
    stopped: dict[str, str] = {}
    n = len(entries)
    for r in range(args.rounds):
        order = entries[r % n:] + entries[:r % n]  # rotated: no artifact always runs first or after the same one
        for batch in BATCHES:
            for e in order:
                if e["name"] in stopped:
                    continue
                repeats = args.repeats if batch == 1 else args.repeats_large
                spec = {**base, "format": e["runner"], "path": str(e["path"]), "batch": batch,
                        "warmup": args.warmup, "warmup_s": args.warmup_s, "repeats": repeats}
                got = time_in_process(spec)
                cell = results[e["name"]][str(batch)]
                if "median_ms" in got:
                    cell["rounds"].append(round(got["median_ms"], 4))
                    cell.setdefault("open_s", []).append(got["open_s"])
                    if got.get("real_tokens") is not None and got["real_tokens"] != got["tokens"]:
                        cell["padding"] = f"only {got['real_tokens']} of {got['tokens']} tokens real"
                    print(f"  round {r + 1}/{args.rounds} b{batch:<2} {e['name']:<22} {got['median_ms']:9.2f} ms "
                          f"(median of {repeats}; opened in {got['open_s']:.1f} s)", flush=True)
                else:
                    why = got.get("not_measured") or got.get("failed")
                    stopped[e["name"]] = ("not measured: " if "not_measured" in got else "timing failed: ") + why
                    print(f"  {e['name']}: {stopped[e['name']]}", flush=True)
    for name, why in stopped.items():
        results[name] = {"skipped": why}
    for cells in results.values():
        for b in list(cells):
            c = cells[b]
            if isinstance(c, dict) and c.get("rounds"):
                c["median_ms"] = round(statistics.median(c["rounds"]), 4)
                c["min_ms"], c["max_ms"] = min(c["rounds"]), max(c["rounds"])
    return results


# -- the results file -------------------------------------------------------------------------

BUSY_WINDOW_S, BUSY_LIMIT = 2.0, 0.1


def others_busy(window_s: float = BUSY_WINDOW_S) -> float | None:
    """Share of all CPUs busy while this process sleeps for `window_s` (/proc/stat): what others use."""
    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(fields[:8]), fields[3] + fields[4]  # user..steal; idle + iowait
    try:
        t0, i0 = sample()
        time.sleep(window_s)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def _busy(x: float | None) -> str:
    return "an unknown share" if x is None else f"{100 * x:.0f}%"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def host_summary() -> dict[str, Any]:
    from runtime.cpu_features import host_features

    feats = host_features()
    relevant = ("avx", "avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
    out = {"name": cpu_name(), "logical_cpus": os.cpu_count(),
           "features": None if feats is None else [f for f in relevant if f in feats]}
    try:
        from recipes.measure.peak import host_cpu, peak
        host = host_cpu()
        out["physical_cores"] = host.get("physical_cores")
        out["peaks"] = {p: peak(host, p, 2) for p in ("fp32", "bf16", "int8")}
    except ImportError:
        out["peaks"] = None
    return out


def arithmetic(row: dict[str, Any], lat: dict[str, Any], peaks: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per batch: ops, achieved GOPS, floor ms, % of peak, from the report's fields where it has them
    (its ops count and its floor for this artifact's compute precision) and this script's median latency;
    else from the MiniLM-L6 formula (fp32 peak of this host), marked as such."""
    out = {}
    for b in map(str, BATCHES):
        cell = lat.get(b) if isinstance(lat, dict) else None
        if not cell or "median_ms" not in cell:
            continue
        ms = cell["median_ms"]
        if (row.get("ops") or {}).get(b):
            ops, floor, source = row["ops"][b], (row.get("floor_ms") or {}).get(b), "report"
        else:
            macs = int(b) * (L6_LINEAR_MACS + L6_ATTENTION_MACS)
            ops, source = 2 * macs, "formula"
            fp32 = (peaks or {}).get("fp32", {}).get("gops")
            floor = 2 * macs / (fp32 * 1e9) * 1e3 if fp32 else None
        out[b] = {"ops": ops, "gops": ops / (ms / 1e3) / 1e9, "floor_ms": floor,
                  "pct_of_peak": floor / ms if floor else None, "source": source}
    return out


def lat_cell(lat: dict[str, Any], b: str) -> str:
    c = lat.get(b) if isinstance(lat, dict) else None
    if not c or "median_ms" not in c:
        return "n/a"
    if len(c["rounds"]) == 1:
        return f"{c['median_ms']:.2f}"
    return f"{c['median_ms']:.2f} [{c['min_ms']:.2f}-{c['max_ms']:.2f}]"


def med(timing: dict[str, Any], name: str, b: str) -> float | None:
    c = (timing.get(name) or {}).get(b)
    return c.get("median_ms") if isinstance(c, dict) else None


def round_ratios(timing: dict[str, Any], a: str, base: str, b: str) -> list[float]:
    """a / base within each round (both timed in the same round)."""
    ra, rb = (timing.get(a) or {}).get(b, {}), (timing.get(base) or {}).get(b, {})
    if not isinstance(ra, dict) or not isinstance(rb, dict):
        return []
    return [x / y for x, y in zip(ra.get("rounds", []), rb.get("rounds", [])) if y]


def ratio_text(timing: dict[str, Any], a: str, base: str, b: str) -> str:
    ma, mb = med(timing, a, b), med(timing, base, b)
    if ma is None or mb is None:
        return "n/a"
    rr = round_ratios(timing, a, base, b)
    span = f" [{min(rr):.2f}-{max(rr):.2f}]" if len(rr) > 1 else ""
    return f"{ma / mb:.2f}x{span}"


def write_results(out: Path, rows: list[dict[str, Any]], timing: dict[str, Any], report: dict[str, Any],
                  host: dict[str, Any], meta: dict[str, Any], args: argparse.Namespace) -> str:
    peaks = (report.get("compute") or {}).get("peaks") or host.get("peaks")
    feats = host["features"]
    no_fast_int8 = feats is not None and not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(feats)
    teacher = next(r for r in rows if r["name"] == "teacher")
    n_dev = report["eval_examples"]
    versions = ", ".join(f"{p} {_version(p)}" for p in VERSIONS)
    lines = [
        "# CPU runtimes: ONNX Runtime, OpenVINO and PyTorch on SST-2 (issue 11)",
        "",
        f"Machine: {host['name']}, {host['logical_cpus']} logical CPUs"
        + (f" ({host['physical_cores']} physical cores)" if host.get("physical_cores") else "")
        + f"; vector features: {', '.join(feats) if feats else 'unknown'}"
        + (" (no AVX-512, no VNNI, no AMX)" if feats is not None and not any(f.startswith(("avx512", "amx")) for f in feats)
           else "") + f". Toolchain: {versions}; Python {sys.version.split()[0]}.",
        "",
        f"Teacher: all-MiniLM-L6-v2 fine-tuned on {meta['n_train']} SST-2 train sentences (every "
        f"{67349 / meta['n_train']:.1f}-th row of {shown_path(args.data_dir / 'train.tsv')}, bench/sst2.py's subset and "
        f"bench/sst2.toml's fine-tuning), evaluated on {n_dev} SST-2 dev sentences"
        + ("" if meta["n_dev"] >= 872 else " (a subset)") + f". Profile {shown_path(meta['profile'])} "
        f"(device: a Sapphire Rapids class Xeon), built with scons -j2 in {meta['build_s'] / 60:.1f} min (incremental).",
        "",
        f"Latency: batch 1 and 32, sequence {SEQUENCE} of real tokens (eval sentences joined, no padding), {args.threads} "
        f"threads. Each (artifact, batch) ran in its own process (bench/cpu_runtimes.py --worker: "
        "recipes.measure.runners.open_runner, the build's own runners), so no two runtimes' thread pools share a process; "
        f"the processes went round-robin, order rotated each round, for {args.rounds} round{'s' if args.rounds > 1 else ''}. "
        f"A round's figure is the median of {args.repeats} calls at batch 1 and {args.repeats_large} at batch 32 after "
        f"at least {args.warmup} warm-up calls and {args.warmup_s:g} s; the table gives the median over rounds and "
        f"[min-max] of the rounds. Ratios are to `{BASELINE}` (today's fused ONNX Runtime int8), with [min-max] of the "
        f"per-round ratios. Other processes kept {_busy(meta['busy'][0])} of the CPUs busy in the {BUSY_WINDOW_S:g} s "
        f"before the timing and {_busy(meta['busy'][1])} in the {BUSY_WINDOW_S:g} s after it.",
        "",
    ]
    if max((b for b in meta["busy"] if b is not None), default=0.0) > BUSY_LIMIT:
        lines += ["**The host was busy**: other processes took cores from the timed ones (PyTorch's OpenMP threads "
                  "suffer most); rerun on a quiet host before trusting these figures.", ""]
    if no_fast_int8:
        lines += ["**This host is not the device.** It lacks VNNI and AMX, so OpenVINO's int8 kernels run their slow "
                  "AVX2 path, and bf16 cannot be measured at all; the OpenVINO int8 and bf16 figures here say nothing about "
                  "a Sapphire Rapids Xeon. Rerun this script on one for the issue's verdict on them.", ""]
    head = ["artifact", "runtime", "precision", "accuracy", "agreement", "size MB", "b1 ms", "b32 ms",
            f"b1 vs {BASELINE}", f"b32 vs {BASELINE}", "GOPS b1 / b32", "% of peak b1 / b32"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    notes = []
    for r in rows:
        lat = timing.get(r["name"], {})
        ar = r["_arith"]
        gops = " / ".join(f"{ar[b]['gops']:.1f}" if b in ar else "n/a" for b in ("1", "32"))
        pk = " / ".join(pct(ar[b]["pct_of_peak"]) if b in ar else "n/a" for b in ("1", "32"))
        acc = pct(r.get("accuracy")) if r.get("accuracy") is not None else "not measured"
        lines.append("| " + " | ".join([
            f"`{r['name']}`", RUNTIME_NAME.get(r["runtime"], r["runtime"]), r["precision"] + _how(r), acc,
            pct(r.get("agreement")), f"{r['size_bytes'] / 1e6:.1f}", lat_cell(lat, "1"), lat_cell(lat, "32"),
            ratio_text(timing, r["name"], BASELINE, "1"), ratio_text(timing, r["name"], BASELINE, "32"), gops, pk]) + " |")
        said = []
        for why in (lat.get("skipped"), r.get("note"), r.get("not_measured") and f"accuracy {r['not_measured']}"):
            if why and not any(why.split(": ", 1)[-1] in s for s in said):
                said.append(why)
        notes += [f"- `{r['name']}`: {why}" for why in said]
        for b in ("1", "32"):
            if isinstance(lat.get(b), dict) and lat[b].get("padding"):
                notes.append(f"- `{r['name']}` b{b}: {lat[b]['padding']}")
    sources = {ar_b["source"] for r in rows for ar_b in r["_arith"].values()}
    lines += ["", "Accuracy and agreement (share of dev sentences where the artifact predicts the teacher's label) are "
              "the build's (report.json); size is the artifact's files. GOPS = 2 x MACs / this run's median latency; "
              "% of peak = arithmetic floor / median latency, the floor being the MACs at this host's peak for the "
              "precision the artifact multiplies in"
              + (" (the report's ops count and floor, recipes/measure/ops.py and peak.py)" if sources == {"report"} else
                 f"; where the report has no ops fields, the MACs are the MiniLM-L6 formula (per sentence 6 x 128 x "
                 f"(4 x 384^2 + 2 x 384 x 1536) + 6 x 2 x 128^2 x 384 = {(L6_LINEAR_MACS + L6_ATTENTION_MACS) / 1e9:.3f} G) "
                 "and the floor is at this host's fp32 peak") + "."]
    if notes:
        lines += ["", "Notes:", ""] + notes
    if peaks:
        lines += ["", f"Peaks of this host at {args.threads} threads: " + "; ".join(
            f"{p} {v['gops']:.0f} GOPS ({v.get('basis', '')})" if v.get("gops") else f"{p} n/a" for p, v in peaks.items()) + "."]
    lines += ["", "## fp32 IR: from ONNX or from PyTorch", ""] + ir_source(rows, timing)
    lines += ["", "## Where each runtime loses", ""] + losses(rows, timing, no_fast_int8)
    lines += ["", "## Targets from issue 11", ""] + targets(rows, timing, no_fast_int8)
    text = "\n".join(lines).rstrip() + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


def _version(p: str) -> str:
    try:
        return metadata.version(p)
    except metadata.PackageNotFoundError:
        return "not installed"


def _how(r: dict[str, Any]) -> str:
    q = r.get("quantization") or {}
    if r["name"] == "teacher":
        return " (teacher)"
    bits = []
    if r.get("fused"):
        bits.append("fused")
    m = q.get("method")
    if m == "nncf_ptq":
        bits.append("NNCF PTQ" + (", accuracy control" if q.get("accuracy_control", True) else ""))
    elif m == "weight_compression":
        bits.append(f"weights {q.get('mode')}" + (f", group {q['group_size']}" if str(q.get("mode", "")).startswith("int4") else ""))
    elif m:
        bits.append(m)
    if r.get("ir_source"):
        bits.append(f"IR from {r['ir_source']}")
    return f" ({', '.join(bits)})" if bits else ""


def measured(rows: list[dict[str, Any]], timing: dict[str, Any], b: str, pred) -> list[tuple[float, dict[str, Any]]]:
    return sorted(((med(timing, r["name"], b), r) for r in rows if pred(r) and med(timing, r["name"], b) is not None),
                  key=lambda x: x[0])


def ir_source(rows: list[dict[str, Any]], timing: dict[str, Any]) -> list[str]:
    names = {r["name"]: r for r in rows}
    if OV_FP32 not in names or OV_FP32_PT not in names:
        return ["- not compared: one of the two fp32 IRs is missing."]
    out = []
    wins = []
    for b in ("1", "32"):
        a, p = med(timing, OV_FP32, b), med(timing, OV_FP32_PT, b)
        if a is None or p is None:
            out.append(f"- batch {b}: not measured")
            continue
        rr = round_ratios(timing, OV_FP32_PT, OV_FP32, b)
        span = f" (per round {min(rr):.2f}-{max(rr):.2f})" if len(rr) > 1 else ""
        wins.append("pytorch" if p < a else "onnx")
        out.append(f"- batch {b}: from ONNX {a:.2f} ms, from PyTorch {p:.2f} ms: PyTorch's IR takes {p / a:.2f}x{span}")
    acc = [(n, names[n].get("accuracy"), names[n].get("agreement")) for n in (OV_FP32, OV_FP32_PT)]
    out.append("- accuracy / agreement: " + "; ".join(f"`{n}` {pct(x)} / {pct(y)}" for n, x, y in acc))
    if wins and len(set(wins)) == 1:
        close = all(abs((med(timing, OV_FP32_PT, b) or 0) / (med(timing, OV_FP32, b) or 1) - 1) < 0.03 for b in ("1", "32"))
        out.append(f"- Winner: the IR from {'PyTorch' if wins[0] == 'pytorch' else 'ONNX'} at both batches"
                   + (" (by under 3%: within this host's noise, so keep source = \"onnx\", the verified export)" if close else "")
                   + ".")
    elif wins:
        out.append("- No winner: each is faster at one batch size; keep source = \"onnx\" (the verified export).")
    return out


def losses(rows: list[dict[str, Any]], timing: dict[str, Any], no_fast_int8: bool) -> list[str]:
    """Per compute class, each runtime's fastest artifact against the fastest of any runtime."""
    def group(r: dict[str, Any]) -> str:
        q = (r.get("quantization") or {}).get("method")
        if r["precision"] == "int8" and q != "weight_compression":
            return "int8 (weights and activations)"
        if r["precision"] in ("int8", "int4"):
            return "weight-only int8/int4 (float arithmetic)"
        return r["precision"]

    out = []
    for g in dict.fromkeys(group(r) for r in rows):
        for b in ("1", "32"):
            best: dict[str, tuple[float, str]] = {}
            for r in rows:
                m = med(timing, r["name"], b)
                if group(r) == g and m is not None and (r["runtime"] not in best or m < best[r["runtime"]][0]):
                    best[r["runtime"]] = (m, r["name"])
            if len(best) < 2:
                continue
            (fast_ms, fast_name), fast_rt = min((v, k) for k, v in best.items())
            slower = [f"{RUNTIME_NAME.get(rt, rt)} (`{n}`) {ms / fast_ms:.2f}x slower" for rt, (ms, n) in best.items()
                      if rt != fast_rt]
            out.append(f"- {g}, batch {b}: fastest {RUNTIME_NAME.get(fast_rt, fast_rt)} (`{fast_name}`, {fast_ms:.2f} ms); "
                       + "; ".join(slower) + ".")
    if no_fast_int8:
        out.append("- On this host OpenVINO's int8 is expected to lose: without VNNI or AMX its int8 kernels emulate the "
                   "dot products with AVX2 multiply-add pairs, and the device (Sapphire Rapids) is where they pay off.")
    return out or ["- fewer than two runtimes measured."]


def targets(rows: list[dict[str, Any]], timing: dict[str, Any], no_fast_int8: bool) -> list[str]:
    out = []
    names = {r["name"]: r for r in rows}

    def line(ok: bool | None, text: str) -> None:
        out.append(f"- {'MET' if ok else 'MISSED' if ok is not None else 'NOT MEASURED'}: {text}")

    def eligible(r: dict[str, Any]) -> bool:
        return r["name"] != "teacher" and (r.get("agreement") or 0) >= MIN_AGREEMENT

    best = {}
    for b, bound in (("32", TARGET_B32), ("1", TARGET_B1)):
        base = med(timing, BASELINE, b)
        cands = measured(rows, timing, b, eligible)
        if base is None or not cands:
            line(None, f"batch {b}: no baseline or no artifact with agreement >= {pct(MIN_AGREEMENT)} timed")
            continue
        ms, r = cands[0]
        best[b] = r
        rr = round_ratios(timing, r["name"], BASELINE, b)
        span = f", per round {min(rr):.2f}-{max(rr):.2f}" if len(rr) > 1 else ""
        line(ms / base <= bound, f"batch {b}: the fastest artifact at agreement >= {pct(MIN_AGREEMENT)} is `{r['name']}` "
                                 f"({pct(r['agreement'])} agreement, {ms:.2f} ms): {ms / base:.2f}x `{BASELINE}` "
                                 f"({base:.2f} ms{span}); target <= {bound}x")
        per_runtime = {}
        for m, c in cands:
            per_runtime.setdefault(c["runtime"], (m, c))
        out.extend(f"  - fastest {RUNTIME_NAME.get(rt, rt)} artifact at that agreement: `{c['name']}` {m / base:.2f}x"
                   for rt, (m, c) in per_runtime.items())
    if STATIC in names and BASELINE in names:
        parts, oks = [], []
        for b in ("1", "32"):
            s, d = med(timing, STATIC, b), med(timing, BASELINE, b)
            if s is not None and d is not None:
                parts.append(f"batch {b} {s / d:.2f}x ({s:.2f} / {d:.2f} ms)")
                oks.append(s / d <= TARGET_STATIC)
        line(all(oks) if oks else None, f"static ORT int8 `{STATIC}` against dynamic `{BASELINE}`: " + "; ".join(parts)
             + f" (<= {TARGET_STATIC}x); agreement {pct(names[STATIC].get('agreement'))} against "
             f"{pct(names[BASELINE].get('agreement'))}")
    out += ["", "Distance to the arithmetic floor (this host's peak at the artifact's compute precision; the floor "
            "ignores memory traffic and the elementwise ops, so no kernel reaches it):", ""]
    shown = list(dict.fromkeys([BASELINE] + [r["name"] for r in best.values()]))
    for name in shown:
        r = names.get(name)
        if r is None:
            continue
        for b in ("1", "32"):
            a = r["_arith"].get(b)
            if a and a.get("floor_ms"):
                ms = med(timing, name, b)
                out.append(f"- `{name}` batch {b}: {ms:.2f} ms against a floor of {a['floor_ms']:.2f} ms: "
                           f"{ms / a['floor_ms']:.1f}x above it ({pct(a['pct_of_peak'])} of peak, {a['gops']:.1f} GOPS"
                           + (", MACs from the MiniLM-L6 formula, fp32 peak" if a["source"] == "formula" else "") + ")")
    if no_fast_int8:
        out += ["", "These verdicts are for this host, which lacks VNNI and AMX: the issue's targets are for the device "
                "(Sapphire Rapids), where OpenVINO's int8 and bf16 run on AMX; this host's verdict on them is not the "
                "device's."]
    return out


# -- main -------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    ap.add_argument("--train-size", type=int, help="rows of SST-2 train (every k-th row); default 4000 as bench/sst2.py")
    ap.add_argument("--dev-size", type=int, help="rows of SST-2 dev (every k-th); default all 872")
    ap.add_argument("--rounds", type=int, help="round-robin rounds (default 3)")
    ap.add_argument("--repeats", type=int, help="timed calls per process at batch 1 (default 30)")
    ap.add_argument("--repeats-large", type=int, help="timed calls per process at batch 32 (default: repeats / 4, at least 2)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed calls per process first (at least)")
    ap.add_argument("--warmup-s", type=float, default=1.0, help="and at least this many seconds of untimed calls")
    ap.add_argument("--only", help="comma-separated artifact names to time (teacher included); default all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, help="where the data CSVs, generated profiles and raw timings go "
                    "(default bench/work, the CSVs bench/sst2.py writes)")
    ap.add_argument("--out", type=Path, help="results file (default bench/results/cpu_runtimes.md; with --smoke, in the work dir)")
    ap.add_argument("--smoke", action="store_true", help="quick end-to-end check: 200 train / 200 dev rows, NNCF sample "
                    "counts cut to fit, 1 round of 2 calls; a derived profile (build/<stem>_smoke), results in the work dir")
    ap.add_argument("--skip-build", action="store_true", help="time what the last build made (reports must exist)")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return

    smoke = args.smoke
    args.train_size = args.train_size if args.train_size is not None else (200 if smoke else 4000)
    args.dev_size = args.dev_size if args.dev_size is not None else (200 if smoke else 0)
    args.rounds = args.rounds or (1 if smoke else 3)
    args.repeats = args.repeats or (2 if smoke else 30)
    args.repeats_large = args.repeats_large or max(2, args.repeats // 4)
    work = (args.work_dir or WORK).resolve()
    out = (args.out or (work / "cpu_runtimes.md" if smoke else ROOT / "bench" / "results" / "cpu_runtimes.md")).resolve()
    started = time.time()

    train_csv, dev_csv = work / "sst2" / "train.csv", work / "sst2" / "dev.csv"
    n_train = write_subset(args.data_dir / "train.tsv", train_csv, "sentence", args.train_size or None, "train")
    n_dev = write_subset(args.data_dir / "dev.tsv", dev_csv, "content", args.dev_size or None, "dev")

    data = tomllib.loads(PROFILE.read_text(encoding="utf-8"))
    profile = PROFILE
    if smoke:
        data = smoke_profile(data, n_train)
        profile = write_profile(data, work / "profiles" / f"{PROFILE.stem}_smoke.toml",
                                f"smoke check, NNCF/static sample counts cut to fit {n_train} train rows")
    pt_profile = write_profile(pytorch_source_profile(data), work / "profiles" / f"{profile.stem}_ov_pytorch.toml",
                               "only the fp32 IR, converted from PyTorch ([openvino] source = \"pytorch\")")
    if args.skip_build:
        report = json.loads((ROOT / "build" / profile.stem / "report.json").read_text())
        pt_report = json.loads((ROOT / "build" / pt_profile.stem / "report.json").read_text())
    else:
        report = run_build(profile, train_csv, dev_csv)
        pt_report = run_build(pt_profile, train_csv, dev_csv)
    build_s = time.time() - started

    rows = []
    quant = {a["name"]: a.get("quantize") for a in data["artifacts"]}
    fused = {a["name"]: a.get("fuse", False) for a in data["artifacts"]}
    for rep, src in ((report, data.get("openvino", {}).get("source", "onnx")), (pt_report, "pytorch")):
        for r in rep["artifacts"]:
            if r["name"] == "teacher" and rep is pt_report:
                continue
            r = dict(r)
            r["quantization"] = quant.get(r["name"]) or r.get("quantization")
            r["fused"] = fused.get(r["name"], False)
            if r["format"] == "openvino":
                r["ir_source"] = src
            rows.append(r)
    teacher_dir = at_root(report["inputs"]["teacher_dir"])
    entries = []
    for r in rows:
        path = teacher_dir if r["name"] == "teacher" else at_root(r.get("path"))
        if path is None or r["format"] not in FORMAT_RUNNER:
            continue
        if args.only and r["name"] not in args.only.split(","):
            continue
        entries.append({"name": r["name"], "runner": FORMAT_RUNNER[r["format"]], "path": path})

    print("\nFrom the reports (accuracy, agreement, size; the build's own ops fields where present):", flush=True)
    for r in rows:
        ops = {k: r.get(k) for k in ("compute_precision", "ops", "gops", "peak_gops", "floor_ms", "pct_of_peak") if r.get(k)}
        print(f"  {r['name']:<22} {r['format']:<9} {r['precision']:<5} acc {pct(r.get('accuracy')):>6} "
              f"agree {pct(r.get('agreement')):>6} {r['size_bytes'] / 1e6:7.1f} MB  "
              + (json.dumps(ops) if ops else "(no ops fields in the report)"), flush=True)

    print(f"\nTiming {len(entries)} artifacts x {len(BATCHES)} batches x {args.rounds} rounds, one process each:", flush=True)
    busy_before = others_busy()
    timing = time_all(entries, report, args)
    busy_after = others_busy()
    host = host_summary()
    for r in rows:
        r["_arith"] = arithmetic(r, timing.get(r["name"], {}), (report.get("compute") or {}).get("peaks") or host.get("peaks"))
    raw = work / ("cpu_runtimes_smoke.json" if smoke else "cpu_runtimes.json")
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps({"timing": timing, "host": host, "args": {k: str(v) for k, v in vars(args).items()}},
                              indent=1), encoding="utf-8")
    meta = {"n_train": n_train, "n_dev": n_dev, "profile": profile, "build_s": build_s, "busy": (busy_before, busy_after)}
    print("\n" + write_results(out, rows, timing, report, host, meta, args))
    print(f"cpu_runtimes: wrote {out} and {raw} ({(time.time() - started) / 60:.1f} min in all)")


if __name__ == "__main__":
    main()
