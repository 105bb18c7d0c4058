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


class NotMeasurable(Exception):
    """This build host cannot run the artifact as the device will (a bf16 model on a CPU without bf16 units).

    Evaluation and latency record the reason instead of numbers of something else."""


class OpenVinoRunner:
    """An OpenVINO IR compiled by the bundle runtime's own code, at its recorded precision."""

    def __init__(self, model_xml: Path, threads: int = 0):
        from runtime.errors import BundleError
        from runtime.openvino_backend import cannot_run_here, compile_model, input_specs, read_config

        config = read_config(model_xml, str(model_xml))
        problem = cannot_run_here(config)
        if problem and config["inference_precision"] != "f32":
            raise NotMeasurable(f"not measured on this build host: the artifact {problem}")
        try:
            self.compiled = compile_model(model_xml, config, threads or None, str(model_xml))
        except BundleError as exc:
            raise NotMeasurable(str(exc)) from None
        self.request = self.compiled.create_infer_request()
        self.input_names = tuple(s["name"] for s in input_specs(self.compiled))

    def __call__(self, feeds: Feeds) -> np.ndarray:
        import numpy as np
        result = self.request.infer({k: feeds[k] for k in self.input_names})
        return np.array(result[self.compiled.output(0)], dtype=np.float32)


RUNNERS: dict[str, Callable[..., Runner]] = {
    "openvino": lambda path, input_names, threads: OpenVinoRunner(Path(path), threads),
    "torch": lambda path, input_names, threads: TorchRunner(Path(path), input_names, threads),
    "onnx": lambda path, input_names, threads: OnnxRunner(Path(path), threads),
    "nf4": lambda path, input_names, threads: _nf4(Path(path), input_names, threads),
    "ptl": lambda path, input_names, threads: _mobile("PtlRunner", Path(path), input_names, threads),
    "pte": lambda path, input_names, threads: _mobile("PteRunner", Path(path), input_names, threads),
    "torchscript": lambda path, input_names, threads: _mobile("TorchScriptRunner", Path(path), input_names, threads),
}


# The libraries each runner opens its artifacts with: recipes/measure/memory.py imports them before it takes
# its baseline, so a runtime's own code and import-time allocations are not counted as the artifact's memory.
RUNTIME_MODULES: dict[str, tuple[str, ...]] = {
    "openvino": ("numpy", "openvino"),
    "torch": ("numpy", "torch", "transformers"),
    "onnx": ("numpy", "onnxruntime"),
    "nf4": ("numpy", "torch", "transformers"),
    "ptl": ("numpy", "torch"),
    "pte": ("numpy", "torch", "executorch.runtime"),
    "torchscript": ("numpy", "torch"),
}


def _mobile(cls: str, path: Path, input_names: tuple[str, ...], threads: int) -> Runner:
    from recipes.measure import mobile_runners

    return getattr(mobile_runners, cls)(path, input_names, threads)


def _nf4(path: Path, input_names: tuple[str, ...], threads: int) -> Runner:
    from recipes.measure.nf4_runner import Nf4Runner

    return Nf4Runner(path, input_names, threads)


def open_runner(fmt: str, path: Path, input_names: tuple[str, ...], threads: int = 0) -> Runner:
    return RUNNERS[fmt](path, input_names, threads)
