"""Classify texts with a serialized TensorRT engine, through TensorRT's Python API and pycuda.

Every TensorRT and pycuda object lives and dies inside this module: start()
and classify() take and return plain values (paths, texts, dicts). That keeps
tools/api_check.py's check complete: it follows API objects through one
file, and tests/test_tensorrt_api.py checks this file against the real
bindings of every pinned version.

tensorrt and pycuda are imported by start() and the functions below, never
when this module is imported: most bundles run on machines without them.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Sequence

from .errors import BundleError, one_line

if TYPE_CHECKING:  # annotations only: TensorRT and pycuda are imported when an engine runs
    import numpy as np
    import pycuda.driver as cuda
    import tensorrt as trt

Shapes = Mapping[str, Mapping[str, int]]  # {"batch"|"sequence": {"min", "opt", "max"}}: the engine's profile


def start() -> None:
    """Import TensorRT and pycuda, and create the CUDA context, or say in one line why not."""
    try:
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context, released at exit)
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise BundleError(f"the TensorRT backend needs the tensorrt and pycuda packages ({e}); on Jetson install "
                          "JetPack's python3-libnvinfer and pip install pycuda, on x86-64 pip install tensorrt pycuda; "
                          "or run with --backend onnxruntime") from None
    except Exception as e:  # pycuda.autoinit raises driver errors when there is no usable GPU
        raise BundleError(f"cannot start CUDA ({one_line(e, 1000)}); check the NVIDIA driver, "
                          "or run with --backend onnxruntime") from None


def _load_engine(path: Path, name: str) -> trt.ICudaEngine:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise BundleError(f"engine {path} does not load here: engines only run with the TensorRT version and GPU that "
                          f"built them; rebuild it with: python run_engine.py --rebuild --artifact {name}")
    return engine


def _allocate(engine: trt.ICudaEngine, context: trt.IExecutionContext,
              shapes: Shapes) -> dict[str, cuda.DeviceAllocation]:
    """One device buffer per I/O tensor, sized for the profile's largest shapes."""
    import numpy as np
    import pycuda.driver as cuda
    import tensorrt as trt

    largest = (shapes["batch"]["max"], shapes["sequence"]["max"])
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    for name in names:
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            context.set_input_shape(name, largest)
    buffers = {}
    for name in names:
        count = int(np.prod(tuple(context.get_tensor_shape(name))))
        itemsize = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).itemsize
        buffers[name] = cuda.mem_alloc(max(1, count) * itemsize)
        context.set_tensor_address(name, int(buffers[name]))
    return buffers


def _infer(engine: trt.ICudaEngine, context: trt.IExecutionContext, stream: cuda.Stream,
           buffers: dict[str, cuda.DeviceAllocation], feeds: Dict[str, np.ndarray], output_name: str,
           shapes: Shapes) -> np.ndarray:
    """Run one batch: copy in, execute, copy out; returns the output array."""
    import numpy as np
    import pycuda.driver as cuda
    import tensorrt as trt

    for name, array in feeds.items():
        dtype = trt.nptype(engine.get_tensor_dtype(name))
        host = np.ascontiguousarray(array, dtype=dtype)
        if not context.set_input_shape(name, host.shape):
            raise BundleError(f"engine rejects input {name} of shape {list(host.shape)}; its profile allows batch "
                              f"{shapes['batch']['min']}..{shapes['batch']['max']}, sequence "
                              f"{shapes['sequence']['min']}..{shapes['sequence']['max']}")
        cuda.memcpy_htod_async(buffers[name], host, stream)
    if not context.execute_async_v3(stream.handle):
        raise BundleError("TensorRT failed to run the engine (execute_async_v3 returned False); see its log above")
    shape = tuple(context.get_tensor_shape(output_name))
    out = cuda.pagelocked_empty(shape, trt.nptype(engine.get_tensor_dtype(output_name)))
    cuda.memcpy_dtoh_async(out, buffers[output_name], stream)
    stream.synchronize()
    return np.array(out, dtype=np.float32)


def pad_batch(arrays: Dict[str, np.ndarray], rows: int, length: int, pad_id: int) -> Dict[str, np.ndarray]:
    """Pad encoded arrays to the profile's minimum batch and sequence length."""
    import numpy as np

    out = {}
    for name, array in arrays.items():
        fill = pad_id if name == "input_ids" else 0
        grown = np.full((max(rows, array.shape[0]), max(length, array.shape[1])), fill, dtype=array.dtype)
        grown[:array.shape[0], :array.shape[1]] = array
        out[name] = grown
    return out


def classify(engine_path: Path, name: str, texts: Sequence[str], *, tokenizer_path: Path, max_length: int,
             labels: Sequence[str], input_names: Sequence[str], shapes: Shapes,
             batch_size: int) -> List[Dict[str, Any]]:
    """One {"label", "score", "scores"} per text from the engine at `engine_path`.

    Call start() first. Batches are at most the profile's largest batch and
    padded up to its smallest batch and sequence length.
    """
    import pycuda.driver as cuda
    import tensorrt as trt

    from .onnx_classifier import predictions
    from .texts import check_utf8
    from .tokenize import TextEncoder

    check_utf8(texts)  # a lone surrogate would end in a TypeError inside tokenizers
    engine = _load_engine(engine_path, name)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if sorted(inputs) != sorted(input_names) or not outputs:
        raise BundleError(f"engine {name} has inputs {inputs} and outputs {outputs}, expected inputs "
                          f"{list(input_names)}; rebuild it with --rebuild")
    buffers = _allocate(engine, context, shapes)
    stream = cuda.Stream()
    encoder = TextEncoder.from_file(tokenizer_path, min(max_length, shapes["sequence"]["max"]))
    step = min(batch_size, shapes["batch"]["max"])
    results: List[Dict[str, Any]] = []
    for start_at in range(0, len(texts), step):
        chunk = list(texts[start_at:start_at + step])
        arrays = pad_batch({n: a for n, a in encoder.encode(chunk).items() if n in inputs},
                           shapes["batch"]["min"], shapes["sequence"]["min"], encoder.pad_id)
        logits = _infer(engine, context, stream, buffers, arrays, outputs[0], shapes)[:len(chunk)]
        if logits.ndim != 2 or logits.shape[1] != len(labels):
            raise BundleError(f"engine output {outputs[0]} has shape {list(logits.shape)}, expected "
                              f"[batch, {len(labels)}]; rebuild the bundle")
        results += predictions(logits, list(labels))
    return results
