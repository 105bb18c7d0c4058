"""Parameters of the openvino format's quantizers and of the profile's [openvino] table.

Apart from recipes/formats/openvino.py (which declares) so the build stage
(openvino_ir.py) depends on these types, not on the declaring code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from recipes.params import MAX_SAMPLES, bounded


@dataclass(frozen=True)
class OpenVinoParams:
    """The profile's [openvino] table."""
    # What the IR is converted from: our verified fp32 ONNX, or the PyTorch model
    # through OpenVINO's own PyTorch frontend (bench/results/openvino.md compares them).
    source: Literal["onnx", "pytorch"] = "onnx"


@dataclass(frozen=True)
class NncfPtq:
    """int8 weights and activations by NNCF post-training quantization."""
    method: Literal["nncf_ptq"]
    # Train-split examples NNCF collects activation statistics on.
    calibration_samples: int = bounded(300, min=1, max=MAX_SAMPLES)
    # mixed: symmetric weights, asymmetric activations (NNCF's choice for transformers);
    # performance: both symmetric.
    preset: Literal["mixed", "performance"] = "mixed"
    fast_bias_correction: bool = True
    # Hold the model to the artifact's min_agreement gate: NNCF ranks quantized
    # operations by how much they change the output and reverts the worst to
    # float until agreement with the float model, on train examples that were
    # not used for calibration, meets the gate.
    accuracy_control: bool = True
    validation_samples: int = bounded(300, min=10, max=MAX_SAMPLES)
    # Revert iterations NNCF may take before it gives up.
    max_iterations: int = bounded(20, min=1, max=10_000)


@dataclass(frozen=True)
class WeightCompression:
    """int8 or int4 weights (NNCF compress_weights); activations stay float."""
    method: Literal["weight_compression"]
    mode: Literal["int8_asym", "int8_sym", "int4_sym", "int4_asym"] = "int8_asym"
    # int4 only: weights per scale (-1: one scale per output channel).
    group_size: int = bounded(128, min=-1, max=65536)
    # int4 only: share of the linear layers in 4 bits; NNCF keeps the rest in int8.
    ratio: float = bounded(1.0, min=0.0, min_exclusive=True, max=1.0)


OpenVinoQuant = NncfPtq | WeightCompression
