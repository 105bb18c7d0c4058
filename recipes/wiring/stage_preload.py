"""Imported once by the stage server (recipes/wiring/stage_process.py) before it forks any stage.

Only imports: nothing here may start a thread pool or run an operator. A thread pool that existed
before the fork (OpenMP's, once torch has run a parallel operator) is not there in the child, and
the child would hang waiting on it. A library that fails to import is left to the stage that needs
it, which then fails with its own message.
"""
from __future__ import annotations

import importlib

from recipes.wiring.stage_runner import _quiet_libraries

# What most stages import, most expensive last: the exporter and torch.export take longer than torch.
MODULES = (
    "numpy", "safetensors.torch", "tokenizers", "onnx", "onnxruntime",
    "torch", "transformers", "transformers.models.bert.modeling_bert",
    "torch.export", "torch._dynamo", "onnxscript", "torch.onnx._internal.exporter._core",
)

_quiet_libraries()
for _name in MODULES:
    try:
        importlib.import_module(_name)
    except Exception:  # noqa: BLE001  (see the module docstring)
        pass
