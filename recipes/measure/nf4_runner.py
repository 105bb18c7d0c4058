"""The build host's view of the nf4 checkpoint: runtime/nf4.py's loader, as a Runner.

quantize_nf4's verification, evaluation and latency load the checkpoint with
the very code a gpu_server bundle serves it with (runtime.nf4), so every
number is measured on the model exactly as it is served. This module only
adapts it to the build: StageError instead of the runtime's BundleError,
transformers' logging quieted, threads set, and the Runner protocol.

Importable without torch; torch, transformers, bitsandbytes and accelerate are
imported when a model is loaded.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import StageError
from runtime import nf4
from runtime.errors import BundleError

Feeds = dict  # name -> int64 numpy array (numpy is imported where arrays are made)
DEVICES = nf4.DEVICES
# Pure functions of a loaded model: nothing to adapt.
linear_layers = nf4.linear_layers
set_compute_dtype = nf4.set_compute_dtype


@contextmanager
def _stage_errors() -> Iterator[None]:
    try:
        yield
    except BundleError as exc:
        raise StageError(str(exc)) from None


def require_packages() -> None:
    """One line naming the missing package, instead of transformers' long ImportError."""
    with _stage_errors():
        nf4.require_packages()


def pick_device(device: str = "auto") -> str:
    with _stage_errors():
        return nf4.pick_device(device)


def load_nf4(model_dir: Path, device: str = "auto") -> Any:
    """The saved nf4 classifier in eval mode on `device` ("auto": CUDA when present)."""
    require_packages()
    from recipes.models.hf import quiet_transformers

    quiet_transformers()
    with _stage_errors():
        return nf4.load_nf4(Path(model_dir), device)


class Nf4Runner:
    """Runner protocol (recipes.measure.runners): int64 numpy feeds -> float32 numpy logits."""

    def __init__(self, model_dir: Path, input_names: tuple[str, ...], threads: int = 0, device: str = "auto"):
        import torch

        from recipes.models.hf import set_threads

        set_threads(threads)
        self._torch = torch
        self.model = load_nf4(Path(model_dir), device)
        self.device = next(self.model.parameters()).device
        self.input_names = tuple(input_names)

    def __call__(self, feeds: Feeds) -> np.ndarray:
        import numpy as np
        torch = self._torch
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(np.ascontiguousarray(feeds[k])).to(self.device) for k in self.input_names}
            out = self.model(**inputs).logits
        return out.float().cpu().numpy()
