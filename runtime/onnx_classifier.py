"""Text classification with an ONNX artifact on ONNX Runtime.

The session decides what is fed: only the inputs the exported graph declares
(a DistilBERT export has no token_type_ids), in the integer type it declares.
Static batch or sequence dimensions are honoured by padding, so models exported
with fixed shapes for accelerators still run here.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np

from .errors import BundleError, InputError, one_line
from .limits import threads_problem
from .texts import check_utf8
from .tokenize import TextEncoder

FORMATS = ("onnx",)  # artifact formats this classifier can run
FEEDS = ("input_ids", "attention_mask", "token_type_ids")  # what TextEncoder produces
_INT_TYPES = {"tensor(int64)": np.int64, "tensor(int32)": np.int32}


def _import_onnxruntime() -> Any:
    # Lazy: the runtime package ships in bundles for non-ONNX targets too, and
    # opening/verifying a bundle must not need onnxruntime.
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("the 'onnxruntime' package is not installed; install it with: pip install onnxruntime") from None
    return onnxruntime


def _positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r:.40}")
    return value


def _checked_texts(texts: Iterable[str]) -> List[str]:
    if isinstance(texts, (str, bytes)):
        raise InputError(f"texts must be a list of strings, got a single {type(texts).__name__}; wrap it in a list: predict([text])")
    items = list(texts)
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise InputError(f"texts[{i}] is {type(text).__name__} ({text!r:.40}), expected str")
    check_utf8(items)  # a lone surrogate would end in a TypeError inside tokenizers
    return items


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64: large logits of int8 models overflow float32 exp."""
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def predictions(logits: np.ndarray, labels: Sequence[str]) -> List[Dict[str, Any]]:
    """One {"label", "score", "scores"} dict per row of logits; score is the top label's probability.

    Every backend (ONNX Runtime here, TensorRT and PyTorch in the stubs) reports through this.
    """
    results = []
    for row in softmax(logits):
        best = int(row.argmax())
        results.append({
            "label": labels[best],
            "score": float(row[best]),
            "scores": {label: float(p) for label, p in zip(labels, row)},
        })
    return results


class Classifier:
    """An ONNX Runtime session plus the bundle's tokenizer and labels."""

    def __init__(self, model_path: Path, tokenizer_path: Path, labels: Sequence[str], *,
                 max_length: int, threads: Optional[int] = None, providers: Optional[Sequence[Any]] = None,
                 output_name: Optional[str] = None, context: Optional[str] = None) -> None:
        self.labels = list(labels)
        self.context = context or f"model {model_path}"  # message prefix naming bundle + artifact
        self.session = self._open_session(model_path, threads, providers)

        self._feeds: Dict[str, Any] = {}
        fixed_batch = fixed_length = None
        for arg in self.session.get_inputs():
            if arg.name not in FEEDS:
                raise BundleError(f"{self.context}: model input {arg.name!r} is not one the runtime can produce "
                                  f"({', '.join(FEEDS)}); re-export the model with only these inputs")
            if arg.type not in _INT_TYPES:
                raise BundleError(f"{self.context}: model input {arg.name!r} has type {arg.type}, expected "
                                  "tensor(int64) or tensor(int32); re-export the model with integer inputs")
            self._feeds[arg.name] = _INT_TYPES[arg.type]
            shape = list(arg.shape) + [None, None]
            fixed_batch = shape[0] if isinstance(shape[0], int) and shape[0] > 0 else fixed_batch
            fixed_length = shape[1] if isinstance(shape[1], int) and shape[1] > 0 else fixed_length
        self.input_names = list(self._feeds)
        self.fixed_batch: Optional[int] = fixed_batch
        self.output_name = self._pick_output(output_name)
        self.encoder = TextEncoder.from_file(tokenizer_path, max_length, fixed_length=fixed_length)

    def _open_session(self, model_path: Path, threads: Optional[int], providers: Optional[Sequence[Any]]) -> Any:
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: optimizer warnings are noise on a device's stderr
        if threads is not None:
            problem = threads_problem("threads", _positive("threads", threads), zero_is_all=False)
            if problem:  # a thread pool of 100000 takes the machine down before the model even loads
                raise InputError(problem)
            options.intra_op_num_threads = threads
        try:
            return ort.InferenceSession(str(model_path), sess_options=options,
                                        providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as exc:  # onnxruntime's pybind errors share no useful base class
            raise BundleError(f"{self.context}: onnxruntime cannot load the model ({one_line(exc)}); "
                              "check the artifact's format/target or rebuild the bundle") from None

    def _pick_output(self, wanted: Optional[str]) -> str:
        outputs = self.session.get_outputs()
        names = [o.name for o in outputs]
        if wanted is not None and wanted not in names:
            raise BundleError(f"{self.context}: model has no output {wanted!r} (it has {', '.join(names)}); "
                              "fix manifest \"outputs\" or rebuild the bundle")
        name = wanted or names[0]
        shape = outputs[names.index(name)].shape
        last = shape[-1] if shape else None
        if isinstance(last, int) and last != self._width():
            raise BundleError(f"{self.context}: output {name!r} has {last} values per text but {self._width_source()}; "
                              "rebuild the bundle so the manifest matches the model")
        return name

    def _width(self) -> int:
        """Values per text in the model's output: one logit per label (an embedder: the vector's dimension)."""
        return len(self.labels)

    def _width_source(self) -> str:
        return f"manifest model.labels has {len(self.labels)}"

    def logits(self, texts: Iterable[str], batch_size: int = 32) -> np.ndarray:
        """float32 logits, shape [len(texts), len(labels)]."""
        items = _checked_texts(texts)
        step = _positive("batch_size", batch_size)
        if self.fixed_batch:
            step = min(step, self.fixed_batch)
        chunks = [self._run(items[i:i + step]) for i in range(0, len(items), step)]
        if not chunks:
            return np.zeros((0, self._width()), dtype=np.float32)
        return np.concatenate(chunks)

    def predict(self, texts: Iterable[str], batch_size: int = 32) -> List[Dict[str, Any]]:
        """One {"label", "score", "scores"} dict per text; score is the top label's probability."""
        return predictions(self.logits(texts, batch_size), self.labels)

    def _run(self, texts: List[str]) -> np.ndarray:
        count = len(texts)
        if self.fixed_batch and count < self.fixed_batch:
            texts = texts + [""] * (self.fixed_batch - count)  # filler rows, dropped below
        arrays = self.encoder.encode(texts)
        feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._feeds.items()}
        try:
            (out,) = self.session.run([self.output_name], feed)
        except Exception as exc:
            raise BundleError(f"{self.context}: onnxruntime failed while running the model ({one_line(exc)}); "
                              "check that the model and tokenizer in the bundle belong together") from None
        return self._checked(np.asarray(out, dtype=np.float32), count)

    def _checked(self, out: np.ndarray, count: int) -> np.ndarray:
        if out.ndim != 2 or out.shape[1] != self._width():
            raise BundleError(f"{self.context}: output {self.output_name!r} has shape {list(out.shape)}, expected "
                              f"[batch, {self._width()}] ({self._width_source()}); rebuild the bundle")
        return out[:count]

    def __repr__(self) -> str:
        return f"Classifier({self.context!r}, labels={self.labels!r}, inputs={self.input_names!r})"
