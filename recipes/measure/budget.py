"""A device's budget, and the choice of what ships: the cheapest artifact that meets every budget.

A profile's `[budget]` table states what the device gives (latency, size, peak memory) and what the
product may lose (accuracy and agreement with the teacher). Every value can be overridden from the
command line as `budget.<name>=<value>`. The `select` stage reads the target's report (every
artifact already built, evaluated and measured), keeps the candidates that meet every budget and
picks the cheapest by the objective; the bundle's default artifact is the winner and the manifest
records the budget, the winner and its margins. When nothing meets the budget the stage fails in one
line naming the closest candidate, the budget it misses, the measured value and the limit, and no
bundle is written.

A budget that cannot be checked for a candidate on this build host is "unchecked", never passed
silently: an engine built on the device has no latency or memory here (the report measures its QDQ
ONNX on ONNX Runtime as a stand-in), and an artifact the host cannot run has no accuracy. Such a
candidate is chosen only on the budgets that were checked, and the selection says which were not.

Changing only the budget re-runs this stage and the packaging after it, nothing that builds a model.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from recipes.errors import GateError
from recipes.fsutil import atomic_path, write_json
from recipes.params import bounded
from recipes.wiring.stage import Stage

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph

MB = 1_000_000


@dataclass(frozen=True)
class Budget:
    """The profile's [budget] table. Latency, size and memory are maxima; accuracy and agreement minima."""
    # Median latency at batch 1, and at the largest batch of [evaluate] batch_sizes, on the artifact's runtime (ms).
    latency_b1_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    latency_bmax_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    # Artifact size on disk (MB, 10^6 bytes), as the report counts it.
    size_mb: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e7)
    # Resident memory that loading the artifact and running the largest batch adds (MiB; recipes/measure/memory.py).
    peak_memory_mb: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    # The artifact's eval accuracy over the teacher's, and its share of eval examples with the teacher's label.
    accuracy_ratio: Optional[float] = bounded(None, min=0.0, max=10.0)
    agreement: Optional[float] = bounded(None, min=0.0, max=1.0)
    # What "cheapest" means among the candidates that meet every budget; ties go to the smaller artifact.
    objective: Literal["latency_b1", "latency_bmax", "size", "peak_memory"] = "latency_b1"

    def limits(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "objective" and getattr(self, f.name) is not None}


# budget name -> (is a maximum, unit, what it measures)
MEASURES: dict[str, tuple[bool, str, str]] = {
    "latency_b1_ms": (True, "ms", "batch-1 latency"),
    "latency_bmax_ms": (True, "ms", "largest-batch latency"),
    "size_mb": (True, "MB", "size"),
    "peak_memory_mb": (True, "MiB", "peak memory"),
    "accuracy_ratio": (False, "x teacher", "accuracy"),
    "agreement": (False, "", "agreement"),
}
OBJECTIVE_MEASURE = {"latency_b1": "latency_b1_ms", "latency_bmax": "latency_bmax_ms", "size": "size_mb",
                     "peak_memory": "peak_memory_mb"}
NUMERIC = tuple(MEASURES)


def budget_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Budget)]


def measured(row: dict[str, Any], largest_batch: str, teacher_accuracy: float, on_device_only: bool) -> dict[str, Any]:
    """Each budget's measure for one report row: a number, or a string saying why it is not measured here."""
    stand_in = "measured here only through a stand-in on the build host; check it on the device"
    latency = row.get("latency_ms") or {}
    out: dict[str, Any] = {
        "latency_b1_ms": stand_in if on_device_only else latency.get("1", "batch 1 is not in [evaluate] batch_sizes"),
        "latency_bmax_ms": stand_in if on_device_only else latency.get(largest_batch, "not measured"),
        "size_mb": round(row["size_bytes"] / MB, 3),
        "peak_memory_mb": stand_in if on_device_only else (row.get("peak_memory_mb")
                                                          if row.get("peak_memory_mb") is not None else "not measured"),
    }
    if row.get("accuracy") is None:
        out["accuracy_ratio"] = out["agreement"] = "not measured on this build host"
    else:
        out["accuracy_ratio"] = round(row["accuracy"] / teacher_accuracy, 4) if teacher_accuracy > 0 else "teacher scored 0"
        out["agreement"] = row["agreement"]
    return out


def judge(values: dict[str, Any], budget: Budget) -> dict[str, dict[str, Any]]:
    """Per budget: the value, the limit, pass/miss/unchecked and the relative margin (positive: inside the budget)."""
    verdicts = {}
    for name, limit in budget.limits().items():
        value = values[name]
        is_max = MEASURES[name][0]
        if isinstance(value, str):
            verdicts[name] = {"limit": limit, "value": None, "status": "unchecked", "why": value}
            continue
        margin = (limit - value) / limit if is_max else (value - limit) / limit if limit > 0 else value - limit
        ok = value <= limit if is_max else value >= limit
        verdicts[name] = {"limit": limit, "value": value, "status": "pass" if ok else "miss", "margin": round(margin, 4)}
    return verdicts


def _describe_miss(name: str, verdict: dict[str, Any]) -> str:
    is_max, unit, what = MEASURES[name]
    sign = ">" if is_max else "<"
    return (f"{what} {verdict['value']:g}{(' ' + unit) if unit else ''} {sign} {name} {verdict['limit']:g} "
            f"(misses by {abs(verdict['margin']):.0%})")


def select(report: dict[str, Any], budget: Budget, candidates: list[str], on_device_only: set[str]) -> dict[str, Any]:
    """The selection record: every candidate's measures and verdicts, the winner (or None) and why each lost."""
    rows = {r["name"]: r for r in report["artifacts"]}
    teacher = rows["teacher"]
    largest = report["batches"][-1]
    objective = OBJECTIVE_MEASURE[budget.objective]
    table = []
    for name in candidates:
        values = measured(rows[name], largest, teacher["accuracy"], name in on_device_only)
        verdicts = judge(values, budget)
        misses = [n for n, v in verdicts.items() if v["status"] == "miss"]
        table.append({"name": name, "format": rows[name]["format"], "precision": rows[name]["precision"],
                      "model": rows[name]["model"], "values": values, "verdicts": verdicts,
                      "meets_budget": not misses,
                      "unchecked": [n for n, v in verdicts.items() if v["status"] == "unchecked"],
                      # How far outside the budget, summed over the budgets it misses: the closest candidate.
                      "shortfall": round(sum(-verdicts[n]["margin"] for n in misses), 4)})
    passing = [c for c in table if c["meets_budget"]]

    def cost(c: dict[str, Any]) -> tuple:
        value = c["values"][objective]
        return (isinstance(value, str), value if not isinstance(value, str) else 0.0, c["values"]["size_mb"], c["name"])

    winner = min(passing, key=cost) if passing else None
    for c in table:
        if c is winner:
            c["status"] = "ships"
        elif not c["meets_budget"]:
            misses = [n for n, v in c["verdicts"].items() if v["status"] == "miss"]
            c["status"] = "rejected: " + "; ".join(_describe_miss(n, c["verdicts"][n]) for n in misses)
        else:
            value = c["values"][objective]
            c["status"] = (f"meets the budget, but its {MEASURES[objective][2]} is not measured here" if isinstance(value, str)
                           else f"meets the budget; costlier by {objective} ({value:g} against {winner['values'][objective]:g})")
    return {"budget": {**budget.limits(), "objective": budget.objective}, "objective_measure": objective,
            "candidates": table, "winner": winner["name"] if winner else None,
            "margins": ({n: v for n, v in winner["verdicts"].items()} if winner else {}),
            "unchecked": ({n: v["why"] for n, v in winner["verdicts"].items() if v["status"] == "unchecked"} if winner else {})}


def closest_miss(selection: dict[str, Any]) -> str:
    """One line: the candidate nearest to the budget, and what it misses (among those screening skipped
    before training, when none was built)."""
    if not selection["candidates"]:
        nearest = min(selection["skipped"], key=lambda c: (c["shortfall"], c["name"]))
        return (f"screening skipped every one before training; closest is {nearest['name']}: "
                + nearest["status"].removeprefix("skipped before training: "))
    nearest = min(selection["candidates"], key=lambda c: (c["shortfall"], c["name"]))
    misses = [n for n, v in nearest["verdicts"].items() if v["status"] == "miss"]
    return f"closest is {nearest['name']}: " + "; ".join(_describe_miss(n, nearest["verdicts"][n]) for n in misses)


def _fmt(value: Any) -> str:
    return "n/a" if isinstance(value, str) or value is None else f"{value:g}"


def render_markdown(selection: dict[str, Any], target: str) -> str:
    budget = selection["budget"]
    names = [n for n in MEASURES if n in budget]
    lines = [f"# edgesmith selection: {target}", "",
             "Budget: " + ", ".join(f"`{n}` {'<=' if MEASURES[n][0] else '>='} {budget[n]:g}" for n in names)
             + f"; objective: cheapest by `{selection['objective_measure']}`, then size.", ""]
    if selection["winner"]:
        lines += [f"**Ships: `{selection['winner']}`.**", ""]
        if selection["unchecked"]:
            lines += [f"Unchecked for the winner: " + "; ".join(f"`{n}` ({why})" for n, why in selection["unchecked"].items()), ""]
    else:
        lines += [f"**Nothing meets the budget**: {closest_miss(selection)}. No bundle was written.", ""]
    lines += ["| candidate | model | format | precision | " + " | ".join(names) + " | outcome |",
              "|" + "---|" * (5 + len(names))]
    for c in selection["candidates"]:
        lines.append(f"| {c['name']} | {c['model']} | {c['format']} | {c['precision']} | "
                     + " | ".join(_fmt(c["values"][n]) for n in names) + f" | {c['status']} |")
    if "search" in selection:
        search = selection["search"]
        lines += ["", f"## Search: {search['space']} candidates in the space, {search['screened']} screened, "
                  f"{search['skipped']} skipped before training, {search['built_and_measured']} built and measured", "",
                  *([f"Not screened (beyond search.max_candidates; Optuna chose the others): "
                     + ", ".join(f"`{n}`" for n in search["not_screened"]), ""] if search["not_screened"] else []),
                  "Models trained: " + (", ".join(f"`{m}`" for m in search["models_trained"]) or "none") + ". "
                  "Never trained (every candidate of theirs was skipped): "
                  + (", ".join(f"`{m}`" for m in search["models_never_trained"]) or "none") + ".", ""]
        if selection.get("dropped"):
            lines += [f"Dropped after training, before their full evaluation (their accuracy on an eval subset could "
                      f"not reach the budget):", ""] + [f"- `{c['name']}`: {c['status'].split(': ', 1)[1]}"
                                                        for c in selection["dropped"]] + [""]
        if selection["skipped"]:
            shape = [n for n in names if n in selection["skipped"][0]["values"]]
            lines += ["Skipped on their random-weight stand-ins (same shape and format, untrained):", "",
                      "| candidate | model | " + " | ".join(shape) + " | outcome |", "|" + "---|" * (3 + len(shape))]
            for c in selection["skipped"]:
                lines.append(f"| {c['name']} | {c['model']} | " + " | ".join(_fmt(c["values"][n]) for n in shape)
                             + f" | {c['status']} |")
    return "\n".join(lines) + "\n"


def plot_png(selection: dict[str, Any], dst: Path) -> None:
    """Accuracy against latency, size and memory for every candidate: the winner, the rejected, the budget lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("latency_b1_ms", "batch-1 latency (ms)"), ("size_mb", "size (MB)"), ("peak_memory_mb", "peak memory (MiB)")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    floor = selection["budget"].get("accuracy_ratio")
    for ax, (name, label) in zip(axes, panels):
        for c in selection["candidates"]:
            x, y = c["values"][name], c["values"]["accuracy_ratio"]
            if isinstance(x, str) or isinstance(y, str):
                continue
            marker, color = ("*", "tab:green") if c["status"] == "ships" else (("o", "tab:blue") if c["meets_budget"]
                                                                                 else ("x", "tab:red"))
            ax.scatter(x, y, marker=marker, color=color, s=90 if marker == "*" else 50)
            ax.annotate(c["name"], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if name in selection["budget"]:
            ax.axvline(selection["budget"][name], color="tab:red", linestyle="--", linewidth=1)
        if floor is not None:
            ax.axhline(floor, color="tab:red", linestyle=":", linewidth=1)
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy / teacher's")
        ax.grid(True, alpha=0.3)
    fig.suptitle("candidates against the budget (* ships, o meets the budget, x rejected; dashed: limits)")
    fig.tight_layout()
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


@dataclass(frozen=True)
class SelectArgs:
    target: str
    profile_source: str
    budget: Budget
    candidates: tuple[str, ...]
    on_device_only: tuple[str, ...]   # candidates whose latency and memory the build host cannot measure
    report_json: Path
    out_json: Path
    out_md: Path
    out_png: Path
    # A [search]'s screening rounds (recipes/measure/screen.py): the candidates skipped before training;
    # and every candidate of the space (those never screened, when it was larger than max_candidates).
    screen_jsons: tuple[Path, ...] = ()
    space: tuple[str, ...] = ()
    # Its accuracy screening on an eval subset (recipes/measure/accuracy_screen.py): the candidates it dropped.
    ranking: Optional[Path] = None


def add_screening(selection: dict[str, Any], screens: list[dict[str, Any]], space: list[str]) -> None:
    """The candidates screening skipped (never trained), those never screened, and the search's counts."""
    rows = [c for s in screens for c in s["candidates"]]
    kept = [c for c in rows if c["kept"]]
    selection["skipped"] = [{"name": c["name"], "model": c["model"], "values": c["values"], "status": c["status"],
                             "shortfall": c["shortfall"]} for c in rows if not c["kept"]]
    screened = {c["name"] for c in rows}
    models_kept = {c["model"] for c in kept}
    selection["search"] = {"space": len(space), "screened": len(rows), "not_screened": [n for n in space if n not in screened],
                           "skipped": len(selection["skipped"]), "built_and_measured": len(kept),
                           "models_trained": sorted(models_kept - {"teacher"}),
                           "models_never_trained": sorted({c["model"] for c in rows} - models_kept - {"teacher"})}


def build(args: SelectArgs) -> dict[str, Any]:
    report = json.loads(args.report_json.read_text(encoding="utf-8"))
    selection = select(report, args.budget, list(args.candidates), set(args.on_device_only))
    selection["target"] = args.target
    if args.screen_jsons:
        add_screening(selection, [json.loads(p.read_text(encoding="utf-8")) for p in args.screen_jsons], list(args.space))
    if args.ranking is not None:
        ranking = json.loads(args.ranking.read_text(encoding="utf-8"))
        selection["dropped"] = [{"name": c["name"], "status": c["status"], "subset": c["subset"]}
                                for c in ranking["candidates"] if not c["kept"]]
        if "search" in selection:
            selection["search"]["dropped_after_subset_eval"] = len(selection["dropped"])
            selection["search"]["built_and_measured"] -= len(selection["dropped"])
    write_json(args.out_json, selection)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(render_markdown(selection, args.target), encoding="utf-8")
    plot_png(selection, args.out_png)
    if selection["winner"] is None:
        count = len(args.candidates) + len(selection.get("skipped", []))
        raise GateError(f"{args.profile_source}: budget not met by any of {count} candidates; "
                        f"{closest_miss(selection)}; see {args.out_md.as_posix()}")
    return selection


STAGE = Stage("select", SelectArgs, build, modules=("measure.budget", "params"), packages=("matplotlib",))


def declare(g: "Graph", target: str, profile_source: str, budget: Budget, candidates: list[str],
            on_device_only: list[str], report_json: Path, tdir: Path, screen_jsons: list[Path] = (),
            space: list[str] = (), ranking: Path | None = None) -> Path:
    args = SelectArgs(target=target, profile_source=profile_source, budget=budget, candidates=tuple(candidates),
                      on_device_only=tuple(on_device_only), report_json=report_json, out_json=tdir / "selection.json",
                      out_md=tdir / "selection.md", out_png=tdir / "selection.png", screen_jsons=tuple(screen_jsons),
                      space=tuple(space) if screen_jsons else (), ranking=ranking)
    g.stage(STAGE, [args.out_json, args.out_md, args.out_png], [report_json] + list(screen_jsons)
            + ([ranking] if ranking else []), args)
    return args.out_json
