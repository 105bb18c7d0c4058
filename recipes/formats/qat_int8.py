"""An artifact's `quantize = { method = "qat" }`: it ships its QAT model's own int8 program.

Kept apart from the QAT stage (recipes/models/qat.py) so the formats that read
its outputs (onnx, tensorrt, pte) do not take the training code into their
signatures. Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recipes.params import bounded

# What the QAT stage writes beside the checkpoint.
QDQ_ONNX = "qat.qdq.onnx"   # the converted program as QDQ ONNX (ONNX Runtime, TensorRT)
PROGRAM = "qat.pt2"         # the converted program (torch.export), lowered to ExecuTorch
RECORD = "qat.json"


@dataclass(frozen=True)
class QatInt8:
    method: Literal["qat"]
    # .pte only: max |logit difference| between the lowered program and the QAT program it came from
    # (the same int8 arithmetic; XNNPACK may round a boundary value one step apart).
    atol: float = bounded(0.05, min=0.0, min_exclusive=True, max=10.0)
