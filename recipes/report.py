"""The target's report: accuracy, agreement, size and latency against the teacher.

Writes report.json (for tools) and report.md (for people), then enforces the
profile's quality gates: a failing gate fails the build, after the report
has been written with the failure marked, so the numbers can be read.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import GateError
from .fsutil import atomic_path, write_json

MB = 1_000_000


def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def check_gates(row: dict[str, Any], gates: dict[str, Any], teacher_accuracy: float, largest_batch: str) -> list[str]:
    """Failed gates of one artifact, each 'measure value < or > limit'."""
    failures = []
    if gates.get("min_accuracy_ratio") is not None and teacher_accuracy > 0:
        ratio = row["accuracy"] / teacher_accuracy
        if ratio < gates["min_accuracy_ratio"]:
            failures.append(f"accuracy {ratio:.3f}x teacher < min_accuracy_ratio {gates['min_accuracy_ratio']}")
    if gates.get("min_agreement") is not None and row.get("agreement") is not None:
        if row["agreement"] < gates["min_agreement"]:
            failures.append(f"agreement {row['agreement']:.3f} < min_agreement {gates['min_agreement']}")
    if gates.get("max_size_mb") is not None and row["size_bytes"] / MB > gates["max_size_mb"]:
        failures.append(f"size {row['size_bytes'] / MB:.1f} MB > max_size_mb {gates['max_size_mb']}")
    latency = row.get("latency_ms") or {}
    if gates.get("max_latency_ms") is not None and "1" in latency and latency["1"] > gates["max_latency_ms"]:
        failures.append(f"batch-1 latency {latency['1']:.2f} ms > max_latency_ms {gates['max_latency_ms']}")
    if gates.get("max_batch_latency_ms") is not None and largest_batch in latency and latency[largest_batch] > gates["max_batch_latency_ms"]:
        failures.append(f"batch-{largest_batch} latency {latency[largest_batch]:.2f} ms > max_batch_latency_ms {gates['max_batch_latency_ms']}")
    return failures


def build_report(target: str, profile_source: str, teacher: dict[str, Any], artifacts: list[dict[str, Any]],
                 latency_path: str) -> dict[str, Any]:
    latency = _load(latency_path)
    batches = [str(b) for b in sorted(int(b) for b in next(iter(latency["median_ms"].values())))]
    largest = batches[-1]
    t_metrics = _load(teacher["metrics"])
    t_latency = latency["median_ms"].get("teacher", {})
    rows = [{"name": "teacher", "format": teacher["format"], "precision": "fp32", "runtime": "pytorch",
             **t_metrics, "agreement": 1.0, "max_abs_logit_diff": 0.0, "latency_ms": t_latency,
             "speedup": {b: 1.0 for b in t_latency}, "gates": [], "built": True}]
    reference_size = next((_load(a["metrics"])["size_bytes"] for a in artifacts
                           if a["format"] == "onnx" and a["precision"] == "fp32"), t_metrics["size_bytes"])
    failures = []
    for art in artifacts:
        m = _load(art["metrics"])
        lat = latency["median_ms"].get(art["name"], {})
        row = {"name": art["name"], "format": art["format"], "precision": art["precision"], "runtime": art["runtime"],
               **m, "latency_ms": lat, "built": True,
               "size_vs_fp32": round(m["size_bytes"] / reference_size, 4),
               "speedup": {b: round(t_latency[b] / lat[b], 3) for b in lat if b in t_latency and lat[b] > 0}}
        row["gates"] = check_gates(row, art["gates"], t_metrics["accuracy"], largest)
        failures += [f"{art['name']}: {g}" for g in row["gates"]]
        rows.append(row)
    return {
        "target": target,
        "profile": profile_source,
        "eval_examples": t_metrics["examples"],
        "latency": {k: latency[k] for k in ("threads", "sequence_length", "repeats", "warmup")},
        "batches": batches,
        "artifacts": rows,
        "gate_failures": failures,
    }


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def render_markdown(report: dict[str, Any]) -> str:
    b = report["batches"]
    lat = report["latency"]
    lines = [
        f"# edgesmith report: {report['target']}",
        "",
        f"Profile `{report['profile']}`; {report['eval_examples']} eval examples. Latency: median of "
        f"{lat['repeats']} runs after {lat['warmup']} warm-up runs, sequence length {lat['sequence_length']}, "
        f"{lat['threads']} threads, all artifacts timed side by side in interleaved rounds on the build host.",
        "",
        "| artifact | format | precision | accuracy | agreement | max abs logit diff | size MB | gzip MB | size vs fp32 | "
        + " | ".join(f"b{x} ms" for x in b) + " | " + " | ".join(f"speed-up b{x}" for x in b) + " | gates |",
        "|" + "---|" * (9 + 2 * len(b) + 1),
    ]
    for r in report["artifacts"]:
        cells = [
            r["name"], r["format"], r["precision"], _pct(r["accuracy"]), _pct(r.get("agreement")),
            f"{r.get('max_abs_logit_diff', 0.0):.4f}", f"{r['size_bytes'] / MB:.1f}", f"{r['compressed_bytes'] / MB:.1f}",
            f"{r['size_vs_fp32']:.2f}" if "size_vs_fp32" in r else "-",
        ]
        cells += [f"{r['latency_ms'][x]:.2f}" if x in r["latency_ms"] else "n/a" for x in b]
        cells += [f"{r['speedup'][x]:.2f}x" if x in r["speedup"] else "n/a" for x in b]
        cells.append("FAIL: " + "; ".join(r["gates"]) if r["gates"] else ("-" if r["name"] == "teacher" else "pass"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Agreement: share of eval examples where the artifact predicts the teacher's label. "
              "Size vs fp32: against the fp32 ONNX model. Speed-up: teacher latency (PyTorch) / artifact latency.", ""]
    if report["gate_failures"]:
        lines += ["## Gate failures", ""] + [f"- {f}" for f in report["gate_failures"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def report_stage(target: str, profile_source: str, teacher: dict, artifacts: list[dict], latency: str,
                 out_json: str, out_md: str) -> None:
    report = build_report(target, profile_source, teacher, artifacts, latency)
    write_json(Path(out_json), report)
    with atomic_path(Path(out_md)) as tmp:
        tmp.write_text(render_markdown(report), encoding="utf-8")
    if report["gate_failures"]:
        first = report["gate_failures"][0]
        more = f" (and {len(report['gate_failures']) - 1} more)" if len(report["gate_failures"]) > 1 else ""
        raise GateError(f"{profile_source}: quality gate failed: {first}{more}; see {out_md}")
