"""Run an artifact on the build host: one small adapter per format.

Evaluation and latency measurement go through these, so every artifact is
fed exactly the same int64 arrays and returns float32 logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

# numpy is imported inside functions: SCons imports this module while reading the build files.

Feeds = dict  # name -> int64 numpy array (numpy is imported where arrays are made)


class Runner(Protocol):
    input_names: tuple[str, ...]

    def __call__(self, feeds: Feeds) -> np.ndarray: ...


class TorchRunner:
    """The teacher as PyTorch serves it (default attention implementation)."""

    def __init__(self, model_dir: Path, input_names: tuple[str, ...], threads: int = 0):
        import torch

        from recipes.models.hf import load_classifier, set_threads

        set_threads(threads)
        self._torch = torch
        self.model = load_classifier(model_dir)
        self.input_names = input_names

    def __call__(self, feeds: Feeds) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            out = self.model(**{k: torch.from_numpy(feeds[k]) for k in self.input_names}).logits
        return out.float().numpy()


class OnnxRunner:
    def __init__(self, path: Path, threads: int = 0):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = tuple(i.name for i in self.session.get_inputs())

    def __call__(self, feeds: Feeds) -> np.ndarray:
        import numpy as np
        return self.session.run(None, {k: feeds[k] for k in self.input_names})[0].astype(np.float32)


RUNNERS: dict[str, Callable[..., Runner]] = {
    "torch": lambda path, input_names, threads: TorchRunner(Path(path), input_names, threads),
    "onnx": lambda path, input_names, threads: OnnxRunner(Path(path), threads),
    "nf4": lambda path, input_names, threads: _nf4(Path(path), input_names, threads),
    "ptl": lambda path, input_names, threads: _mobile("PtlRunner", Path(path), input_names, threads),
    "pte": lambda path, input_names, threads: _mobile("PteRunner", Path(path), input_names, threads),
    "torchscript": lambda path, input_names, threads: _mobile("TorchScriptRunner", Path(path), input_names, threads),
}


def _mobile(cls: str, path: Path, input_names: tuple[str, ...], threads: int) -> Runner:
    from recipes.measure import mobile_runners

    return getattr(mobile_runners, cls)(path, input_names, threads)


def _nf4(path: Path, input_names: tuple[str, ...], threads: int) -> Runner:
    from recipes.measure.nf4_runner import Nf4Runner

    return Nf4Runner(path, input_names, threads)


def open_runner(fmt: str, path: Path, input_names: tuple[str, ...], threads: int = 0) -> Runner:
    return RUNNERS[fmt](path, input_names, threads)
