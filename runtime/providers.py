"""Choosing ONNX Runtime execution providers, and saying which ones a session got.

The rule: a model only runs on providers the user named. `auto` names them
all, in order TensorRT, CUDA, CPU, and drops (with a note) those this
onnxruntime build does not have. An explicit list (`cuda,cpu`) is an ordered
preference: a provider that is missing is dropped with a note as long as a
later one in the list remains; if none remains, or the session ends up on a
provider that was not named (onnxruntime silently falls back to the CPU when
CUDA libraries fail to load), that is a one-line BundleError.

Standard library only at import; onnxruntime is imported when asked for the
available providers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .errors import BundleError

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
AUTO = (TENSORRT, CUDA, CPU)
CUDNN_SEARCH = ("EXHAUSTIVE", "HEURISTIC", "DEFAULT")
INSTALL_HINT = {
    TENSORRT: "install onnxruntime-gpu and TensorRT 10 (pip install onnxruntime-gpu tensorrt) on a machine with an NVIDIA GPU",
    CUDA: "install onnxruntime-gpu (instead of onnxruntime) built for this machine's CUDA, on a machine with an NVIDIA GPU",
}

Provider = Tuple[str, Dict[str, str]]


@dataclass
class ProviderPlan:
    """What to pass to InferenceSession(providers=...) and why."""

    requested: List[str]                       # full names, in preference order
    providers: List[Provider]                  # the available subset, with options
    notes: List[str] = field(default_factory=list)

    @property
    def names(self) -> List[str]:
        return [name for name, _ in self.providers]


def parse_providers(text: str) -> List[str]:
    """'auto', or comma-separated aliases (tensorrt, cuda, cpu) / full provider names."""
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise BundleError("--providers is empty; pass 'auto' or a list such as 'tensorrt,cuda,cpu'")
    if items == ["auto"]:
        return list(AUTO)
    names: List[str] = []
    for item in items:
        name = ALIASES.get(item.lower(), item)
        if not name.endswith("ExecutionProvider"):
            raise BundleError(f"--providers: unknown provider {item!r}; use auto, {', '.join(sorted(set(ALIASES) - {'trt'}))} "
                              "or a full onnxruntime name such as CUDAExecutionProvider")
        if name in names:
            raise BundleError(f"--providers: {item!r} is named twice")
        names.append(name)
    return names


def available_providers() -> List[str]:
    try:
        import onnxruntime
    except ImportError:
        raise BundleError("the 'onnxruntime' package is not installed; install onnxruntime-gpu (GPU) or onnxruntime (CPU)") from None
    return list(onnxruntime.get_available_providers())


def shape_string(shapes: Mapping[str, Sequence[int]]) -> str:
    """{'input_ids': (1, 8)} -> 'input_ids:1x8' (TensorRT EP profile syntax)."""
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in dims)}" for name, dims in shapes.items())


def tensorrt_options(*, device_id: int = 0, cache_dir: Optional[Path] = None, fp16: bool = False, int8: bool = False,
                     workspace_mb: int = 1024, input_names: Sequence[str] = (),
                     batch: Tuple[int, int, int] = (1, 1, 1), sequence: Tuple[int, int, int] = (1, 1, 1)) -> Dict[str, str]:
    """TensorRT EP options: engine + timing cache in `cache_dir`, and one optimization
    profile over (min, opt, max) batch and sequence so the engine is built once
    for the whole range instead of again for every new input shape."""
    options = {
        "device_id": str(device_id),
        "trt_fp16_enable": _flag(fp16),
        "trt_int8_enable": _flag(int8),  # QDQ (explicitly quantized) models need it on TensorRT 10
        "trt_max_workspace_size": str(int(workspace_mb) * (1 << 20)),
    }
    if cache_dir is not None:
        options.update({
            "trt_engine_cache_enable": "True",
            "trt_engine_cache_path": str(cache_dir),
            "trt_timing_cache_enable": "True",
            "trt_timing_cache_path": str(cache_dir),
        })
    if input_names:
        for key, index in (("trt_profile_min_shapes", 0), ("trt_profile_opt_shapes", 1), ("trt_profile_max_shapes", 2)):
            options[key] = shape_string({name: (batch[index], sequence[index]) for name in input_names})
    return options


def cuda_options(*, device_id: int = 0, cudnn_conv_algo_search: str = "HEURISTIC") -> Dict[str, str]:
    if cudnn_conv_algo_search not in CUDNN_SEARCH:
        raise BundleError(f"cudnn_conv_algo_search {cudnn_conv_algo_search!r} is not one of {', '.join(CUDNN_SEARCH)}")
    return {"device_id": str(device_id), "cudnn_conv_algo_search": cudnn_conv_algo_search}


def plan_providers(requested: Sequence[str], *, available: Optional[Sequence[str]] = None,
                   options: Optional[Mapping[str, Mapping[str, str]]] = None) -> ProviderPlan:
    """Keep the requested providers that `available` has (default: this onnxruntime's),
    attaching `options[name]`; raise BundleError if none is left."""
    have = list(available) if available is not None else available_providers()
    options = options or {}
    plan = ProviderPlan(requested=list(requested), providers=[])
    for name in requested:
        if name in have:
            plan.providers.append((name, {k: str(v) for k, v in options.get(name, {}).items()}))
        else:
            plan.notes.append(f"{name} is not available in this onnxruntime (it has {', '.join(have) or 'none'}); "
                              f"{INSTALL_HINT.get(name, 'install an onnxruntime build that has it')}")
    if not plan.providers:
        raise BundleError(f"none of the requested providers ({', '.join(requested)}) is available in this onnxruntime "
                          f"(it has {', '.join(have) or 'none'}); {_fix(requested)}")
    dropped = [n for n in requested if n not in plan.names]
    if dropped:
        plan.notes.append(f"running on {plan.names[0]} instead of {dropped[0]}" if requested[0] in dropped
                          else f"skipping {', '.join(dropped)}")
    return plan


def check_session(session: Any, plan: ProviderPlan) -> List[str]:
    """The providers the session really got; BundleError if its first one was not
    requested, a note in plan.notes if it is not the plan's first choice."""
    active = list(session.get_providers())
    primary = active[0] if active else "none"
    if primary not in plan.requested:
        raise BundleError(f"onnxruntime could not start {plan.names[0]} and fell back to {primary}, which --providers "
                          f"({', '.join(plan.requested)}) does not allow; check the GPU libraries (CUDA, cuDNN, TensorRT) "
                          f"or add {_alias(primary)} to --providers")
    if primary != plan.names[0]:
        plan.notes.append(f"onnxruntime could not start {plan.names[0]} (see its log above); running on {primary}")
    return active


def _flag(value: bool) -> str:
    return "True" if value else "False"


def _alias(name: str) -> str:
    return next((alias for alias, full in ALIASES.items() if full == name and alias != "trt"), name)


def _fix(requested: Sequence[str]) -> str:
    hints = [INSTALL_HINT[n] for n in requested if n in INSTALL_HINT]
    return (hints[0] + ", or add cpu to --providers") if hints else "install onnxruntime"
