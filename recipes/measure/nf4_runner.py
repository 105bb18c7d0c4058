"""Load and run a bitsandbytes nf4 checkpoint (the gpu_server target's PyTorch artifact).

One loader for the build (quantize_nf4's verification, evaluation, latency)
so every number is measured on the model exactly as it is served:

- CUDA when present (device_map {"": 0}), with the compute dtype stored in the
  checkpoint (float16 for a GPU server);
- the CPU otherwise, with float32 compute: bitsandbytes' CPU kernels are made
  for float32/bfloat16 activations, and the build host must be able to check
  an artifact it cannot serve on a GPU.

Importable without torch; torch, transformers, bitsandbytes and accelerate are
imported when a model is loaded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from recipes.errors import StageError

Feeds = dict[str, np.ndarray]
DEVICES = ("auto", "cuda", "cpu")


def require_packages() -> None:
    """One line naming the missing package, instead of transformers' long ImportError."""
    import importlib.util

    for name, why in (("bitsandbytes", "it holds the nf4 kernels"),
                      ("accelerate", "transformers needs it to load bitsandbytes 4-bit models")):
        if importlib.util.find_spec(name) is None:
            raise StageError(f"nf4: the '{name}' package is not installed ({why}); install it with: pip install {name}")


def pick_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise StageError(f"nf4: device {device!r} is not one of {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise StageError("nf4: device 'cuda' was asked for but torch sees no CUDA GPU; use device 'auto' or 'cpu'")
    return device


def set_compute_dtype(model: Any, dtype: Any) -> int:
    """Make every bitsandbytes 4-bit layer compute in `dtype`; returns how many layers."""
    import bitsandbytes as bnb

    count = 0
    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.compute_dtype = dtype
            module.compute_type_is_set = True
            count += 1
    return count


def linear_layers(model: Any) -> dict[str, str]:
    """Every Linear layer's name -> "nf4" (bitsandbytes 4-bit) or "full" (left unquantized)."""
    import bitsandbytes as bnb
    import torch

    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            kinds[name] = "nf4"
        elif isinstance(module, torch.nn.Linear):
            kinds[name] = "full"
    return kinds


def load_nf4(model_dir: Path, device: str = "auto") -> Any:
    """The saved nf4 classifier in eval mode on `device` ("auto": CUDA when present)."""
    require_packages()
    import torch

    from recipes.models.hf import quiet_transformers

    quiet_transformers()
    from transformers import AutoModelForSequenceClassification

    device = pick_device(device)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir),
        local_files_only=True,
        use_safetensors=True,
        device_map={"": 0} if device == "cuda" else "cpu",
    ).eval()
    if device == "cpu":
        set_compute_dtype(model, torch.float32)
    return model


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
        torch = self._torch
        with torch.inference_mode():
            inputs = {k: torch.from_numpy(np.ascontiguousarray(feeds[k])).to(self.device) for k in self.input_names}
            out = self.model(**inputs).logits
        return out.float().cpu().numpy()
