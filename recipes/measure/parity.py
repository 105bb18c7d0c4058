"""Parity across formats: the artifacts one QAT model ships for different
runtimes (QDQ ONNX for ONNX Runtime, the QDQ ONNX a TensorRT engine is built
from, the ExecuTorch .pte) run the same int8 program, so on the eval set they
must predict the same labels. The report shows their pairwise agreement and
max logit difference, and gates each artifact's lowest agreement with its
siblings (gates.min_format_agreement): a format that disagrees was exported
or lowered wrongly, whatever its accuracy.
"""
from __future__ import annotations

from itertools import combinations
from pathlib import Path
from typing import Any


def format_parity(groups: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """groups: model -> [{"name", "format", "metrics": path, "note"}], two or more per model.

    Returns model -> {"artifacts": [...], "pairs": [{"a", "b", "agreement", "max_abs_logit_diff"}],
    "unmeasured": [names not run on this host]}."""
    import json

    import numpy as np

    out: dict[str, Any] = {}
    for model, members in groups.items():
        members = [{**m, "measured": json.loads(Path(m["metrics"]).read_text(encoding="utf-8")).get("measured", True)}
                   for m in members]
        measured = [m for m in members if m["measured"]]
        logits = {m["name"]: np.load(logits_path(m["metrics"])) for m in measured}
        pairs = []
        for a, b in combinations([m["name"] for m in measured], 2):
            x, y = logits[a], logits[b]
            pairs.append({"a": a, "b": b, "agreement": round(float((x.argmax(1) == y.argmax(1)).mean()), 6),
                          "max_abs_logit_diff": round(float(np.abs(x - y).max()), 6) if x.size else 0.0})
        out[model] = {"artifacts": [{k: m[k] for k in ("name", "format", "note")} for m in members], "pairs": pairs,
                      "unmeasured": [m["name"] for m in members if not m["measured"]]}
    return out


def parity_failures(parity: dict[str, Any], limits: dict[str, float | None]) -> list[str]:
    """'name: agreement with other below min_format_agreement' for each artifact under its limit."""
    failures = []
    for group in parity.values():
        for art in group["artifacts"]:
            limit = limits.get(art["name"])
            mine = [p for p in group["pairs"] if art["name"] in (p["a"], p["b"])]
            if limit is None or not mine:
                continue
            worst = min(mine, key=lambda p: p["agreement"])
            if worst["agreement"] < limit:
                other = worst["b"] if worst["a"] == art["name"] else worst["a"]
                failures.append(f"{art['name']}: agreement with {other} (same QAT model, another format) "
                                f"{worst['agreement']:.3f} < min_format_agreement {limit}")
    return failures


def parity_markdown(parity: dict[str, Any]) -> list[str]:
    if not parity:
        return []
    lines = ["## Parity across formats", "",
             "Artifacts of one QAT model run the same int8 program in different runtimes; on the eval set they should "
             "predict the same labels. Agreement: share of eval examples where the two predict the same label.", ""]
    for model, group in parity.items():
        lines += [f"Model `{model}`:", "", "| artifact | artifact | agreement | max abs logit diff |", "|---|---|---|---|"]
        lines += [f"| {p['a']} | {p['b']} | {100 * p['agreement']:.1f}% | {p['max_abs_logit_diff']:.4f} |" for p in group["pairs"]]
        lines += [""] + [f"- `{a['name']}` ({a['format']}): {a['note']}" for a in group["artifacts"] if a["note"]]
        if group["unmeasured"]:
            lines.append(f"- not run on this host, so not compared: {', '.join(group['unmeasured'])}")
        lines.append("")
    return lines


def logits_path(metrics: Path) -> Path:
    """Where the evaluate stage writes an artifact's eval logits, beside its metrics."""
    return Path(metrics).parent / "logits.npy"


def parity_html(parity: dict[str, Any]) -> str:
    import html

    if not parity:
        return ""
    parts = ["<h2>Parity across formats</h2><p>Artifacts of one QAT model run the same int8 program in different "
             "runtimes; agreement is the share of eval examples where two predict the same label.</p>"]
    for model, group in parity.items():
        rows = "".join(f"<tr><td>{html.escape(p['a'])}</td><td>{html.escape(p['b'])}</td><td>{100 * p['agreement']:.1f}%</td>"
                       f"<td>{p['max_abs_logit_diff']:.4f}</td></tr>" for p in group["pairs"])
        parts.append(f"<p>Model <code>{html.escape(model)}</code>:</p><table><tr><th>artifact</th><th>artifact</th>"
                     f"<th>agreement</th><th>max abs logit diff</th></tr>{rows}</table>")
        if group["unmeasured"]:
            parts.append(f"<p>Not run on this host, so not compared: {html.escape(', '.join(group['unmeasured']))}</p>")
    return "".join(parts)
