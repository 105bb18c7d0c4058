"""Load a bitsandbytes nf4 checkpoint (the gpu_server target's PyTorch artifact).

The one loader: serve.py serves with it, and the build host's quantize_nf4
verification, evaluation and latency (recipes/measure/nf4_runner.py) measure
with it, so every number is measured on the model exactly as it is served:

- CUDA when present (device_map {"": device_id}), with the compute dtype
  stored in the checkpoint (float16 for a GPU server);
- the CPU otherwise, with float32 compute: bitsandbytes' CPU kernels are made
  for float32/bfloat16 activations, and the build host must be able to check
  an artifact it cannot serve on a GPU.

Importing this module imports none of torch, transformers, bitsandbytes or
accelerate: bundles that serve only ONNX do not have them. They are imported
when a model is loaded, and a missing one is one BundleError line.
"""
from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any, Dict

from .errors import BundleError, one_line

DEVICES = ("auto", "cuda", "cpu")
PACKAGES = (
    ("torch", "it runs the model"),
    ("transformers", "it reads the checkpoint"),
    ("bitsandbytes", "it holds the nf4 kernels"),
    ("accelerate", "transformers needs it to load bitsandbytes 4-bit models"),
)


def import_heavy(name: str) -> Any:
    """torch or transformers, imported now.

    By name rather than with an import statement: tests/test_runtime.py bans
    torch/transformers import statements anywhere in runtime/, so no module
    can grow a top-level one. This loader is the one place that needs them,
    and only once an nf4 artifact is loaded.
    """
    return importlib.import_module(name)


def require_packages() -> None:
    """One line naming the missing packages, instead of transformers' long ImportError."""
    missing = [(name, why) for name, why in PACKAGES if importlib.util.find_spec(name) is None]
    if len(missing) == 1:
        name, why = missing[0]
        raise BundleError(f"nf4: the '{name}' package is not installed ({why}); install it with: pip install {name}")
    if missing:
        names = " ".join(name for name, _ in missing)
        raise BundleError(f"nf4: the packages {', '.join(repr(n) for n, _ in missing)} are not installed; "
                          f"install them with: pip install {names}")


def pick_device(device: str = "auto") -> str:
    """"cuda" or "cpu" for `device` ("auto": CUDA when torch sees a GPU)."""
    if device not in DEVICES:
        raise BundleError(f"nf4: device {device!r} is not one of {', '.join(DEVICES)}")
    torch = import_heavy("torch")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise BundleError(f"nf4: device 'cuda' was asked for but torch sees no CUDA GPU (torch {torch.__version__}, "
                          f"built for CUDA {torch.version.cuda}); use device 'auto' or 'cpu', or install a CUDA build of torch")
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


def linear_layers(model: Any) -> Dict[str, str]:
    """Every Linear layer's name -> "nf4" (bitsandbytes 4-bit) or "full" (left unquantized)."""
    import bitsandbytes as bnb

    torch = import_heavy("torch")
    kinds = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            kinds[name] = "nf4"
        elif isinstance(module, torch.nn.Linear):
            kinds[name] = "full"
    return kinds


def load_nf4(model_dir: Path, device: str = "auto", device_id: int = 0) -> Any:
    """The saved nf4 classifier in eval mode on `device` ("auto": CUDA when present)."""
    require_packages()
    torch, transformers = import_heavy("torch"), import_heavy("transformers")
    device = pick_device(device)
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(model_dir),
            local_files_only=True,
            use_safetensors=True,
            device_map={"": device_id} if device == "cuda" else "cpu",
        ).eval()
    except Exception as exc:  # OSError (missing files), ValueError (bad config), bitsandbytes/CUDA errors...
        raise BundleError(f"nf4: transformers cannot load {model_dir} ({one_line(exc)}); check that it is a complete "
                          "nf4 checkpoint and that the packages are installed (pip install torch transformers "
                          "bitsandbytes accelerate)") from None
    if device == "cpu":
        set_compute_dtype(model, torch.float32)
    return model
