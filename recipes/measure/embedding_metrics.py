"""How faithful an artifact's sentence vectors are to the teacher's, on the eval texts (no labels needed).

- cosine similarity of each text's vector to the teacher's vector of the same text: mean and 1st percentile
  (the worst texts matter: a search index is only as good as its worst-placed documents);
- neighbour fidelity: for each eval text, its 10 nearest other eval texts by the artifact's vectors, against
  the teacher's 10 nearest; recall@10 is the shared share, averaged over the texts.

Numpy only: exact search over the eval corpus (a few thousand texts at most) needs no index library, and
an approximate one would add its own error to what is measured.
"""
from __future__ import annotations

from typing import Any

K = 10


def unit_rows(x):
    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def neighbours(vectors, k: int):
    """Indices of each row's k most cosine-similar other rows (ties broken by index, so it is deterministic)."""
    import numpy as np

    unit = unit_rows(vectors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)  # a text is not its own neighbour
    # argsort is stable: among equal similarities the lower index comes first.
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def recall_at_k(vectors, reference, k: int = K) -> float:
    """Mean share of each text's k nearest neighbours (by `vectors`) that are among its k nearest by `reference`."""
    import numpy as np

    n = len(vectors)
    if n <= k:
        raise ValueError(f"recall@{k} needs more than {k} texts, got {n}")
    ours, theirs = neighbours(vectors, k), neighbours(reference, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ours.tolist(), theirs.tolist())]))


def compare(vectors, reference) -> dict[str, Any]:
    """The evaluate stage's embedding metrics of `vectors` against the teacher's `reference` ([n, d] each)."""
    import numpy as np

    vectors, reference = np.asarray(vectors), np.asarray(reference)
    if vectors.shape != reference.shape:
        raise ValueError(f"vectors of shape {list(vectors.shape)} cannot be compared with the teacher's "
                         f"{list(reference.shape)}")
    cosine = (unit_rows(vectors) * unit_rows(reference)).sum(axis=1)
    return {"cosine_mean": float(cosine.mean()), "cosine_p1": float(np.percentile(cosine, 1)),
            "cosine_min": float(cosine.min()), "recall_at_10": recall_at_k(vectors, reference, K)}
