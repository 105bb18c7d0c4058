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


@dataclass(frozen=True)
class QatInt8:
    method: Literal["qat"]
    # No tolerance of its own. A QAT .pte runs XNNPACK's integer kernels, whose requantisation rounds
    # differently from the program's float simulation of int8, and depth amplifies each step: on the SST-2
    # MiniLM the lowered program differed from the QAT program by up to 0.64 in the logits on the random-id
    # verification batches (0.40 on both logits of one 7-token row), and ONNX Runtime's fused integer kernels
    # by up to 0.50 on real sentences (bench/results/qat.md). No bound on random ids tells that from a wrong
    # lowering, so the .pte records its differences and is judged on the eval set, where it must agree with
    # its sibling formats (gates.min_format_agreement; the profile loader requires a sibling, or
    # gates.min_agreement, for every QAT .pte).
