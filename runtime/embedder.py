"""Sentence embeddings from a bundle: one float32 vector per text, and the cosine similarity of two texts.

The exported graph already pools and normalises (edgesmith puts the sentence-transformers pooling inside
every artifact), so the runtime returns the graph's output as it is: the vector every runtime of the bundle
gives for the same ids. Feeding, batching, padding and the shape checks are the classifiers'; only what the
output means differs.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, List, Optional, Sequence

import numpy as np

from .errors import BundleError, InputError
from .onnx_classifier import Classifier, _checked_texts
from .openvino_classifier import OpenVinoClassifier


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two [n, d] arrays (float64; a zero vector has similarity 0)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.where(norms > 0, norms, 1.0), 0.0)


class _Embedding:
    """What an embedder adds to a classifier backend: `embed` and `similarity`, and the vector's width."""

    dimension: int

    def _width(self) -> int:
        return self.dimension

    def _width_source(self) -> str:
        return f"manifest model.embedding.dimension is {self.dimension}"

    def embed(self, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
        """float32 [len(texts), dimension]: each text's sentence vector."""
        return self.logits(texts, batch_size)  # type: ignore[attr-defined]

    def similarity(self, first: str, second: str) -> float:
        """The cosine similarity of two texts' vectors."""
        vectors = self.embed(_checked_texts([first, second]))
        return float(cosine(vectors[:1], vectors[1:])[0])

    def predict(self, texts: Iterable[str], batch_size: int = 32) -> List[dict]:
        raise InputError("this bundle is a sentence-embedding model: it has no labels to predict; use embed(texts) "
                         "or similarity(a, b)")


def _init(self: Any, base: type, model_path: Path, tokenizer_path: Path, dimension: int, **kwargs: Any) -> None:
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise BundleError(f"{kwargs.get('context') or model_path}: embedding dimension {dimension!r:.40} is not a "
                          "positive integer; rebuild the bundle")
    self.dimension = dimension
    base.__init__(self, model_path, tokenizer_path, [], **kwargs)


class OnnxEmbedder(_Embedding, Classifier):
    def __init__(self, model_path: Path, tokenizer_path: Path, dimension: int, **kwargs: Any) -> None:
        _init(self, Classifier, model_path, tokenizer_path, dimension, **kwargs)

    def __repr__(self) -> str:
        return f"OnnxEmbedder({self.context!r}, dimension={self.dimension}, inputs={self.input_names!r})"


class OpenVinoEmbedder(_Embedding, OpenVinoClassifier):
    def __init__(self, model_path: Path, tokenizer_path: Path, dimension: int, **kwargs: Any) -> None:
        _init(self, OpenVinoClassifier, model_path, tokenizer_path, dimension, **kwargs)

    def __repr__(self) -> str:
        return f"OpenVinoEmbedder({self.context!r}, dimension={self.dimension}, inputs={self.input_names!r})"
