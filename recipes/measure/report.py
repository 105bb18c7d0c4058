"""The target's report: accuracy, agreement, size and latency against the teacher.

Writes report.json (for tools), report.md and report.html (for people, the
HTML with a plot of accuracy against latency and size), then enforces the
profile's quality gates: a failing gate fails the build, after the report
has been written with the failure marked, so the numbers can be read.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from recipes.errors import GateError
from recipes.fsutil import atomic_path, write_json
from recipes.params import bounded
from recipes.wiring.stage import Stage


@dataclass(frozen=True)
class Gates:
    # Accuracy of the artifact divided by the teacher's accuracy.
    min_accuracy_ratio: Optional[float] = bounded(None, min=0.0, max=10.0)
    # Fraction of eval examples where the artifact predicts the teacher's label.
    min_agreement: Optional[float] = bounded(None, min=0.0, max=1.0)
    max_size_mb: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e7)
    # Median latency at batch 1 and at the largest evaluation batch, where the
    # artifact can run on the build host.
    max_latency_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    max_batch_latency_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    # The teacher's own eval accuracy (absolute): every other gate is relative to the teacher,
    # so nothing else catches a teacher that learned nothing. Profile-wide [gates] only.
    min_teacher_accuracy: Optional[float] = bounded(None, min=0.0, max=1.0)

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


def build_note(details: dict[str, Any]) -> str:
    """What the report must say about how an artifact was made (from its stage record)."""
    notes = []
    if details.get("optimized") is False:
        notes.append(f"not optimized for mobile ({details.get('reason') or 'no XNNPACK in this torch'})")
    delegation = details.get("delegation")
    if delegation:
        notes.append(f"XNNPACK runs {delegation['delegated_nodes']} of "
                     f"{delegation['delegated_nodes'] + delegation['non_delegated_nodes']} graph nodes")
    return "; ".join(notes)


def model_summary(record: dict[str, Any]) -> str:
    """One line on what a distillation or pruning stage did, from its record."""
    if "method" in record:  # pruning.json
        parts = [f"{record['parameters_after']:,} of {record['parameters_before']:,} parameters"]
        if record["method"] == "magnitude":
            parts.append(f"{100 * record['encoder_linear_sparsity']:.1f}% of encoder weights zero "
                         f"({100 * record['model_sparsity']:.1f}% of all); dense kernels do not skip zeros")
        elif record["method"] == "heads":
            parts.append(f"{record['heads_removed']} of {record['heads_total']} heads removed; heads per layer "
                         f"{record['heads_per_layer']}")
        elif record["method"] == "ffn":
            parts.append(f"FFN width {record['intermediate_size_before']} -> {record['intermediate_size_after']}")
        return "; ".join(parts)
    if "layer_ids" in record:  # training.json of a distillation
        last = record["history"][-1] if record.get("history") else {}
        n = len(record["layer_ids"])
        return (f"{n} layer{'s' if n != 1 else ''} (from base layers {record['layer_ids']}), "
                f"{record['parameters']:,} parameters, {record['steps']} steps, final loss {last.get('loss', 'n/a')}")
    return ""


def build_report(target: str, profile_source: str, teacher: dict[str, Any], artifacts: list[dict[str, Any]],
                 latency_path: str, models: dict[str, str] | None = None) -> dict[str, Any]:
    latency = _load(latency_path)
    batches = [str(b) for b in sorted(int(b) for b in next(iter(latency["median_ms"].values())))]
    largest = batches[-1]
    t_metrics = _load(teacher["metrics"])
    t_latency = latency["median_ms"].get("teacher", {})
    rows = [{"name": "teacher", "format": teacher["format"], "precision": "fp32", "runtime": "pytorch",
             "model": "teacher", "lineage": "teacher",
             **t_metrics, "agreement": 1.0, "max_abs_logit_diff": 0.0, "latency_ms": t_latency,
             "speedup": {b: 1.0 for b in t_latency}, "gates": [], "built": True}]
    # Sizes are compared with the teacher's fp32 ONNX model when the target
    # builds one, else with the teacher's checkpoint (nearly the same bytes).
    reference = next((a for a in artifacts if a["format"] == "onnx" and a["precision"] == "fp32"
                      and a.get("model", "teacher") == "teacher"), None)
    reference_size = _load(reference["metrics"])["size_bytes"] if reference else t_metrics["size_bytes"]
    reference_name = f"{reference['name']} (the teacher's fp32 ONNX)" if reference else "the teacher's fp32 checkpoint"
    failures, warnings = teacher_checks(teacher, t_metrics)
    for art in artifacts:
        m = _load(art["metrics"])
        lat = latency["median_ms"].get(art["name"], {})
        row = {"name": art["name"], "format": art["format"], "precision": art["precision"], "runtime": art["runtime"],
               "model": art.get("model", "teacher"), "lineage": art.get("lineage", "teacher"), "path": art.get("path"),
               "note": art.get("note", ""), **m, "latency_ms": lat, "built": True,
               "size_vs_fp32": round(m["size_bytes"] / reference_size, 4),
               "speedup": {b: round(t_latency[b] / lat[b], 3) for b in lat if b in t_latency and lat[b] > 0}}
        if art.get("details"):
            row["build"] = _load(art["details"])
            row["note"] = "; ".join(n for n in (row["note"], build_note(row["build"])) if n)
        row["gates"] = check_gates(row, art["gates"], t_metrics["accuracy"], largest)
        failures += [f"{art['name']}: {g}" for g in row["gates"]]
        rows.append(row)
    return {
        "target": target,
        "profile": profile_source,
        "eval_examples": t_metrics["examples"],
        # Where the numbers came from, so tools (bench/sst2.py) can compare more artifacts on the same inputs.
        "inputs": {"teacher_dir": teacher.get("model_dir"), "data_dir": teacher.get("data_dir"),
                   "teacher_eval_dir": str(Path(teacher["metrics"]).parent)},
        "latency": {k: latency[k] for k in ("threads", "sequence_length", "repeats", "warmup")},
        "batches": batches,
        "size_reference": reference_name,
        "models": {name: {"record": _load(path), "summary": model_summary(_load(path))} for name, path in (models or {}).items()},
        "artifacts": rows,
        "gate_failures": failures,
        "warnings": warnings,
    }


def teacher_checks(teacher: dict[str, Any], t_metrics: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The teacher's absolute gate, and loud warnings: a teacher no better than the majority class, the data stage's warnings."""
    failures, warnings = [], []
    floor = teacher.get("min_accuracy")
    if floor is not None and t_metrics["accuracy"] < floor:
        failures.append(f"teacher: accuracy {t_metrics['accuracy']:.3f} < min_teacher_accuracy {floor}")
    majority = t_metrics.get("majority_accuracy")
    if majority is not None and t_metrics["accuracy"] <= majority:
        warnings.append(f"the teacher scores {t_metrics['accuracy']:.3f}, no better than always answering the most frequent "
                        f"label ({majority:.3f}): it learned nothing, and every gate relative to it is meaningless; check the "
                        "data and stages.finetune (epochs, learning_rate)")
    data_json = Path(teacher["data_dir"]) / "data.json" if teacher.get("data_dir") else None
    if data_json is not None and data_json.is_file():
        warnings += [str(w) for w in _load(str(data_json)).get("warnings", [])]
    return failures, warnings


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
        "| artifact | model | format | precision | accuracy | agreement | max abs logit diff | size MB | gzip MB | size vs fp32 | "
        + " | ".join(f"b{x} ms" for x in b) + " | " + " | ".join(f"speed-up b{x}" for x in b) + " | gates |",
        "|" + "---|" * (10 + 2 * len(b) + 1),
    ]
    lines[2:2] = [f"**WARNING: {w}**\n" for w in report.get("warnings", [])]
    for r in report["artifacts"]:
        cells = [
            r["name"], r["model"], r["format"], r["precision"], _pct(r["accuracy"]), _pct(r.get("agreement")),
            f"{r.get('max_abs_logit_diff', 0.0):.4f}", f"{r['size_bytes'] / MB:.1f}", f"{r['compressed_bytes'] / MB:.1f}",
            f"{r['size_vs_fp32']:.2f}" if "size_vs_fp32" in r else "-",
        ]
        cells += [f"{r['latency_ms'][x]:.2f}" if x in r["latency_ms"] else "n/a" for x in b]
        cells += [f"{r['speedup'][x]:.2f}x" if x in r["speedup"] else "n/a" for x in b]
        cells.append("FAIL: " + "; ".join(r["gates"]) if r["gates"] else ("-" if r["name"] == "teacher" else "pass"))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Agreement: share of eval examples where the artifact predicts the teacher's label. "
              f"Size vs fp32: against {report['size_reference']}. Speed-up: teacher latency (PyTorch) / artifact latency.", ""]
    notes = [f"- `{r['name']}`: {r['note']}" for r in report["artifacts"] if r.get("note")]
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    lines += ["## Models", ""] + [f"- `{m}`: {lineage}" + _summary(report, m) for m, lineage in _lineages(report)] + [""]
    if report["gate_failures"]:
        lines += ["## Gate failures", ""] + [f"- {f}" for f in report["gate_failures"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _summary(report: dict[str, Any], model: str) -> str:
    summary = report.get("models", {}).get(model, {}).get("summary")
    return f" ({summary})" if summary else ""


def _lineages(report: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for r in report["artifacts"]:
        seen.setdefault(r["model"], r["lineage"])
    return list(seen.items())


def plot_png(report: dict[str, Any], dst: Path) -> None:
    """Accuracy against batch-1 latency and against size, one point per artifact."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build hosts
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_size) = plt.subplots(1, 2, figsize=(11, 4.5), dpi=100)
    for r in report["artifacts"]:
        acc = 100 * r["accuracy"]
        marker = "*" if r["name"] == "teacher" else ("x" if r["gates"] else "o")
        if "1" in r["latency_ms"]:
            ax_lat.scatter(r["latency_ms"]["1"], acc, marker=marker, s=60)
            ax_lat.annotate(r["name"], (r["latency_ms"]["1"], acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax_size.scatter(r["size_bytes"] / MB, acc, marker=marker, s=60)
        ax_size.annotate(r["name"], (r["size_bytes"] / MB, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax_lat.set_xlabel("batch-1 latency (ms, build host)")
    ax_size.set_xlabel("size (MB)")
    for ax in (ax_lat, ax_size):
        ax.set_ylabel("accuracy (%)")
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{report['target']}: accuracy vs latency and size ({report['eval_examples']} eval examples; x = gate failed)")
    fig.tight_layout()
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def render_html(report: dict[str, Any], png: Path) -> str:
    """A self-contained page: the plot inlined, then the markdown table as HTML."""
    import base64
    import html

    b = report["batches"]
    head = ["artifact", "model", "format", "precision", "accuracy", "agreement", "max abs logit diff", "size MB",
            "gzip MB", "size vs fp32"] + [f"b{x} ms" for x in b] + [f"speed-up b{x}" for x in b] + ["gates"]
    rows = []
    for r in report["artifacts"]:
        cells = [r["name"], r["model"], r["format"], r["precision"], _pct(r["accuracy"]), _pct(r.get("agreement")),
                 f"{r.get('max_abs_logit_diff', 0.0):.4f}", f"{r['size_bytes'] / MB:.1f}", f"{r['compressed_bytes'] / MB:.1f}",
                 f"{r['size_vs_fp32']:.2f}" if "size_vs_fp32" in r else "-"]
        cells += [f"{r['latency_ms'][x]:.2f}" if x in r["latency_ms"] else "n/a" for x in b]
        cells += [f"{r['speedup'][x]:.2f}x" if x in r["speedup"] else "n/a" for x in b]
        cells.append("FAIL: " + "; ".join(r["gates"]) if r["gates"] else ("-" if r["name"] == "teacher" else "pass"))
        cls = ' class="fail"' if r["gates"] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lat = report["latency"]
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    lineages = "".join(f"<li><code>{html.escape(m)}</code>: {html.escape(l + _summary(report, m))}</li>" for m, l in _lineages(report))
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in report["gate_failures"])
    notes = "".join(f"<li><code>{html.escape(r['name'])}</code>: {html.escape(r['note'])}</li>" for r in report["artifacts"] if r.get("note"))
    notes_html = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgesmith report: {html.escape(report['target'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}}tr.fail{{background:#fdd}}</style></head><body>
<h1>edgesmith report: {html.escape(report['target'])}</h1>
<p>Profile <code>{html.escape(report['profile'])}</code>; {report['eval_examples']} eval examples. Latency: median of {lat['repeats']} runs
after {lat['warmup']} warm-up runs, sequence length {lat['sequence_length']}, {lat['threads']} threads, all artifacts timed side by side
in interleaved rounds on the build host.</p>
<img alt="accuracy against latency and size" src="data:image/png;base64,{image}">
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>
{chr(10).join(rows)}
</table>
<p>Agreement: share of eval examples where the artifact predicts the teacher's label. Size vs fp32: against {html.escape(report['size_reference'])}.
Speed-up: teacher latency (PyTorch) / artifact latency.</p>
{notes_html}<h2>Models</h2><ul>{lineages}</ul>
{'<h2>Gate failures</h2><ul>' + failures + '</ul>' if failures else ''}
</body></html>
"""


@dataclass(frozen=True)
class ReportArgs:
    target: str
    profile_source: Path
    # {"format", "metrics": Path, "model_dir": Path, "data_dir": Path}
    teacher: dict
    # One row per artifact: name, format, precision, runtime, model, lineage, path,
    # note, details (Path or None), metrics (Path), gates (Gates as a table).
    artifacts: tuple[dict, ...]
    latency: Path
    # model name -> the training/pruning record of the stage that made it
    models: dict
    out_json: Path
    out_md: Path
    out_html: Path
    out_png: Path


def build(args: ReportArgs) -> dict[str, Any]:
    source = args.profile_source.as_posix()
    report = build_report(args.target, source, args.teacher, list(args.artifacts), str(args.latency), args.models)
    for warning in report["warnings"]:
        print(f"edgesmith: WARNING: {warning}", file=sys.stderr)
    write_json(args.out_json, report)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(render_markdown(report), encoding="utf-8")
    plot_png(report, args.out_png)
    with atomic_path(args.out_html) as tmp:
        tmp.write_text(render_html(report, args.out_png), encoding="utf-8")
    if report["gate_failures"]:
        first = report["gate_failures"][0]
        more = f" (and {len(report['gate_failures']) - 1} more)" if len(report["gate_failures"]) > 1 else ""
        raise GateError(f"{source}: quality gate failed: {first}{more}; see {args.out_md.as_posix()}")
    return report


STAGE = Stage("report", ReportArgs, build, modules=("measure.report", "params"), packages=("matplotlib",))
