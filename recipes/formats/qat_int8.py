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
    # .pte only: max |logit difference| between the lowered program and the QAT program it came from.
    # XNNPACK runs integer kernels, whose requantisation rounds differently from the program's float
    # simulation of int8, and a deep model amplifies each step: on the SST-2 MiniLM, XNNPACK differed by
    # 0.09 and ONNX Runtime's fused integer kernels by up to 0.50 (median 0.04) on real sentences
    # (bench/results/qat.md). A broken lowering moves logits by whole units. Whether the formats agree on
    # the eval set is gated by gates.min_format_agreement.
    atol: float = bounded(0.5, min=0.0, min_exclusive=True, max=10.0)
