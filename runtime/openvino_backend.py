"""Compiling an OpenVINO IR artifact exactly as its build recorded, or refusing to.

Shared by the bundle's classifier and by the build's evaluation and latency
runners, so what the report measures is what the device runs. The artifact's
directory holds model.xml, model.bin and ov_config.json:

    {"precision": "bf16", "inference_precision": "bf16",
     "requires_cpu_any": ["amx_bf16", "avx512_bf16"], "why": "...", "openvino_version": "2026.4.0"}

Two checks, because OpenVINO never complains itself:
- the host's CPU features against `requires_cpu_any` (read from the OS, see
  cpu_features.py), before anything is compiled;
- the compiled model's INFERENCE_PRECISION_HINT against the one asked for:
  OpenVINO compiles a bf16 request on a CPU without bf16 units as fp32, and
  on an AMX CPU it runs an unhinted fp32 model in bf16. Both would be silent
  changes of what was measured, so every artifact names its precision and the
  compiled one must match.
Imports openvino only when a model is compiled.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from .cpu_features import host_features, lacking
from .errors import BundleError, one_line

CONFIG_NAME = "ov_config.json"
# OpenVINO's names for the precisions an artifact may ask for.
_HINTS = {"f32": "f32", "bf16": "bf16"}


def read_config(model_xml: Path, context: str) -> Dict[str, Any]:
    path = Path(model_xml).with_name(CONFIG_NAME)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{context}: {CONFIG_NAME} is missing beside {Path(model_xml).name}; rebuild the bundle") from None
    except ValueError as exc:
        raise BundleError(f"{context}: {path.name} is not valid JSON ({one_line(exc)}); rebuild the bundle") from None
    hint = config.get("inference_precision") if isinstance(config, dict) else None
    needs = config.get("requires_cpu_any", []) if isinstance(config, dict) else None
    if hint not in _HINTS or not isinstance(needs, list) or not all(isinstance(n, str) for n in needs):
        raise BundleError(f"{context}: {path.name} needs \"inference_precision\" (one of {', '.join(_HINTS)}) and a "
                          "\"requires_cpu_any\" list of strings; rebuild the bundle")
    return config


def cannot_run_here(config: Dict[str, Any]) -> Optional[str]:
    """Why this host should not run the artifact (None: it can), from its CPU features."""
    return lacking(config.get("requires_cpu_any", []), host_features(), config.get("why", ""))


def import_openvino() -> Any:
    try:
        import openvino
    except ImportError:
        raise BundleError("the 'openvino' package is not installed; install it with: pip install openvino") from None
    return openvino


def compile_model(model_xml: Path, config: Dict[str, Any], threads: Optional[int], context: str) -> Any:
    """The compiled model for `model_xml` at the recorded precision, on `threads` cores (None: all)."""
    ov = import_openvino()
    properties: Dict[str, Any] = {
        "INFERENCE_PRECISION_HINT": _HINTS[config["inference_precision"]],
        # One request at a time, all its cores on it: what run.py and the latency figures do.
        "PERFORMANCE_HINT": "LATENCY",
    }
    if threads:
        properties["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = ov.Core().compile_model(str(model_xml), "CPU", properties)
    except Exception as exc:  # OpenVINO raises RuntimeError subclasses with C++ messages
        raise BundleError(f"{context}: OpenVINO {ov.get_version()} cannot compile the model ({one_line(exc)}); "
                          "check the artifact's format/target or rebuild the bundle") from None
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
    wanted = _HINTS[config["inference_precision"]]
    if _type_name(got) != wanted:
        raise BundleError(f"{context}: OpenVINO compiled the model for {_type_name(got)}, not the {wanted} it was built and "
                          "measured for (the CPU lacks the instructions); run another artifact")
    return compiled


def _type_name(value: str) -> str:
    """OpenVINO prints element types as <Type: 'float32'> or f32; reduce both to f32/bf16."""
    text = value.lower()
    if "bf16" in text or "bfloat16" in text:
        return "bf16"
    if "f32" in text or "float32" in text:
        return "f32"
    return text


def input_specs(compiled: Any) -> List[Dict[str, Any]]:
    """[{name, dtype ('int64' or 'int32'), shape (ints, None for dynamic)}] of the compiled model's inputs."""
    specs = []
    for port in compiled.inputs:
        shape = [d.get_length() if d.is_static else None for d in port.get_partial_shape()]
        specs.append({"name": port.get_any_name(), "dtype": port.get_element_type().to_dtype().name, "shape": shape})
    return specs
