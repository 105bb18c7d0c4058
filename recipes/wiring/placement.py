"""Where each stage ran: one record per stage run, and per target a summary beside its report.

Every stage that succeeds leaves build/.placement/<key>.json (executor, node, host name, device resource, the
library versions read where it ran, and with Ray the dispatch timings). A stage that is up to date keeps the
record of the build that ran it. At the end of a build, build/<target>/placement.json and placement.md list
every stage of the target with its record: a build spread over a cluster says which node made what and which
node measured the latency.

The records are build metadata, not stage outputs: they are not in any signature, the cache or the bundle, so
a local build and a Ray build of the same inputs give byte-identical bundles.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from recipes.fsutil import atomic_path


def _key(rel_target: str) -> str:
    return hashlib.sha256(rel_target.encode()).hexdigest()[:24]


def record_path(root: str, rel_target: str) -> Path:
    return Path(root) / "build" / ".placement" / f"{_key(rel_target)}.json"


def record(root: str, spec: dict, targets: list[str], where: dict[str, Any]) -> None:
    rel = Path(targets[0]).relative_to(root).as_posix()
    with atomic_path(record_path(root, rel)) as tmp:
        tmp.write_text(json.dumps({"stage": spec["stage"], "target": rel, **where}, sort_keys=True, indent=1),
                       encoding="utf-8")


def summary(root: str, stages: list[tuple[str, str]]) -> dict[str, Any]:
    """{stage target: record} for `stages` ((stage name, repository-relative first target)), in build order."""
    rows = []
    for name, rel in stages:
        try:
            rec = json.loads(record_path(root, rel).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            rec = {"stage": name, "target": rel, "executor": "unknown",
                   "note": "no record: built before placement was recorded, or taken from cache=DIR"}
        rows.append(rec)
    by_node: dict[str, int] = {}
    for rec in rows:
        node = rec.get("hostname", "?") + (f" [{rec['device_resource']}]" if rec.get("device_resource") else "")
        by_node[node] = by_node.get(node, 0) + 1
    return {"stages": rows, "by_node": by_node}


def write(root: str, target_dir: Path, stages: list[tuple[str, str]]) -> None:
    """build/<target>/placement.json and .md, rewritten only when they change (a no-op build writes nothing)."""
    data = summary(root, stages)
    text = json.dumps(data, sort_keys=True, indent=1)
    lines = ["# Where each stage ran", "", "| stage | output | executor | host | node | device resource | seconds |",
             "|---|---|---|---|---|---|---|"]
    for rec in data["stages"]:
        node = (rec.get("node_id") or "")[:12]
        total = (rec.get("timing_s") or {}).get("total", "")
        lines.append(f"| {rec['stage']} | {rec['target']} | {rec.get('executor', '')} | {rec.get('hostname', '')} | "
                     f"{node} | {rec.get('device_resource', '')} | {total} |")
    notes = sorted({rec["note"] for rec in data["stages"] if rec.get("note")})
    md = "\n".join(lines + ([""] + [f"- {n}" for n in notes] if notes else [])) + "\n"
    for name, content in (("placement.json", text), ("placement.md", md)):
        path = target_dir / name
        if path.exists() and path.read_text(encoding="utf-8") == content:
            continue
        with atomic_path(path) as tmp:
            tmp.write_text(content, encoding="utf-8")
