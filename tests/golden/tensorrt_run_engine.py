#!/usr/bin/env python3
"""Classify text with this edgesmith bundle's TensorRT engine (generated; see README.md).

TensorRT backend (default) needs numpy, tokenizers, TensorRT and pycuda:
    Jetson: JetPack's python3-libnvinfer, then pip install numpy tokenizers pycuda
    x86-64: pip install numpy tokenizers tensorrt pycuda
An engine missing on first start is built with build_engine.sh (once; minutes).
The ONNX Runtime backend runs the same model's ONNX instead:
    pip install numpy tokenizers onnxruntime-gpu   (or onnxruntime for CPU only)
Examples:
    python run_engine.py "The battery lasts all day." "Screen cracked in a week."
    python run_engine.py --file reviews.txt --batch-size 8
    python run_engine.py --backend onnxruntime --provider cuda "Same model, ONNX Runtime."
Prints one JSON object per text: {"text", "label", "score", "scores"}.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import BundleError, load_bundle  # noqa: E402

if TYPE_CHECKING:  # annotations only: TensorRT and pycuda are imported when the backend runs
    import pycuda.driver as cuda
    import tensorrt as trt

TARGET = 'jetson'
DESCRIPTION = 'Jetson Orin: TensorRT engine built on the device from precision-explicit ONNX'
LABELS = ['negative', 'positive']
DEFAULT_ARTIFACT = 'engine_int8'
# name -> {name, onnx, engine, shipped, precision, strongly_typed}; paths relative to the bundle.
# "engine" is where this device builds the engine; "shipped" is the build host's engine, if any.
ENGINES = {e["name"]: e for e in [{'name': 'engine_int8', 'onnx': 'models/engine_int8.onnx', 'engine': 'engines/engine_int8.engine', 'shipped': None, 'precision': 'int8', 'strongly_typed': True}, {'name': 'engine_fp16', 'onnx': 'models/fp32.onnx', 'engine': 'engines/engine_fp16.engine', 'shipped': None, 'precision': 'fp16', 'strongly_typed': False}]}
ONNX_ARTIFACTS = [a["name"] for a in [{'name': 'fp16', 'format': 'onnx', 'precision': 'fp16', 'runtime': 'onnxruntime', 'path': 'models/fp16.onnx', 'quantization': 'fp16'}, {'name': 'engine_int8', 'format': 'tensorrt', 'precision': 'int8', 'runtime': 'tensorrt', 'path': 'models/engine_int8.onnx', 'quantization': 'static'}] if a["format"] == "onnx"]
INPUT_NAMES = ['input_ids', 'attention_mask']
SHAPES = {'batch': {'min': 1, 'opt': 4, 'max': 16}, 'sequence': {'min': 8, 'opt': 128, 'max': 256}}
WORKSPACE_MB = 2048
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class RunError(Exception):
    """A problem to report as one line (exit status 2)."""


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=f"Classify text as {', '.join(LABELS)} with the {TARGET} bundle ({DESCRIPTION}).")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    parser.add_argument("--artifact", choices=sorted(set(ENGINES) | set(ONNX_ARTIFACTS)),
                        help=f"which model of the bundle to run (default: {DEFAULT_ARTIFACT}, or the first engine "
                             "when that is an ONNX model and the backend is tensorrt)")
    parser.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime"],
                        help="run the TensorRT engine, or the same model's ONNX with ONNX Runtime (default: %(default)s)")
    parser.add_argument("--provider", default="auto", choices=["auto"] + sorted(PROVIDERS),
                        help="ONNX Runtime execution provider (default: the best one available)")
    parser.add_argument("--batch-size", type=int, default=SHAPES["batch"]["opt"],
                        help="texts per inference call (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the engine with build_engine.sh first")
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle directory (default: this one)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.artifact is None:
        use_engine = args.backend == "tensorrt" and DEFAULT_ARTIFACT not in ENGINES
        args.artifact = next(iter(ENGINES)) if use_engine else DEFAULT_ARTIFACT
    if args.backend == "tensorrt" and args.artifact not in ENGINES:
        parser.error(f"--artifact {args.artifact} is an ONNX model; run it with --backend onnxruntime")
    return args


def read_texts(args):
    texts = list(args.texts)
    if args.file:
        handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    return texts


def note(message):
    print(f"run_engine.py: note: {message}", file=sys.stderr)


# -- ONNX Runtime ------------------------------------------------------------------

def ort_providers(choice, precision, bundle_root):
    """The execution providers to ask for, best first; falls back to CPU with a note."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["tensorrt", "cuda", "cpu"] if choice == "auto" else [choice]
    batch, seq = SHAPES["batch"], SHAPES["sequence"]

    def spec(which):
        return ",".join(f"{name}:{batch[which]}x{seq[which]}" for name in INPUT_NAMES)

    options = {
        "tensorrt": {
            "device_id": 0,
            "trt_max_workspace_size": WORKSPACE_MB << 20,
            # Precision is in the ONNX; these let TensorRT 10 pick reduced-precision kernels too.
            "trt_fp16_enable": True,
            "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(Path(bundle_root) / "engines" / "ort_cache"),
            "trt_timing_cache_enable": True,
            "trt_profile_min_shapes": spec("min"),
            "trt_profile_opt_shapes": spec("opt"),
            "trt_profile_max_shapes": spec("max"),
        },
        "cuda": {"device_id": 0},
        "cpu": {},
    }
    chosen = [(PROVIDERS[w], options[w]) for w in wanted if PROVIDERS[w] in available]
    if not chosen or chosen[0][0] == PROVIDERS["cpu"] and choice != "cpu":
        missing = ", ".join(PROVIDERS[w] for w in wanted if w != "cpu")
        note(f"{missing} not available in this onnxruntime (it has {', '.join(available)}); running on CPU "
             "(pip install onnxruntime-gpu for the GPU providers)")
        return [PROVIDERS["cpu"]]
    if choice in ("tensorrt", "auto") and chosen[0][0] == PROVIDERS["tensorrt"]:
        Path(options["tensorrt"]["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
    # CUDA after TensorRT: ONNX Runtime gives it the nodes TensorRT does not take.
    if chosen[0][0] == PROVIDERS["tensorrt"] and PROVIDERS["cuda"] in available and len(chosen) == 1:
        chosen.append((PROVIDERS["cuda"], options["cuda"]))
    return chosen


def predict_onnxruntime(args, texts):
    with load_bundle(args.bundle) as bundle:
        if args.artifact in ENGINES:
            spec = ENGINES[args.artifact]
            providers = ort_providers(args.provider, spec["precision"], bundle.root)
            from runtime import Classifier

            outputs = bundle.manifest.get("outputs") or []
            classifier = Classifier(bundle.root / spec["onnx"], bundle.root / bundle.manifest["tokenizer"]["path"],
                                    bundle.labels, max_length=bundle.manifest["tokenizer"]["max_length"],
                                    providers=providers, output_name=outputs[0]["name"] if outputs else None,
                                    context=f"bundle {bundle.source}: ONNX of engine {args.artifact!r} ({spec['onnx']})")
        else:
            precision = bundle.artifact(args.artifact).get("precision", "fp32")
            classifier = bundle.classifier(args.artifact, providers=ort_providers(args.provider, precision, bundle.root))
        return classifier.predict(texts, batch_size=args.batch_size)


# -- TensorRT ----------------------------------------------------------------------

def start_tensorrt():
    """Import TensorRT and pycuda, and create the CUDA context, or say in one line why not."""
    try:
        import pycuda.autoinit  # noqa: F401  (creates the CUDA context, released at exit)
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as e:
        raise RunError(f"the TensorRT backend needs the tensorrt and pycuda packages ({e}); on Jetson install JetPack's "
                       "python3-libnvinfer and pip install pycuda, on x86-64 pip install tensorrt pycuda; "
                       "or run with --backend onnxruntime") from None
    except Exception as e:  # pycuda.autoinit raises driver errors when there is no usable GPU
        raise RunError(f"cannot start CUDA ({' '.join(str(e).split())}); check the NVIDIA driver, "
                       "or run with --backend onnxruntime") from None


def ensure_engine(root, name, rebuild):
    """The engine to load: one built on this device, else the one the build host shipped
    (verified with the bundle), else build one now. --rebuild always builds on this device."""
    path = Path(root) / ENGINES[name]["engine"]
    shipped = ENGINES[name]["shipped"]
    if path.is_file() and not rebuild:
        return path
    if shipped and (Path(root) / shipped).is_file() and not rebuild:
        return Path(root) / shipped
    script = Path(root) / "build_engine.sh"
    note(f"building engine {name} with {script.name} (once; this takes minutes)")
    proc = subprocess.run(["bash", str(script)] + (["--force"] if rebuild else []) + [name],
                          stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0 or not path.is_file():
        raise RunError(f"building engine {name} failed (build_engine.sh exit status {proc.returncode}); "
                       "see its output above")
    return path


def load_engine(path: Path, name: str) -> trt.ICudaEngine:
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise RunError(f"engine {path} does not load here: engines only run with the TensorRT version and GPU that "
                       f"built them; rebuild it with: python run_engine.py --rebuild --artifact {name}")
    return engine


def allocate(engine: trt.ICudaEngine, context: trt.IExecutionContext) -> dict[str, cuda.DeviceAllocation]:
    """One device buffer per I/O tensor, sized for the profile's largest shapes."""
    import numpy as np
    import pycuda.driver as cuda
    import tensorrt as trt

    largest = (SHAPES["batch"]["max"], SHAPES["sequence"]["max"])
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


def infer(engine: trt.ICudaEngine, context: trt.IExecutionContext, stream: cuda.Stream,
          buffers: dict[str, cuda.DeviceAllocation], feeds, output_name):
    """Run one batch: copy in, execute, copy out; returns the output array."""
    import numpy as np
    import pycuda.driver as cuda
    import tensorrt as trt

    for name, array in feeds.items():
        dtype = trt.nptype(engine.get_tensor_dtype(name))
        host = np.ascontiguousarray(array, dtype=dtype)
        if not context.set_input_shape(name, host.shape):
            raise RunError(f"engine rejects input {name} of shape {list(host.shape)}; its profile allows batch "
                           f"{SHAPES['batch']['min']}..{SHAPES['batch']['max']}, sequence "
                           f"{SHAPES['sequence']['min']}..{SHAPES['sequence']['max']}")
        cuda.memcpy_htod_async(buffers[name], host, stream)
    if not context.execute_async_v3(stream.handle):
        raise RunError("TensorRT failed to run the engine (execute_async_v3 returned False); see its log above")
    shape = tuple(context.get_tensor_shape(output_name))
    out = cuda.pagelocked_empty(shape, trt.nptype(engine.get_tensor_dtype(output_name)))
    cuda.memcpy_dtoh_async(out, buffers[output_name], stream)
    stream.synchronize()
    return np.array(out, dtype=np.float32)


def pad_batch(arrays, rows, length, pad_id):
    """Pad encoded arrays to the profile's minimum batch and sequence length."""
    import numpy as np

    out = {}
    for name, array in arrays.items():
        fill = pad_id if name == "input_ids" else 0
        grown = np.full((max(rows, array.shape[0]), max(length, array.shape[1])), fill, dtype=array.dtype)
        grown[:array.shape[0], :array.shape[1]] = array
        out[name] = grown
    return out


def predict_tensorrt(args, texts):
    from runtime.onnx_classifier import predictions
    from runtime.tokenize import TextEncoder

    root = Path(args.bundle)
    if not root.is_dir():
        raise RunError(f"--bundle {root}: the TensorRT backend needs an extracted bundle directory "
                       "(engines are built into it); extract the archive first")
    with load_bundle(root) as bundle:  # verifies every listed file before anything is loaded
        tokenizer = bundle.manifest["tokenizer"]
        labels = bundle.labels
    start_tensorrt()
    import pycuda.driver as cuda
    import tensorrt as trt

    engine = load_engine(ensure_engine(root, args.artifact, args.rebuild), args.artifact)
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    if sorted(inputs) != sorted(INPUT_NAMES) or not outputs:
        raise RunError(f"engine {args.artifact} has inputs {inputs} and outputs {outputs}, expected inputs "
                       f"{INPUT_NAMES}; rebuild it with --rebuild")
    buffers = allocate(engine, context)
    stream = cuda.Stream()
    encoder = TextEncoder.from_file(root / tokenizer["path"], min(tokenizer["max_length"], SHAPES["sequence"]["max"]))
    step = min(args.batch_size, SHAPES["batch"]["max"])
    results = []
    for start in range(0, len(texts), step):
        chunk = texts[start:start + step]
        arrays = pad_batch({n: a for n, a in encoder.encode(chunk).items() if n in inputs},
                           SHAPES["batch"]["min"], SHAPES["sequence"]["min"], encoder.pad_id)
        logits = infer(engine, context, stream, buffers, arrays, outputs[0])[:len(chunk)]
        if logits.ndim != 2 or logits.shape[1] != len(labels):
            raise RunError(f"engine output {outputs[0]} has shape {list(logits.shape)}, expected "
                           f"[batch, {len(labels)}]; rebuild the bundle")
        results += predictions(logits, labels)
    return results


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        texts = read_texts(args)
    except OSError as e:
        print(f"run_engine.py: cannot read --file {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    if not texts:
        print("run_engine.py: no texts given; pass them as arguments or with --file", file=sys.stderr)
        return 2
    try:
        if args.backend == "onnxruntime":
            predictions = predict_onnxruntime(args, texts)
        else:
            predictions = predict_tensorrt(args, texts)
    except (BundleError, RunError) as e:
        print(f"run_engine.py: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictions):
        print(json.dumps({"text": text, **prediction}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
