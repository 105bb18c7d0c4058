"""TensorRT engines: built on the build host when it can, else deferred to the device.

An engine only runs with the TensorRT version and GPU architecture (compute
capability) that built it. So the engine stage either builds it here, when
TensorRT and a GPU of the device's compute capability are present, or writes
down why not and leaves the build to the bundle's build_engine.sh on the
device. Either way it writes an engine.json record the bundle and report read.

Precision lives in the ONNX: fp16 weights/casts or QDQ int8 nodes make the
network "strongly typed", which TensorRT 10 builds exactly as written and
TensorRT 11 requires (it removed BuilderFlag.FP16/INT8). Only an fp32 ONNX
asked to become fp16 uses the TensorRT 10 weak-typing flag.

Every TensorRT name used here is checked against the real bindings by
tests/test_tensorrt_api.py (fixtures in tests/fixtures/api/). TensorRT, onnx
and CUDA are imported inside functions only: SConstruct imports this module.
"""
from __future__ import annotations

import ctypes
import functools
import importlib.util
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from recipes.errors import ProfileError, StageError
from recipes.fsutil import atomic_path, sha256_file, write_json
from recipes.params import bounded
from recipes.wiring.stage import Format, Stage

if TYPE_CHECKING:  # annotations only; the real import happens inside build_engine
    import tensorrt as trt

    from recipes.wiring.graph import Built, Graph, Model

BUILD_MODES = ("host", "device", "auto", "cluster")


@dataclass(frozen=True)
class EngineParams:
    # host: build the TensorRT engine here (error if impossible); device: ship a
    # build script; auto: host when TensorRT and a matching GPU are present;
    # cluster: build it as a stage on the device's own Ray node (executor=ray; the
    # node offers device:<device.name>), which must have TensorRT `tensorrt`.
    build: Literal["host", "device", "auto", "cluster"] = "auto"
    # The device's TensorRT version (a prefix: "10.3" for JetPack 6), required with
    # build = "cluster": it is in the engine's signature, since the build host cannot
    # read it, and the node refuses to build with another.
    tensorrt: str = ""
    # Builder workspace (MemoryPoolType.WORKSPACE), MiB.
    workspace_mb: int = bounded(1024, min=1, max=1 << 20)
    timing_cache: bool = True
PRECISIONS = ("fp16", "int8")
# TensorRT wheels name the CUDA major they are built for; JetPack's deb does not.
_TRT_DISTRIBUTIONS = ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu13-bindings", "tensorrt-cu12-bindings")
_CUDA_RUNTIME_DISTRIBUTIONS = ("nvidia-cuda-runtime-cu13", "nvidia-cuda-runtime-cu12", "nvidia-cuda-runtime")


# -- what this host has ----------------------------------------------------------

def _tensorrt_version_without_import() -> tuple[Optional[str], Optional[str]]:
    """(version, where) of the `tensorrt` package Python would import, read from files.

    Importing TensorRT takes seconds and loads CUDA; SConstruct only needs to know
    whether it is there and which version it is.
    """
    try:
        spec = importlib.util.find_spec("tensorrt")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return None, None
    init = Path(spec.origin)
    for source in (init, init.parent.parent / "tensorrt_bindings" / "__init__.py"):
        try:
            m = re.search(r"^__version__\s*=\s*[\"']([^\"']+)[\"']", source.read_text(encoding="utf-8"), re.M)
        except OSError:
            continue
        if m:
            return m.group(1), str(init.parent)
    for dist in _TRT_DISTRIBUTIONS:
        try:
            return metadata.version(dist), str(init.parent)
        except metadata.PackageNotFoundError:
            continue
    return "unknown", str(init.parent)


def _nvidia_smi() -> tuple[list[dict[str, str]], Optional[str]]:
    """GPUs from `nvidia-smi --query-gpu`, or the reason there are none."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return [], "nvidia-smi not found"
    try:
        proc = subprocess.run([exe, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return [], f"nvidia-smi failed ({type(e).__name__})"
    if proc.returncode != 0:
        return [], f"nvidia-smi failed: {' '.join((proc.stdout + proc.stderr).split())[:160]}"
    gpus = []
    for line in proc.stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 3:
            gpus.append({"name": parts[0], "compute_capability": parts[1], "driver_version": parts[2]})
    return gpus, None if gpus else "nvidia-smi lists no GPU"


def _libcuda() -> tuple[list[dict[str, str]], Optional[str], Optional[str]]:
    """GPUs and the driver's CUDA version through the CUDA driver API (works where
    nvidia-smi is absent, e.g. some Jetson images): ([gpus], cuda_driver_version, error)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return [], None, "libcuda.so.1 not found (no NVIDIA driver)"
    version = ctypes.c_int(0)
    driver_cuda = None
    if cuda.cuDriverGetVersion(ctypes.byref(version)) == 0 and version.value:
        driver_cuda = f"{version.value // 1000}.{version.value % 1000 // 10}"
    if cuda.cuInit(0) != 0:
        return [], driver_cuda, "cuInit failed (driver present but no usable GPU)"
    count = ctypes.c_int(0)
    if cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
        return [], driver_cuda, "the CUDA driver sees no GPU"
    gpus = []
    for ordinal in range(count.value):
        device, major, minor = ctypes.c_int(0), ctypes.c_int(0), ctypes.c_int(0)
        name = ctypes.create_string_buffer(256)
        cuda.cuDeviceGet(ctypes.byref(device), ordinal)
        # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76
        cuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)
        cuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)
        cuda.cuDeviceGetName(name, len(name), device)
        gpus.append({"name": name.value.decode(errors="replace"), "compute_capability": f"{major.value}.{minor.value}",
                     "driver_version": ""})
    return gpus, driver_cuda, None


def _cuda_runtime_version() -> tuple[Optional[str], Optional[str]]:
    """(version, source) of the CUDA runtime TensorRT would use, without loading it."""
    version_json = Path("/usr/local/cuda/version.json")
    try:
        data = json.loads(version_json.read_text(encoding="utf-8"))
        return str(data["cuda"]["version"]), str(version_json)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for dist in _CUDA_RUNTIME_DISTRIBUTIONS:
        try:
            return metadata.version(dist), f"pip {dist}"
        except metadata.PackageNotFoundError:
            continue
    return None, None


@functools.lru_cache(maxsize=None)
def _cached_status() -> dict[str, Any]:
    trt_version, trt_where = _tensorrt_version_without_import()
    gpus, gpu_error = _nvidia_smi()
    driver_cuda = None
    source = "nvidia-smi" if gpus else None
    if not gpus:
        gpus, driver_cuda, cuda_error = _libcuda()
        source = "libcuda" if gpus else None
        gpu_error = None if gpus else f"{gpu_error}; {cuda_error}"
    runtime, runtime_source = _cuda_runtime_version()
    gpu = gpus[0] if gpus else {}
    return {
        "tensorrt_version": trt_version,
        "tensorrt_location": trt_where,
        "tensorrt_error": None if trt_version else "the tensorrt Python package is not installed",
        "cuda_version": runtime,
        "cuda_source": runtime_source,
        "cuda_driver_version": driver_cuda,
        "gpu_name": gpu.get("name"),
        "compute_capability": gpu.get("compute_capability"),
        "driver_version": gpu.get("driver_version") or None,
        "gpu_count": len(gpus),
        "gpu_probe": source,
        "gpu_error": gpu_error,
    }


def host_tensorrt_status(import_tensorrt: bool = False) -> dict[str, Any]:
    """Can this host build TensorRT engines? Never raises.

    Without import_tensorrt (SConstruct: must stay fast) the TensorRT version is
    read from the installed files; with it (the engine stage) TensorRT is really
    imported, so broken installs (missing libnvinfer) are caught.
    """
    status = dict(_cached_status())
    if import_tensorrt and status["tensorrt_version"]:
        try:
            import tensorrt

            status["tensorrt_version"] = str(tensorrt.__version__)
        except Exception as e:  # ImportError, OSError from a missing libnvinfer, ...
            status["tensorrt_error"] = f"import tensorrt failed: {' '.join(str(e).split())[:200]}"
            status["tensorrt_version"] = None
    status["can_build"] = bool(status["tensorrt_version"] and status["compute_capability"])
    return status


def engine_signature(status: dict[str, Any], build: str = "auto") -> dict[str, Any]:
    """What of the host toolchain determines the engine stage's output (for its Value).

    A device build takes nothing from this host, so it does not depend on it.
    """
    if build == "device":
        return {"build": "device"}
    return {
        "build": build,
        "tensorrt": status.get("tensorrt_version"),
        "cuda": status.get("cuda_version") or status.get("cuda_driver_version"),
        "compute_capability": status.get("compute_capability"),
    }


def describe_host(status: dict[str, Any]) -> str:
    trt_part = (f"TensorRT {status['tensorrt_version']}" if status.get("tensorrt_version")
                else status.get("tensorrt_error") or "no TensorRT")
    if status.get("compute_capability"):
        gpu_part = f"GPU {status.get('gpu_name')} (compute capability {status['compute_capability']})"
    else:
        gpu_part = f"no NVIDIA GPU ({status.get('gpu_error') or 'not found'})"
    return f"{trt_part}, {gpu_part}"


def decide_build(build: str, status: dict[str, Any], compute_capability: str, where: str = "") -> tuple[str, str]:
    """("host" | "device", reason). Raises ProfileError when engine.build = 'host' cannot be honoured."""
    if build not in BUILD_MODES:
        raise ProfileError(f"{where}engine.build = {build!r}: use one of {', '.join(map(repr, BUILD_MODES))}")
    if build == "device":
        return "device", "engine.build = 'device': the bundle's build_engine.sh builds it on the device"
    if not status.get("can_build"):
        if build == "host":
            raise ProfileError(f"{where}engine.build = 'host' needs TensorRT and an NVIDIA GPU on the build host; "
                               f"found {describe_host(status)}; use engine.build = 'device' to build on the device")
        return "device", f"engine.build = 'auto' and this host cannot build: {describe_host(status)}"
    have = status["compute_capability"]
    if compute_capability and have != compute_capability:
        why = (f"the build host's GPU {status.get('gpu_name')} has compute capability {have} but "
               f"device.compute_capability = {compute_capability!r}, and an engine only runs on the GPU architecture "
               "that built it")
        if build == "host":
            raise ProfileError(f"{where}engine.build = 'host': {why}; use engine.build = 'device' to build on the device")
        return "device", f"engine.build = 'auto' and {why}"
    return "host", f"engine.build = {build!r}: built on this host ({describe_host(status)})"


# -- the ONNX --------------------------------------------------------------------

def onnx_precision(onnx_path: Path) -> dict[str, bool]:
    """Whether the ONNX carries its precision: QDQ nodes and/or float16 tensors."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    graph = model.graph
    ops = {node.op_type for node in graph.node}
    fp16 = onnx.TensorProto.FLOAT16
    has_fp16 = (any(t.data_type == fp16 for t in graph.initializer)
                or any(v.type.tensor_type.elem_type == fp16 for v in list(graph.value_info) + list(graph.input) + list(graph.output))
                or any(a.name == "to" and a.i == fp16 for node in graph.node if node.op_type == "Cast" for a in node.attribute))
    return {"qdq": bool(ops & {"QuantizeLinear", "DequantizeLinear"}), "fp16": has_fp16}


def check_precision(precision: str, info: dict[str, bool], onnx_path: Path, name: str) -> bool:
    """Whether to build strongly typed; raises StageError for an ONNX that cannot give `precision`."""
    if precision not in PRECISIONS:
        raise StageError(f"engine {name}: precision {precision!r} is not one TensorRT engines are built in; "
                         f"use {' or '.join(map(repr, PRECISIONS))}")
    if precision == "int8" and not info["qdq"]:
        raise StageError(f"engine {name}: precision 'int8' needs a QDQ ONNX, but {onnx_path} has no "
                         "QuantizeLinear/DequantizeLinear nodes; use quantize.method = 'static' (or 'qat' on a QAT model) for this artifact")
    return info["qdq"] or info["fp16"]


# -- building ----------------------------------------------------------------------

def _parser_errors(parser: trt.OnnxParser) -> str:
    messages = []
    for i in range(parser.num_errors):
        # get_error's pybind11 signature names the C++ type, so say which class it is.
        error: trt.ParserError = parser.get_error(i)
        where = f"node {error.node()} ({error.node_operator()})" if error.node() >= 0 else "model"
        messages.append(f"{where}: {' '.join(error.desc().split())}")
    shown = messages[:5] + ([f"and {len(messages) - 5} more"] if len(messages) > 5 else [])
    return "; ".join(shown) or "no error recorded"


def _profile_shapes(shapes: dict) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    batch, seq = shapes["batch"], shapes["sequence"]
    return ((batch["min"], seq["min"]), (batch["opt"], seq["opt"]), (batch["max"], seq["max"]))


def build_engine(onnx_path: Path | str, dst_engine: Path | str, *, input_names: list[str], shapes: dict,
                 precision: str, workspace_mb: int, timing_cache_path: Path | str | None,
                 strongly_typed: bool = True, name: str = "engine") -> dict[str, Any]:
    """Build a serialized engine from a (precision-explicit) ONNX with the TensorRT Python API.

    shapes = {"batch": {"min", "opt", "max"}, "sequence": {...}}: one optimization
    profile, the same [batch, sequence] range for every input. Returns facts for
    engine.json. Raises StageError with one line on any failure.
    """
    import tensorrt as trt

    onnx_path, dst_engine = Path(onnx_path), Path(dst_engine)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # Explicit batch is the only mode in TensorRT 10 (EXPLICIT_BATCH is deprecated
    # and ignored there, gone in 11), so it is not set. STRONGLY_TYPED makes
    # TensorRT keep the ONNX's own types; in 11 every network is strongly typed.
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # parse_from_file finds external-data files next to the model, parse(bytes) does not.
    if not parser.parse_from_file(str(onnx_path)):
        raise StageError(f"engine {name}: TensorRT's ONNX parser rejected {onnx_path}: {_parser_errors(parser)}")

    found = [network.get_input(i).name for i in range(network.num_inputs)]
    if sorted(found) != sorted(input_names):
        raise StageError(f"engine {name}: {onnx_path} has inputs {found} but the build expects {list(input_names)}; "
                         "re-export the model or fix the input names passed to the engine stage")
    for i in range(network.num_inputs):
        rank = len(network.get_input(i).shape)
        if rank != 2:
            raise StageError(f"engine {name}: input {network.get_input(i).name!r} of {onnx_path} has rank {rank}; "
                             "engines are built for [batch, sequence] inputs")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if not strongly_typed:
        # Weak typing: an fp32 ONNX that TensorRT may run in fp16 (int8 also needs
        # the INT8 flag for QDQ). TensorRT 11 removed these flags.
        fp16_flag = getattr(trt.BuilderFlag, "FP16", None)
        if fp16_flag is None:
            raise StageError(f"engine {name}: TensorRT {trt.__version__} builds only strongly typed networks (no "
                             f"BuilderFlag.FP16), but {onnx_path} carries no precision; give the artifact "
                             "quantize.method = 'fp16' (or 'static' for int8) so the ONNX itself is fp16/QDQ")
        config.set_flag(fp16_flag)
        if precision == "int8":
            int8_flag = getattr(trt.BuilderFlag, "INT8", None)
            if int8_flag is not None:
                config.set_flag(int8_flag)

    profile = builder.create_optimization_profile()
    low, opt, high = _profile_shapes(shapes)
    for input_name in input_names:
        profile.set_shape(input_name, low, opt, high)
    config.add_optimization_profile(profile)

    cache_note = None
    if timing_cache_path is not None:
        timing_cache_path = Path(timing_cache_path)
        data = timing_cache_path.read_bytes() if timing_cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        if not config.set_timing_cache(cache, ignore_mismatch=False):
            # A cache from another GPU or TensorRT version: start a fresh one rather than mix.
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)
            cache_note = "existing cache did not match this GPU/TensorRT; started a new one"
        else:
            cache_note = "loaded" if data else "new"

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise StageError(f"engine {name}: TensorRT could not build an engine from {onnx_path} "
                         f"(precision {precision}, workspace {workspace_mb} MiB); the TensorRT log above says why")

    # Verify our own output before it counts as built: it must load and have our inputs.
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(serialized)
    if engine is None:
        raise StageError(f"engine {name}: the engine TensorRT just built from {onnx_path} does not deserialize")
    io_names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in io_names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    if sorted(inputs) != sorted(input_names):
        raise StageError(f"engine {name}: built engine has inputs {inputs}, expected {list(input_names)}")

    with atomic_path(dst_engine) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(serialized)
    if timing_cache_path is not None:
        updated = config.get_timing_cache()
        if updated is not None:
            with atomic_path(timing_cache_path) as tmp:
                with open(tmp, "wb") as fh:
                    fh.write(updated.serialize())
    return {
        "tensorrt_version": str(trt.__version__),
        "strongly_typed": strongly_typed,
        "inputs": inputs,
        "outputs": [n for n in io_names if n not in inputs],
        "timing_cache": cache_note,
        "engine_sha256": sha256_file(dst_engine),
        "engine_size": dst_engine.stat().st_size,
    }


# -- the stage -----------------------------------------------------------------------

@dataclass(frozen=True)
class EngineArgs:
    onnx: Path
    engine: Path
    record: Path
    name: str
    precision: str
    input_names: tuple[str, ...]
    shapes: dict                     # {"batch": {"min", "opt", "max"}, "sequence": {...}}
    build: Literal["host", "device", "auto", "cluster"] = "auto"
    workspace_mb: int = 1024
    timing_cache_path: Optional[Path] = None
    compute_capability: str = ""
    profile: str = ""                # the profile file, for messages ("targets/jetson.toml")
    strongly_typed: Optional[bool] = None   # None reads it off the ONNX (QDQ nodes or fp16 tensors)
    tensorrt: str = ""               # build = "cluster": the TensorRT version the device node must have


def check_cluster_node(status: dict[str, Any], compute_capability: str, tensorrt: str, name: str) -> str:
    """engine.build = 'cluster', on the device's node: the reason it can build there, or one line why not."""
    node = os.environ.get("EDGESMITH_NODE", "the build host (no Ray node ran this stage)")
    if not status.get("can_build"):
        raise StageError(f"engine {name}: engine.build = 'cluster' but node {node} cannot build TensorRT engines: "
                         f"{describe_host(status)}; install TensorRT {tensorrt} there, or use engine.build = 'device'")
    if compute_capability and status["compute_capability"] != compute_capability:
        raise StageError(f"engine {name}: node {node} has a GPU of compute capability {status['compute_capability']}, "
                         f"device.compute_capability = {compute_capability!r}; start the device's own node with its "
                         "device: resource")
    version = str(status["tensorrt_version"])
    if version != tensorrt and not version.startswith(tensorrt + "."):
        raise StageError(f"engine {name}: node {node} has TensorRT {version}, the profile pins engine.tensorrt = "
                         f"{tensorrt!r}; set engine.tensorrt to the device's version (engines only load with the "
                         "TensorRT that built them)")
    return f"engine.build = 'cluster': built on node {node} ({describe_host(status)})"


def build(args: EngineArgs) -> dict[str, Any]:
    """Build `engine` from `onnx` here, or defer it to the device; always write `record` (engine.json)."""
    onnx, engine, record, name, precision = args.onnx, args.engine, args.record, args.name, args.precision
    input_names, shapes, build, workspace_mb = args.input_names, args.shapes, args.build, args.workspace_mb
    timing_cache_path, compute_capability, profile = args.timing_cache_path, args.compute_capability, args.profile
    strongly_typed = args.strongly_typed
    where = f"{profile}: " if profile else ""
    onnx_path = Path(onnx)
    info = onnx_precision(onnx_path)
    typed = check_precision(precision, info, onnx_path, name)
    if strongly_typed is not None and bool(strongly_typed) != typed:
        # The bundle's build_engine.sh was generated with the caller's value: they must agree.
        raise StageError(f"engine {name}: the build was set up with strongly_typed = {bool(strongly_typed)} but "
                         f"{onnx_path} {'carries' if typed else 'carries no'} precision (QDQ {info['qdq']}, "
                         f"fp16 {info['fp16']}); fix the engine's strongly_typed in the graph")
    status = {} if build == "device" else host_tensorrt_status(import_tensorrt=True)
    if build == "cluster":
        decision, reason = "cluster", check_cluster_node(status, compute_capability, args.tensorrt, name)
    else:
        decision, reason = decide_build(build, status, compute_capability, where)
    entry: dict[str, Any] = {
        "name": name,
        "precision": precision,
        "onnx_sha256": sha256_file(onnx_path),
        "strongly_typed": typed,
        "input_names": list(input_names),
        "shapes": shapes,
        "workspace_mb": workspace_mb,
        "built": decision,
        "reason": reason,
        "engine": None,
    }
    if decision in ("host", "cluster"):
        facts = build_engine(onnx_path, Path(engine), input_names=list(input_names), shapes=shapes,
                             precision=precision, workspace_mb=workspace_mb,
                             timing_cache_path=str(timing_cache_path) if timing_cache_path else None,
                             strongly_typed=typed, name=name)
        entry.update(facts)
        entry["engine"] = Path(engine).name
        entry.update({k: status.get(k) for k in ("cuda_version", "gpu_name", "compute_capability")})
    write_json(Path(record), entry)
    return entry


STAGE = Stage("engine", EngineArgs, build, modules=("formats.tensorrt_engine", "params"), packages=("onnx",))


def check_cluster_profile(g: "Graph", p: Any) -> None:
    """engine.build = 'cluster' needs executor=ray, the device's TensorRT version and its GPU's compute capability."""
    if g.env.get("EDGESMITH_EXECUTION", {}).get("executor") != "ray":
        raise ProfileError(f"{p.source}: engine.build = 'cluster' builds the engine on the device's Ray node; run with "
                           "executor=ray ray_address=HEAD:PORT, or use engine.build = 'auto'")
    if not p.engine.tensorrt:
        raise ProfileError(f"{p.source}: engine.build = 'cluster' needs engine.tensorrt, the device's TensorRT version "
                           "(e.g. \"10.3\" for JetPack 6): it is part of the engine's signature")
    if not p.device.compute_capability:
        raise ProfileError(f"{p.source}: engine.build = 'cluster' needs device.compute_capability (e.g. \"8.7\" for Orin)")


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    """A TensorRT engine: its precision-explicit ONNX (fp16 or QDQ int8), and the
    engine itself where this host can build it (engine.build), else a deferred record."""
    p = g.profile
    name = spec.name
    onnx = g.onnx_for(spec, model)
    if p.engine.build == "cluster":
        # Nothing of this host enters the engine: the profile names the device's TensorRT and GPU.
        check_cluster_profile(g, p)
        status: dict[str, Any] = {}
        decision = "cluster"
        reason = f"engine.build = 'cluster': built on the Ray node offering device:{p.device.name}"
    else:
        status = {} if p.engine.build == "device" else host_tensorrt_status()
        decision, reason = decide_build(p.engine.build, status, p.device.compute_capability, f"{p.source}: ")
    shapes = {"batch": vars(p.shapes.batch), "sequence": vars(p.shapes.sequence)}
    identity = {"onnx": onnx, "name": name, "precision": spec.precision, "input_names": g.input_names, "shapes": shapes,
                "build": decision, "workspace_mb": p.engine.workspace_mb, "compute_capability": p.device.compute_capability,
                "profile": None, "strongly_typed": True, "timing_cache_path": None}
    out = g.stage_dir(f"engine-{spec.precision}", identity)
    # The timing cache is outside the stage's outputs on purpose: it only speeds up later builds.
    cache = g.build / "tensorrt" / f"{g.slug(p.device.name)}.timing-cache" if p.engine.timing_cache else None
    args = EngineArgs(onnx=onnx, engine=out / "model.engine", record=out / "engine.json", name=name, precision=spec.precision,
                      input_names=g.input_names, shapes=shapes, build=decision, workspace_mb=p.engine.workspace_mb,
                      timing_cache_path=cache, compute_capability=p.device.compute_capability, profile=g.rel(Path(p.source)),
                      strongly_typed=True, tensorrt=p.engine.tensorrt if decision == "cluster" else "")
    built = decision in ("host", "cluster")
    targets = [args.record] + ([args.engine] if built else [])
    signature = ({"build": "cluster", "tensorrt": p.engine.tensorrt, "compute_capability": p.device.compute_capability}
                 if decision == "cluster" else engine_signature(status, decision))
    g.stage(STAGE, targets, [onnx], args, signature=signature, device_required=decision == "cluster")
    # engine.json ships too: the device can read which host built the engine, or why it did not.
    bundle = [(onnx, f"models/{name}.onnx"), (args.record, f"engines/{name}.json")]
    # A host-built engine ships under its own name and is never overwritten: an engine the
    # device builds (engines/NAME.engine, not in the manifest) must not break the bundle's
    # verification, and the shipped one stays as the build host made it.
    shipped = f"engines/{name}.host.engine" if built else None
    bundle += [(args.engine, shipped)] if shipped else []
    engine = {"name": name, "onnx": f"models/{name}.onnx", "engine": f"engines/{name}.engine", "shipped": shipped,
              "precision": spec.precision, "strongly_typed": True}
    built_here = decision == "host"
    note = ("TensorRT engine built on this host; accuracy measured on its ONNX with ONNX Runtime" if built_here else
            f"TensorRT engine built on the device's Ray node (device:{p.device.name}); accuracy and latency are of its "
            f"{spec.precision} ONNX on ONNX Runtime, not of the engine" if decision == "cluster" else
            f"engine not built on this host ({reason}); accuracy and latency are of its {spec.precision} ONNX on "
            "ONNX Runtime CPU, not of the engine")
    return g.built(spec, model, path=onnx, files=[onnx], runner="onnx", bundle=bundle, entry=f"models/{name}.onnx", onnx=onnx,
                   manifest={"engine": f"engines/{name}.engine", "engine_shipped": shipped, "engine_build": decision,
                             "engine_reason": reason, "engine_built_here": built_here, "record": f"engines/{name}.json"},
                   note=note, engine=engine, details=args.record)


FORMAT = Format("tensorrt", "tensorrt", {"fp16": ("fp16",), "int8": ("static", "qat")}, declare_artifact)
