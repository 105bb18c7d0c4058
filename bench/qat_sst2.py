"""int8 that keeps its accuracy (issue 12), on SST-2: QAT against PTQ static and dynamic int8,
accuracy-aware static int8, parity of one QAT model across runtimes, and movement pruning
against FFN and magnitude pruning at matched parameter counts.

1. Writes the SST-2 subset exactly as bench/sst2.py does (the same rows), so the fine-tuned
   teacher is the one bench/sst2.py's and bench/cpu_runtimes.py's builds made.
2. Builds bench/qat_sst2.toml with scons (QAT, pruning and every int8 variant are ordinary
   cached stages); its report gives accuracy, agreement, size and cross-format parity.
3. Times the teacher (PyTorch) and every artifact at batch 1 and 32, sequence 128, 2 threads,
   each (artifact, batch) in its own process, round-robin over 3 rounds (bench/cpu_runtimes.py's
   worker and schedule). NNCF's models (bench/nncf, its own venv) join the same rounds when
   bench/work/nncf holds them, so every latency ratio is taken side by side in one run.
4. Writes bench/results/qat.md (and the raw numbers to bench/work/qat_sst2.json).

Usage: .venv/bin/python bench/qat_sst2.py [--skip-build] [--rounds 3] [--repeats 20]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from cpu_runtimes import at_root, host_summary, others_busy, run_build, time_all  # noqa: E402
from sst2 import WORK, cpu_name, shown_path, write_subset  # noqa: E402

PROFILE = ROOT / "bench" / "qat_sst2.toml"
PRUNE_PROFILE = ROOT / "bench" / "prune_sst2.toml"
BATCHES = ("1", "32")
FORMAT_RUNNER = {"onnx": "onnx", "pte": "pte", "torch": "torch", "openvino": "openvino"}
BASELINE = "int8_dynamic"
INT8 = ["fp32", "int8_dynamic", "int8_static", "int8_static_aa", "int8_static_trt_qdq", "int8_static_trt_qdq_aa",
        "qat_onnx", "qat_pte"]
PRUNED = [("ffn_half_fp32", "movement_ffn_half_fp32", "half of every FFN removed (structured)"),
          ("magnitude_half_fp32", "movement_half_fp32", "half of the encoder's Linear weights zeroed (unstructured)")]
QAT_AGREEMENT, QAT_ACCURACY_RATIO, AA_AGREEMENT = 0.98, 0.995, 0.97
VERSIONS = ("torch", "torchao", "executorch", "onnxruntime", "onnx", "transformers", "nncf", "openvino")


def nncf_entries(work: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """NNCF's models from bench/nncf's run (its own venv), to time in the same rounds, and its results."""
    results_path = ROOT / "bench" / "results" / "nncf_peer.json"
    if not results_path.is_file():
        return [], {}
    peer = json.loads(results_path.read_text())
    entries = []
    for model in peer.get("models", []):
        path = model.get("path")
        runner = {"onnxruntime": "onnx", "openvino": "openvino"}.get(model.get("runtime"))
        if path and runner and (ROOT / path).exists():
            entries.append({"name": f"nncf_{model['name']}", "runner": runner, "path": ROOT / path})
    return entries, peer


def median_cell(timing: dict[str, Any], name: str, b: str) -> float | None:
    cell = (timing.get(name) or {}).get(b)
    return cell.get("median_ms") if isinstance(cell, dict) else None


def ratio(timing: dict[str, Any], name: str, base: str, b: str) -> str:
    """Median of per-round ratios (each round's two processes ran minutes apart at most), and its range."""
    a = (timing.get(name) or {}).get(b, {}).get("rounds") or []
    c = (timing.get(base) or {}).get(b, {}).get("rounds") or []
    pairs = [x / y for x, y in zip(a, c) if y]
    if not pairs:
        return "n/a"
    return f"{statistics.median(pairs):.2f}x ({min(pairs):.2f}-{max(pairs):.2f})"


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def ms(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def float_nodes(row: dict[str, Any]) -> dict[str, Any] | None:
    """The accuracy-aware record of a static int8 artifact (quantize.json beside its model)."""
    path = at_root(row.get("path"))
    record = path.parent / "quantize.json" if path else None
    if record is None or not record.is_file():
        return None
    return json.loads(record.read_text()).get("accuracy_aware")


def model_record(report: dict[str, Any], model: str) -> dict[str, Any]:
    return (report.get("models", {}).get(model) or {}).get("record") or {}


def parameters(report: dict[str, Any], row: dict[str, Any]) -> str:
    rec = model_record(report, row["model"])
    if "parameters_after" in rec:
        nonzero = None
        if rec.get("encoder_linear_sparsity") is not None:
            nonzero = f"; {100 * (1 - rec['encoder_linear_sparsity']):.0f}% of encoder Linear weights non-zero"
        return f"{rec['parameters_after'] / 1e6:.2f} M{nonzero or ''}"
    return "n/a"


def write_results(out: Path, report: dict[str, Any], timing: dict[str, Any], peer: dict[str, Any],
                  meta: dict[str, Any]) -> str:
    rows = {r["name"]: r for r in report["artifacts"]}
    teacher = rows["teacher"]
    t_acc = teacher["accuracy"]
    host = meta["host"]
    lines = [
        "# int8 that keeps its accuracy: QAT, accuracy-aware static int8, movement pruning (issue 12)",
        "",
        f"Written by `bench/qat_sst2.py` on {time.strftime('%Y-%m-%d')}. Profile `{shown_path(PROFILE)}`; teacher: "
        f"all-MiniLM-L6-v2 fine-tuned on a {meta['n_train']}-sentence SST-2 train subset (bench/sst2.py's), evaluated "
        f"on the {report['eval_examples']} SST-2 dev sentences.",
        "",
        f"Machine: {host['name']}, {host.get('physical_cores') or '?'} cores, CPU features "
        f"{', '.join(host.get('features') or []) or 'unknown'} (no VNNI, no AMX: int8 GEMMs run on AVX2). "
        f"Latency: sequence 128 (padded), {meta['threads']} threads, each (artifact, batch) in its own process, "
        f"{meta['rounds']} round-robin rounds; the figure is the median over rounds of each process's median "
        f"({meta['repeats']} calls at batch 1, {meta['repeats_large']} at batch 32). Ratios are medians of per-round "
        "ratios (range in brackets). Other load on the CPUs while timing (share busy, before/after): "
        f"{meta['busy'][0]:.2f}/{meta['busy'][1]:.2f}." if None not in meta["busy"] else "",
        "",
        "Toolchain: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        "",
        "No NVIDIA GPU was lent to this session: TensorRT (and the nf4 checkpoint on CUDA with bitsandbytes, the fp16 "
        "PyTorch model on CUDA) did not run. TensorRT cannot be installed on these machines either; the QDQ ONNX a "
        "Jetson builds its engine from is the `qat_onnx` file, measured here on ONNX Runtime's CPU provider.",
        "",
        "## QAT against PTQ int8 (ONNX Runtime unless noted)",
        "",
        "| artifact | how | accuracy | vs teacher | agreement | size MB | b1 ms | b32 ms | b1 vs int8_dynamic | "
        "b32 vs int8_dynamic |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| teacher | PyTorch fp32 | {pct(t_acc)} | 1.000 | 100.0% | {teacher['size_bytes'] / 1e6:.1f} | "
        f"{ms(median_cell(timing, 'teacher', '1'))} | {ms(median_cell(timing, 'teacher', '32'))} | "
        f"{ratio(timing, 'teacher', BASELINE, '1')} | {ratio(timing, 'teacher', BASELINE, '32')} |",
    ]
    how = {
        "fp32": "fp32 ONNX",
        "int8_dynamic": "PTQ dynamic, fused (targets/cpu.toml's)",
        "int8_static": "PTQ static QDQ, weight inputs, fused + QAttention (targets/cpu.toml's)",
        "int8_static_aa": "the same, held to >= 98.5% agreement (accuracy-aware)",
        "int8_static_trt_qdq": "PTQ static QDQ, TensorRT's placement (int8 symmetric, every MatMul)",
        "int8_static_trt_qdq_aa": "the same, held to >= 97% agreement (accuracy-aware)",
        "qat_onnx": "QAT int8 QDQ (every Linear: in, weight, out; symmetric)",
        "qat_pte": "the same QAT program on ExecuTorch (XNNPACK)",
    }
    for name in INT8:
        r = rows.get(name)
        if r is None:
            continue
        lines.append(
            f"| {name} | {how[name]} | {pct(r['accuracy'])} | {r['accuracy'] / t_acc:.3f} | {pct(r['agreement'])} | "
            f"{r['size_bytes'] / 1e6:.1f} | {ms(median_cell(timing, name, '1'))} | {ms(median_cell(timing, name, '32'))} | "
            f"{ratio(timing, name, BASELINE, '1')} | {ratio(timing, name, BASELINE, '32')} |")
    for model in peer.get("models", []):
        name = f"nncf_{model['name']}"
        acc = model.get("accuracy")
        lines.append(
            f"| {name} | NNCF {model.get('how', model['name'])} on {model.get('runtime')} (peer venv) | {pct(acc)} | "
            f"{acc / t_acc:.3f} | {pct(model.get('agreement'))} | {(model.get('size_bytes') or 0) / 1e6:.1f} | "
            f"{ms(median_cell(timing, name, '1'))} | {ms(median_cell(timing, name, '32'))} | "
            f"{ratio(timing, name, BASELINE, '1')} | {ratio(timing, name, BASELINE, '32')} |" if acc is not None else
            f"| {name} | NNCF {model.get('how', model['name'])}: {model.get('error', 'no result')} | | | | | | | | |")

    lines += ["", "### Targets", ""]
    qat = rows.get("qat_onnx")
    if qat:
        ok = qat["agreement"] >= QAT_AGREEMENT and qat["accuracy"] / t_acc >= QAT_ACCURACY_RATIO
        lines.append(f"- QAT static QDQ int8: agreement {pct(qat['agreement'])} (target >= {pct(QAT_AGREEMENT)}), accuracy "
                     f"{qat['accuracy'] / t_acc:.3f}x the teacher's (target >= {QAT_ACCURACY_RATIO}): "
                     f"**{'met' if ok else 'missed'}**.")
    for name in ("int8_static_trt_qdq_aa", "int8_static_aa"):
        r = rows.get(name)
        if r:
            lines.append(f"- accuracy-aware static int8 `{name}`: agreement {pct(r['agreement'])} on dev "
                         f"(target >= {pct(AA_AGREEMENT)}): **{'met' if r['agreement'] >= AA_AGREEMENT else 'missed'}**.")

    lines += ["", "### What the accuracy-aware option kept float", ""]
    for name in ("int8_static_trt_qdq_aa", "int8_static_aa"):
        rec = float_nodes(rows.get(name, {}))
        if not rec:
            continue
        kept = rec.get("float_nodes") or []
        lines.append(f"- `{name}`: bound {rec['min_agreement']} on {rec['holdout_samples']} held-out train sentences; all "
                     f"quantized: {pct(rec['agreement_all_quantized'])}, shipped: {pct(rec['agreement'])} with {len(kept)} "
                     f"node(s) float; tries {[(t['float_nodes'], round(t['agreement'], 4)) for t in rec.get('tries', [])]}.")
        lines += [f"  - {k['node']} ({k['op_type']}): {k['sensitivity']['value']:.1f} {k['sensitivity']['unit']}" for k in kept]

    parity = report.get("parity") or {}
    if parity:
        lines += ["", "## Parity of the one QAT program across runtimes", ""]
        for model, group in parity.items():
            lines += [f"| `{model}` | | agreement | max abs logit diff |", "|---|---|---|---|"]
            lines += [f"| {p['a']} | {p['b']} | {pct(p['agreement'])} | {p['max_abs_logit_diff']:.4f} |" for p in group["pairs"]]
    qrec = model_record(report, "qat")
    if qrec:
        lines += ["", f"QAT stage: {qrec.get('library')}, placement {qrec.get('placement')}, {qrec.get('quantized_linears')} "
                  f"Linear layers, {qrec.get('steps')} steps on {qrec.get('train_examples')} sentences, activation ranges "
                  f"frozen at step {qrec.get('observers_frozen_at_step')}; per-epoch losses {qrec.get('history')}."]

    lines += ["", "## Movement pruning against FFN and magnitude pruning, matched parameter counts", "",
              "Both members of a pair keep the same number of parameters (structured) or non-zero weights (unstructured), "
              "and train against the teacher for the same number of epochs (movement: 1 epoch of score and weight "
              "training; the others: pruning, then 1 epoch of recovery), on the same 4000 sentences. fp32 ONNX on "
              "ONNX Runtime.", "",
              "| artifact | what | parameters | accuracy | agreement | b1 ms | b32 ms | b1 vs teacher fp32 ONNX | b32 vs teacher fp32 ONNX |",
              "|---|---|---|---|---|---|---|---|---|"]
    for a, b, what in PRUNED:
        for name in (a, b):
            r = rows.get(name)
            if r is None:
                continue
            lines.append(f"| {name} | {what} | {parameters(report, r)} | {pct(r['accuracy'])} | {pct(r['agreement'])} | "
                         f"{ms(median_cell(timing, name, '1'))} | {ms(median_cell(timing, name, '32'))} | "
                         f"{ratio(timing, name, 'fp32', '1')} | {ratio(timing, name, 'fp32', '32')} |")
    lines += ["", "Unstructured sparsity (magnitude and movement) leaves the matrices dense: ONNX Runtime's kernels "
              "multiply the zeros, so those rows run at the fp32 model's speed; they compress better, they are not faster.",
              ""]
    if peer:
        lines += ["## Peer: NNCF", "", "From bench/nncf (its own venv; see bench/results/nncf_peer.md for its method). "
                  "Its latencies above were taken in the same rounds as ours."]
        for note in peer.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")
    lines += [f"Build {meta['build_s'] / 60:.1f} min (cached stages reused), timing {meta['timing_s'] / 60:.1f} min.", ""]
    text = "\n".join(lines)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "sst2")
    ap.add_argument("--train-size", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--repeats-large", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "qat.md")
    ap.add_argument("--skip-build", action="store_true", help="time what the last build made (its report must exist)")
    ap.add_argument("--pruning", action="store_true", help="also build bench/prune_sst2.toml (movement against FFN "
                    "and magnitude pruning) and time its artifacts in the same rounds")
    args = ap.parse_args()
    started = time.time()
    train_csv, dev_csv = WORK / "sst2" / "train.csv", WORK / "sst2" / "dev.csv"
    n_train = write_subset(args.data_dir / "train.tsv", train_csv, "sentence", args.train_size, "train")
    write_subset(args.data_dir / "dev.tsv", dev_csv, "content", None, "dev")
    if args.skip_build:
        report = json.loads((ROOT / "build" / PROFILE.stem / "report.json").read_text())
    else:
        report = run_build(PROFILE, train_csv, dev_csv)
    if args.pruning:
        pruned = (json.loads((ROOT / "build" / PRUNE_PROFILE.stem / "report.json").read_text()) if args.skip_build
                  else run_build(PRUNE_PROFILE, train_csv, dev_csv))
        # Same teacher and eval set: its rows join the table (its fp32 ONNX is the same file as ours).
        known = {r["name"] for r in report["artifacts"]}
        report["artifacts"] += [r for r in pruned["artifacts"] if r["name"] not in known]
        report.setdefault("models", {}).update(pruned.get("models", {}))
    build_s = time.time() - started

    teacher_dir = at_root(report["inputs"]["teacher_dir"])
    entries = [{"name": "teacher", "runner": "torch", "path": teacher_dir}]
    for r in report["artifacts"]:
        path = at_root(r.get("path"))
        if r["name"] != "teacher" and path is not None and r["format"] in FORMAT_RUNNER:
            entries.append({"name": r["name"], "runner": FORMAT_RUNNER[r["format"]], "path": path})
    peer_entries, peer = nncf_entries(WORK)
    entries += peer_entries
    print(f"Timing {len(entries)} artifacts x 2 batches x {args.rounds} rounds, one process each:", flush=True)
    timed = time.time()
    busy_before = others_busy()
    timing = time_all(entries, report, args)
    busy = (busy_before, others_busy())
    versions = {}
    for name in VERSIONS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    meta = {"n_train": n_train, "build_s": build_s, "timing_s": time.time() - timed, "busy": busy, "host": host_summary(),
            "threads": args.threads, "rounds": args.rounds, "repeats": args.repeats, "repeats_large": args.repeats_large,
            "versions": versions}
    raw = WORK / "qat_sst2.json"
    raw.write_text(json.dumps({"timing": timing, "meta": {k: v for k, v in meta.items() if k != "host"}}, indent=1,
                              default=str))
    print(write_results(args.out, report, timing, peer, meta))
    print(f"qat_sst2: wrote {shown_path(args.out)} and {shown_path(raw)} ({(time.time() - started) / 60:.1f} min in all; "
          f"{cpu_name()})")


if __name__ == "__main__":
    main()
