"""An artifact's `quantize = { method = "qat" }`: it ships its QAT model's own int8 program.

Kept apart from the QAT stage (recipes/models/qat.py) so the formats that read
its outputs (onnx, tensorrt, pte) do not take the training code into their
signatures. Standard library only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# What the QAT stage writes beside the checkpoint (the formats read the names from here).
from recipes.formats.qat_files import PROGRAM, QDQ_ONNX, RECORD  # noqa: F401
from recipes.params import bounded


@dataclass(frozen=True)
class QatInt8:
    method: Literal["qat"]
    # .pte only: the median |logit difference| between the lowered program and the QAT program it came from,
    # on the verification batches. XNNPACK runs integer kernels, whose requantisation rounds differently from
    # the program's float simulation of int8, and a deep model amplifies each step: on the SST-2 MiniLM the
    # max differences reached 0.64 (XNNPACK, random ids) and 0.50 (ONNX Runtime's fused integer kernels, real
    # sentences, median 0.04; bench/results/qat.md), so a max bound cannot hold. A broken lowering moves every
    # logit. Whether the formats agree on the eval set is gated by gates.min_format_agreement.
    atol: float = bounded(0.25, min=0.0, min_exclusive=True, max=10.0)
