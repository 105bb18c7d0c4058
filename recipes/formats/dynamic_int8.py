"""Dynamic int8 parameters, shared by the three stages that quantize this way.

ONNX Runtime's dynamic quantizer, PyTorch's dynamic int8 (host TorchScript)
and the .ptl path all take the same knobs; the type lives here, apart from
each stage's code, so editing one quantizer does not rebuild the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class DynamicInt8:
    method: Literal["dynamic"]
    per_channel: bool = False
    reduce_range: bool = False
    # Gather quantizes the embedding tables, about half of a small BERT;
    # Attention becomes QAttention in graphs fused for ONNX Runtime.
    op_types: tuple[str, ...] = ("MatMul", "Gather", "Attention")
