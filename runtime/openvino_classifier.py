"""Text classification with an OpenVINO IR artifact (numpy, tokenizers and openvino; no torch).

Feeds, batching, padding and the output checks are the ONNX classifier's; only
opening the model and running a batch differ.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .errors import BundleError, InputError, one_line
from .limits import threads_problem
from .onnx_classifier import FEEDS, Classifier, _positive
from .openvino_backend import compile_model, input_specs, read_config
from .tokenize import TextEncoder

_INT_TYPES = {"int64": np.int64, "int32": np.int32}


class OpenVinoClassifier(Classifier):
    def __init__(self, model_path: Path, tokenizer_path: Path, labels: Sequence[str], *,
                 max_length: int, threads: Optional[int] = None, providers: Optional[Sequence[Any]] = None,
                 output_name: Optional[str] = None, context: Optional[str] = None) -> None:
        del providers  # ONNX Runtime's notion; OpenVINO here always runs on the CPU
        self.labels = list(labels)
        self.context = context or f"model {model_path}"
        if threads is not None:
            problem = threads_problem("threads", _positive("threads", threads), zero_is_all=False)
            if problem:
                raise InputError(problem)
        self.config = read_config(Path(model_path), self.context)
        self.compiled = compile_model(Path(model_path), self.config, threads, self.context)
        self.request = self.compiled.create_infer_request()

        self._feeds: Dict[str, Any] = {}
        fixed_batch = fixed_length = None
        for spec in input_specs(self.compiled):
            if spec["name"] not in FEEDS:
                raise BundleError(f"{self.context}: model input {spec['name']!r} is not one the runtime can produce "
                                  f"({', '.join(FEEDS)}); rebuild the artifact with only these inputs")
            if spec["dtype"] not in _INT_TYPES:
                raise BundleError(f"{self.context}: model input {spec['name']!r} has type {spec['dtype']}, expected int64 "
                                  "or int32; rebuild the artifact")
            self._feeds[spec["name"]] = _INT_TYPES[spec["dtype"]]
            shape = spec["shape"] + [None, None]
            fixed_batch = shape[0] or fixed_batch
            fixed_length = shape[1] or fixed_length
        self.input_names = list(self._feeds)
        self.fixed_batch = fixed_batch
        self.output_name = self._pick_ov_output(output_name)
        self.encoder = TextEncoder.from_file(tokenizer_path, max_length, fixed_length=fixed_length)

    def _pick_ov_output(self, wanted: Optional[str]) -> str:
        names: List[str] = [o.get_any_name() for o in self.compiled.outputs]
        if wanted is not None and wanted in names:
            return wanted
        # The IR may name its output differently from the ONNX the manifest describes; one output is unambiguous.
        if len(names) == 1:
            return names[0]
        raise BundleError(f"{self.context}: model has outputs {', '.join(names)} and none is {wanted!r}; rebuild the bundle")

    def _run(self, texts: List[str]) -> np.ndarray:
        count = len(texts)
        if self.fixed_batch and count < self.fixed_batch:
            texts = texts + [""] * (self.fixed_batch - count)
        arrays = self.encoder.encode(texts)
        feed = {name: arrays[name].astype(dtype, copy=False) for name, dtype in self._feeds.items()}
        try:
            result = self.request.infer(feed)
            out = result[self.compiled.output(self.output_name)]
        except Exception as exc:
            raise BundleError(f"{self.context}: OpenVINO failed while running the model ({one_line(exc)}); "
                              "check that the model and tokenizer in the bundle belong together") from None
        # A copy: the request reuses its output buffer.
        return self._checked(np.array(out, dtype=np.float32), count)
