"""Screening a [search]'s candidates before anything is trained: the `screen` stage.

Each candidate's random-weight stand-in (recipes/models/random_init.py; the teacher's candidates are the
teacher's own artifacts, already trained) has been built in the candidate's format, and timed and
measured side by side by the ordinary latency and memory stages where the budget limits those.
Here each candidate is held to the budgets that do not depend on trained weights (batch-1 and
largest-batch latency, size, peak memory). A candidate that misses one is skipped, with the measured
reason, and is never distilled, recovered or evaluated: SConstruct builds the next phase from the
`kept` list of screen.json (recipes/wiring/sconsutil.py).

Latency and memory are noisy on a shared host, so a candidate is skipped only when its stand-in
misses a latency or memory budget by more than `search.screen_slack` (10% by default); such a
candidate is measured again, trained, in the selection. Size is the same for random and trained
weights of one shape and format, and is held exactly. Candidates whose latency and memory the build
host cannot measure (a GPU device, TensorRT) are screened on size only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from recipes.fsutil import write_json
from recipes.measure.budget import MEASURES, Budget
from recipes.wiring.stage import Stage

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph

MB = 1_000_000
# The budgets a random-weight model of the right shape and format measures as well as the trained one.
SHAPE_BUDGETS = ("latency_b1_ms", "latency_bmax_ms", "size_mb", "peak_memory_mb")


def parameter_count(safetensors_path: Path) -> int:
    """Parameters of a stand-in: capacity, which Optuna weighs against cost (recipes/wiring/search_optuna.py)."""
    import math

    from safetensors import safe_open

    with safe_open(str(safetensors_path), framework="np") as f:
        return sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys())


def size_bytes(paths: tuple[Path, ...]) -> int:
    """Bytes on disk, as the report counts an artifact (measure/evaluate.py's artifact_size over the same files);
    not imported from there, which would put every runtime's runner in this stage's signature."""
    return sum(f.stat().st_size for p in paths for f in ([p] if p.is_file() else sorted(p.rglob("*"))) if f.is_file())


@dataclass(frozen=True)
class ScreenedCandidate:
    name: str                    # the real candidate artifact
    model: str
    stand_in: str                # the stand-in's name in the latency and memory records
    weights: Path                # the stand-in model's model.safetensors (its parameter count)
    size_paths: tuple[Path, ...]
    on_device_only: bool         # latency and memory not measurable on this host


@dataclass(frozen=True)
class ScreenArgs:
    budget: Budget
    slack: float
    candidates: tuple[ScreenedCandidate, ...]
    # The stand-ins timed and measured side by side; None when the budget sets no latency (memory) limit.
    latency_json: Optional[Path]
    memory_json: Optional[Path]
    largest_batch: int
    out_json: Path


def screen(args: ScreenArgs) -> dict[str, Any]:
    import json

    not_asked = {"median_ms": {}, "peak_mb": {}, "not_measured": {}}
    latency = json.loads(args.latency_json.read_text(encoding="utf-8")) if args.latency_json else not_asked
    memory = json.loads(args.memory_json.read_text(encoding="utf-8")) if args.memory_json else not_asked
    limits = {n: v for n, v in args.budget.limits().items() if n in SHAPE_BUDGETS}
    rows = []
    for c in args.candidates:
        timed = latency["median_ms"].get(c.stand_in, {})
        values: dict[str, Any] = {"size_mb": round(size_bytes(c.size_paths) / MB, 3)}
        if c.on_device_only:
            why = "not measurable on this build host; screened on size only"
            values.update(latency_b1_ms=why, latency_bmax_ms=why, peak_memory_mb=why)
        else:
            # Only what the budget limits is measured on the stand-ins.
            values["latency_b1_ms"] = timed.get("1", latency["not_measured"].get(c.stand_in, "not measured"))
            values["latency_bmax_ms"] = timed.get(str(args.largest_batch), "not measured")
            values["peak_memory_mb"] = memory["peak_mb"].get(c.stand_in, memory["not_measured"].get(c.stand_in, "not measured"))
        misses, shortfall = [], 0.0
        for name, limit in limits.items():
            value = values[name]
            if isinstance(value, str):
                continue
            allowed = limit if name == "size_mb" else limit * (1 + args.slack)
            if value > allowed:
                shortfall += (value - limit) / limit
                unit = MEASURES[name][1]
                misses.append(f"{MEASURES[name][2]} {value:g} {unit} > {name} {limit:g}"
                              + ("" if name == "size_mb" else f" (+{args.slack:.0%} slack)"))
        rows.append({"name": c.name, "model": c.model, "values": values, "kept": not misses, "shortfall": round(shortfall, 4),
                     "parameters": parameter_count(c.weights),
                     "status": "kept" if not misses else "skipped before training: " + "; ".join(misses)})
    kept = [r["name"] for r in rows if r["kept"]]
    out = {"budget": limits, "slack": args.slack, "stand_ins": "random weights of each candidate's shape (the teacher's candidates: the teacher)",
           "candidates": rows, "kept": kept, "skipped": [r["name"] for r in rows if not r["kept"]],
           "models_kept": sorted({r["model"] for r in rows if r["kept"]})}
    write_json(args.out_json, out)
    return out


STAGE = Stage("screen", ScreenArgs, screen, modules=("measure.screen", "measure.budget", "params"), packages=("safetensors",))


def declare(g: "Graph", args: ScreenArgs, sources: list[Path]) -> Path:
    g.stage(STAGE, [args.out_json], [p for p in (args.latency_json, args.memory_json) if p] + sources
            + sorted({c.weights for c in args.candidates}), args)
    return args.out_json
