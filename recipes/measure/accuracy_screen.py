"""Accuracy screening of a [search]'s trained candidates on a subset of the eval split, before their full
evaluation and their latency and memory measurement: the first rung of successive halving.

Successive halving keeps a fixed fraction of candidates per rung. Here the bar is the budget instead:
a candidate is dropped only when even the optimistic end of its subset estimate (two standard errors
above the measured share) misses the budget's accuracy_ratio or agreement, so no candidate that could
still win is dropped, and each dropped one is named with its numbers. Where the budget sets neither
limit there is nothing to screen against, and no rung runs (recipes/wiring/sconsutil.py).

This module's stage, `quick_eval`, runs one candidate on every k-th eval example with the full evaluation's
own code (measure/evaluate.py's `evaluate`); measure/rank.py's `rank` stage decides for all at once.
"""
from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.fsutil import write_json
from recipes.errors import StageError
from recipes.inputs.data import load_labels, load_split
from recipes.measure.budget import Budget
from recipes.measure.evaluate import EVAL_BATCH, evaluate
from recipes.wiring.stage import Stage

# Standard errors above the measured share a candidate may still reach.
OPTIMISM_SE = 2.0


def subset_indices(count: int, fraction: float) -> list[int]:
    """Every k-th example (a stated, deterministic subset), at least one."""
    step = max(1, round(1 / fraction))
    return list(range(0, count, step))


@dataclass(frozen=True)
class QuickEvalArgs:
    fmt: str
    artifact: Path
    data_dir: Path
    tokenizer_json: Path
    max_length: int
    input_names: tuple[str, ...]
    teacher_logits: Path   # the teacher's logits on the full eval split (its evaluate stage's)
    fraction: float
    dst: Path              # metrics.json


def quick_eval(args: QuickEvalArgs) -> dict[str, Any]:
    import numpy as np

    examples = (args.data_dir / "eval.jsonl").read_text(encoding="utf-8").splitlines()
    full = np.load(args.teacher_logits)
    if len(full) != len(examples):
        raise StageError(f"quick_eval: {args.teacher_logits} has {len(full)} rows for {len(examples)} eval examples in "
                         f"{args.data_dir / 'eval.jsonl'}; the teacher's evaluation is of other data (rebuild it)")
    keep = subset_indices(len(examples), args.fraction)
    teacher = full[keep]
    labels = load_labels(args.data_dir / "data.json")
    with tempfile.TemporaryDirectory() as work:
        subset = Path(work)
        (subset / "eval.jsonl").write_text("\n".join(examples[i] for i in keep) + "\n", encoding="utf-8")
        shutil.copyfile(args.data_dir / "data.json", subset / "data.json")
        np.save(subset / "teacher.npy", teacher)
        metrics = evaluate(args.fmt, args.artifact, [], subset, args.tokenizer_json, args.max_length, args.input_names,
                           subset / "metrics.json", subset / "logits.npy", subset / "teacher.npy", EVAL_BATCH)
        gold = np.array([labels.index(e.label) for e in load_split(subset / "eval.jsonl")])
    out = {"examples": len(keep), "of": len(examples), "fraction": args.fraction,
           "accuracy": metrics.get("accuracy"), "agreement": metrics.get("agreement"),
           "teacher_accuracy": float((teacher.argmax(axis=1) == gold).mean()),
           **({"not_measured": metrics["not_measured"]} if "not_measured" in metrics else {})}
    write_json(args.dst, out)
    return out


def verdict(metrics: dict[str, Any], budget: Budget) -> tuple[bool, str]:
    """(may still meet the budget, why not): the optimistic end of the subset estimate against the limits."""
    if metrics.get("accuracy") is None:
        return True, "not measurable on this build host"
    n, misses = metrics["examples"], []

    def optimistic(share: float) -> float:
        return min(1.0, share + OPTIMISM_SE * math.sqrt(max(share * (1 - share), 1.0 / n) / n))

    limits = budget.limits()
    if "accuracy_ratio" in limits and metrics["teacher_accuracy"] > 0:
        best = optimistic(metrics["accuracy"]) / metrics["teacher_accuracy"]
        if best < limits["accuracy_ratio"]:
            misses.append(f"accuracy {metrics['accuracy'] / metrics['teacher_accuracy']:.3f} x teacher on "
                          f"{n} eval examples (at best {best:.3f}) < accuracy_ratio {limits['accuracy_ratio']:g}")
    if "agreement" in limits and metrics.get("agreement") is not None:
        best = optimistic(metrics["agreement"])
        if best < limits["agreement"]:
            misses.append(f"agreement {metrics['agreement']:.3f} on {n} eval examples (at best {best:.3f}) < "
                          f"agreement {limits['agreement']:g}")
    return not misses, "; ".join(misses)


STAGE = Stage("quick_eval", QuickEvalArgs, quick_eval,
                    modules=("measure.accuracy_screen", "measure.budget", "measure.evaluate", "measure.embedding_metrics", "measure.runners",
                             "measure.nf4_runner", "measure.mobile_runners", "textenc", "inputs.data", "models.hf", "models.embedding",
                             "models.slim", "models.archs", "params", "runtime.nf4", "runtime.tokenize",
                             "runtime.openvino_backend", "runtime.cpu_features"),
                    packages=("torch", "transformers", "onnxruntime", "tokenizers", "bitsandbytes", "executorch", "openvino"))
