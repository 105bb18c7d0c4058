"""The `rank` stage: which of a [search]'s trained candidates may still meet the budget, judged on their
accuracy on an eval subset (recipes/measure/accuracy_screen.py has the rule and the subset evaluation)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.fsutil import write_json
from recipes.measure import accuracy_screen
from recipes.measure.accuracy_screen import OPTIMISM_SE, verdict
from recipes.measure.budget import Budget
from recipes.wiring.stage import Stage

if TYPE_CHECKING:
    from recipes.wiring.graph import Graph


@dataclass(frozen=True)
class RankArgs:
    budget: Budget
    candidates: tuple[tuple[str, Path], ...]   # (candidate, its quick_eval metrics.json)
    out_json: Path


def rank(args: RankArgs) -> dict[str, Any]:
    rows = []
    for name, path in args.candidates:
        metrics = json.loads(path.read_text(encoding="utf-8"))
        ok, why = verdict(metrics, args.budget)
        rows.append({"name": name, "kept": ok, "subset": metrics,
                     "status": "kept" if ok else f"dropped after training, before full evaluation: {why}"})
    out = {"rule": f"dropped when the subset estimate plus {OPTIMISM_SE:g} standard errors misses the budget",
           "candidates": rows, "kept": [r["name"] for r in rows if r["kept"]],
           "dropped": [r["name"] for r in rows if not r["kept"]]}
    write_json(args.out_json, out)
    return out


STAGE = Stage("rank", RankArgs, rank, modules=("measure.rank", "measure.accuracy_screen", "measure.budget",
                                               "measure.evaluate", "measure.embedding_metrics", "measure.runners", "measure.nf4_runner",
                                               "measure.mobile_runners", "textenc", "inputs.data", "models.hf", "models.embedding",
                                               "models.slim", "models.archs", "params", "runtime.nf4", "runtime.tokenize",
                                               "runtime.openvino_backend", "runtime.cpu_features"))


def declare(g: "Graph", budget: Budget, fraction: float, built: list[Any], teacher_logits: Path, tokenizer: Path,
            max_length: int, out_json: Path) -> Path:
    """Each built candidate's subset evaluation, and the target's rank stage over them."""
    quick = []
    for b in built:
        identity = {"fmt": b.runner, "artifact": b.path, "data_dir": g.data_dir, "teacher_logits": teacher_logits,
                    "fraction": fraction, "max_length": max_length, "input_names": g.input_names, "tokenizer": tokenizer}
        dst = g.stage_dir("quick-eval", identity) / "metrics.json"
        args = accuracy_screen.QuickEvalArgs(fmt=b.runner, artifact=b.path, data_dir=g.data_dir, tokenizer_json=tokenizer,
                             max_length=max_length, input_names=g.input_names, teacher_logits=teacher_logits,
                             fraction=fraction, dst=dst)
        g.stage(accuracy_screen.STAGE, [dst], list(b.files) + [g.data_dir / "eval.jsonl", g.data_dir / "data.json", tokenizer,
                                                     teacher_logits], args)
        quick.append((b.spec.name, dst))
    args = RankArgs(budget=budget, candidates=tuple(quick), out_json=out_json)
    g.stage(STAGE, [out_json], [p for _, p in quick], args)
    return out_json
