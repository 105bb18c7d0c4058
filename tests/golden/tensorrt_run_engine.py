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
The code is in runtime/engine_cli.py and runtime/tensorrt_runner.py; this file
holds the values for this bundle.
"""
import sys
from pathlib import Path

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import engine_cli  # noqa: E402

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

SETTINGS = engine_cli.Settings(target=TARGET, description=DESCRIPTION, labels=LABELS, default_artifact=DEFAULT_ARTIFACT,
                               engines=ENGINES, onnx_artifacts=ONNX_ARTIFACTS, input_names=INPUT_NAMES, shapes=SHAPES,
                               workspace_mb=WORKSPACE_MB, bundle_dir=BUNDLE_DIR)


def ensure_engine(root, name, rebuild):
    """The engine file for `name`: built on this device, shipped, or built now."""
    return engine_cli.ensure_engine(Path(root), ENGINES[name], rebuild)


def main(argv=None):
    return engine_cli.main(argv, SETTINGS)


if __name__ == "__main__":
    sys.exit(main())
