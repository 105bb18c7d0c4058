"""run_engine.py's command line (TensorRT bundles): the engine, or the same model's ONNX on ONNX Runtime.

run_engine.py itself only holds the values baked in for its bundle (Settings)
and calls main(). The engine runs in runtime/tensorrt_runner.py; this module
picks the engine file (building it with build_engine.sh when missing) and the
ONNX Runtime providers.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from . import tensorrt_runner
from .bundle import load_bundle
from .errors import BundleError, one_line
from .limits import batch_problem, out_of_range
from .texts import json_line, read_texts

PROG = "run_engine.py"
PROVIDERS = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


@dataclass(frozen=True)
class Settings:
    """The values run_engine.py is generated with."""

    target: str
    description: str
    labels: List[str]
    default_artifact: str
    # name -> {name, onnx, engine, shipped, precision, strongly_typed}; paths relative to the bundle.
    # "engine" is where this device builds the engine; "shipped" is the build host's engine, if any.
    engines: Mapping[str, Mapping[str, Any]]
    onnx_artifacts: List[str]
    input_names: List[str]
    shapes: Mapping[str, Mapping[str, int]]
    workspace_mb: int
    bundle_dir: Path  # where run_engine.py lies: the default --bundle


def parse_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    engines, default = settings.engines, settings.default_artifact
    parser = argparse.ArgumentParser(
        description=f"Classify text as {', '.join(settings.labels)} with the {settings.target} bundle "
                    f"({settings.description}).")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    parser.add_argument("--artifact", choices=sorted(set(engines) | set(settings.onnx_artifacts)),
                        help=f"which model of the bundle to run (default: {default}, or the first engine "
                             "when that is an ONNX model and the backend is tensorrt)")
    parser.add_argument("--backend", default="tensorrt", choices=["tensorrt", "onnxruntime"],
                        help="run the TensorRT engine, or the same model's ONNX with ONNX Runtime (default: %(default)s)")
    parser.add_argument("--provider", default="auto", choices=["auto"] + sorted(PROVIDERS),
                        help="ONNX Runtime execution provider (default: the best one available)")
    parser.add_argument("--batch-size", type=int, default=settings.shapes["batch"]["opt"],
                        help="texts per inference call (default: %(default)s)")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the engine with build_engine.sh first")
    parser.add_argument("--bundle", default=str(settings.bundle_dir), help="bundle directory (default: this one)")
    args = parser.parse_args(argv)
    if args.artifact is None:
        use_engine = args.backend == "tensorrt" and default not in engines
        args.artifact = next(iter(engines)) if use_engine else default
    if args.backend == "tensorrt" and args.artifact not in engines:
        parser.error(f"--artifact {args.artifact} is an ONNX model; run it with --backend onnxruntime")
    # Checked before the bundle is opened; one line, never a silent clamp.
    largest = settings.shapes["batch"]["max"]
    if args.backend == "tensorrt":
        problem = out_of_range("--batch-size", args.batch_size, 1, largest,
                               f"the engine's optimization profile runs at most {largest} texts at once")
    else:
        problem = batch_problem("--batch-size", args.batch_size, largest_profiled=largest)
    if problem:
        parser.exit(2, f"{PROG}: {problem}\n")
    return args


def note(message: str) -> None:
    print(f"{PROG}: note: {message}", file=sys.stderr)


# -- ONNX Runtime ------------------------------------------------------------------

def ort_providers(choice: str, precision: str, bundle_root: Path, settings: Settings) -> List[Union[str, tuple]]:
    """The execution providers to ask for, best first; falls back to CPU with a note."""
    import onnxruntime

    available = onnxruntime.get_available_providers()
    wanted = ["tensorrt", "cuda", "cpu"] if choice == "auto" else [choice]
    batch, seq = settings.shapes["batch"], settings.shapes["sequence"]

    def spec(which: str) -> str:
        return ",".join(f"{name}:{batch[which]}x{seq[which]}" for name in settings.input_names)

    options: Dict[str, Dict[str, Any]] = {
        "tensorrt": {
            "device_id": 0,
            "trt_max_workspace_size": settings.workspace_mb << 20,
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
    chosen: List[Union[str, tuple]] = [(PROVIDERS[w], options[w]) for w in wanted if PROVIDERS[w] in available]
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


def predict_onnxruntime(args: argparse.Namespace, texts: List[str], settings: Settings) -> List[Dict[str, Any]]:
    with load_bundle(args.bundle) as bundle:
        if args.artifact in settings.engines:
            spec = settings.engines[args.artifact]
            providers = ort_providers(args.provider, spec["precision"], bundle.root, settings)
            from .onnx_classifier import Classifier

            outputs = bundle.manifest.get("outputs") or []
            classifier = Classifier(bundle.root / spec["onnx"], bundle.root / bundle.manifest["tokenizer"]["path"],
                                    bundle.labels, max_length=bundle.manifest["tokenizer"]["max_length"],
                                    providers=providers, output_name=outputs[0]["name"] if outputs else None,
                                    context=f"bundle {bundle.source}: ONNX of engine {args.artifact!r} ({spec['onnx']})")
        else:
            precision = bundle.artifact(args.artifact).get("precision", "fp32")
            providers = ort_providers(args.provider, precision, bundle.root, settings)
            classifier = bundle.classifier(args.artifact, providers=providers)
        return classifier.predict(texts, batch_size=args.batch_size)


# -- TensorRT ----------------------------------------------------------------------

def ensure_engine(root: Path, engine: Mapping[str, Any], rebuild: bool) -> Path:
    """The engine file to load: one built on this device, else the one the build host shipped
    (verified with the bundle), else build one now. --rebuild always builds on this device."""
    name = engine["name"]
    path = Path(root) / engine["engine"]
    shipped = engine["shipped"]
    if path.is_file() and not rebuild:
        return path
    if shipped and (Path(root) / shipped).is_file() and not rebuild:
        return Path(root) / shipped
    script = Path(root) / "build_engine.sh"
    note(f"building engine {name} with {script.name} (once; this takes minutes)")
    proc = subprocess.run(["bash", str(script)] + (["--force"] if rebuild else []) + [name],
                          stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0 or not path.is_file():
        raise BundleError(f"building engine {name} failed (build_engine.sh exit status {proc.returncode}); "
                          "see its output above")
    return path


def predict_tensorrt(args: argparse.Namespace, texts: List[str], settings: Settings) -> List[Dict[str, Any]]:
    root = Path(args.bundle)
    if not root.is_dir():
        raise BundleError(f"--bundle {root}: the TensorRT backend needs an extracted bundle directory "
                          "(engines are built into it); extract the archive first")
    with load_bundle(root) as bundle:  # verifies every listed file before anything is loaded
        tokenizer = bundle.manifest["tokenizer"]
        labels = bundle.labels
    tensorrt_runner.start()  # before any engine is built: a build is useless without TensorRT here
    engine_path = ensure_engine(root, settings.engines[args.artifact], args.rebuild)
    return tensorrt_runner.classify(engine_path, args.artifact, texts, tokenizer_path=root / tokenizer["path"],
                                    max_length=tokenizer["max_length"], labels=labels,
                                    input_names=settings.input_names, shapes=settings.shapes,
                                    batch_size=args.batch_size)


def main(argv: Optional[Sequence[str]], settings: Settings) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, settings)
    try:
        texts = read_texts(args.texts, args.file)
        if args.backend == "onnxruntime":
            predictions = predict_onnxruntime(args, texts, settings)
        else:
            predictions = predict_tensorrt(args, texts, settings)
    except BundleError as e:
        print(f"{PROG}: {one_line(e, 1000)}", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictions):
        print(json_line({"text": text, **prediction}))
    return 0
