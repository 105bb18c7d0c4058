"""What edgesmith knows about each task, in one place: a text classifier or a sentence-embedding model.

Data only (standard library), so the profile checks (recipes/wiring/task.py), the report
(recipes/measure/report.py) and the graph read the same facts. A third task is one more entry here, its
teacher stage and its evaluation metrics.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    name: str
    # The [gates] keys that judge this task's artifacts.
    gates: tuple[str, ...]
    # The report's quality columns: (heading, key in the evaluate stage's metrics, how it is shown: pct | diff).
    quality: tuple[tuple[str, str, str], ...]
    # The sentence under the report's table that says what the quality columns mean.
    quality_note: str
    # The measure (and its axis label) the report's plot puts on the y axis.
    headline: tuple[str, str]
    # Artifact formats this task builds, tested end to end (None: every registered format).
    formats: tuple[str, ...] | None = None
    # Stub templates with a version for this task (None: every template).
    templates: tuple[str, ...] | None = None


TASKS = {
    "classification": TaskSpec(
        name="classification",
        # (min_format_agreement, which has a default, compares QAT siblings: only classifiers have QAT models.)
        gates=("min_accuracy_ratio", "min_agreement", "min_teacher_accuracy"),
        quality=(("accuracy", "accuracy", "pct"), ("agreement", "agreement", "pct"),
                 ("max abs logit diff", "max_abs_logit_diff", "diff")),
        quality_note="Agreement: share of eval examples where the artifact predicts the teacher's label.",
        headline=("accuracy", "accuracy (%)"),
    ),
    "embedding": TaskSpec(
        name="embedding",
        gates=("min_cosine", "min_recall_at_10"),
        quality=(("cosine mean", "cosine_mean", "diff"), ("cosine p1", "cosine_p1", "diff"),
                 ("recall@10", "recall_at_10", "pct")),
        quality_note="Cosine: similarity of each eval text's vector to the teacher's vector of the same text (mean, "
                     "and the 1st percentile). Recall@10: share of each eval text's 10 nearest eval texts (by the "
                     "artifact's vectors) that are among its 10 nearest by the teacher's, averaged.",
        headline=("recall_at_10", "recall@10 vs the teacher (%)"),
        # .ptl, .pte, TensorRT and nf4 load the same model (pooling included) but have not been run for
        # embeddings: refused until they are (tests/test_embedding.py runs these two).
        formats=("onnx", "openvino"),
        templates=("cpu/run.py", "cpu/README.md", "gpu_server/serve.py"),
    ),
}
