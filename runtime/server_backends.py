"""What serve.py runs an artifact with: ONNX Runtime (TensorRT, CUDA or CPU provider) or PyTorch (nf4).

A backend is made once per served artifact from its manifest entry and the
server's arguments; predict(texts) returns one {"label", "score", "scores"}
per text, and `info`/`notes` say what it runs on (shown in /metadata and the log).
"""
from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

from .bundle import Bundle
from .errors import BundleError, one_line
from .onnx_classifier import predictions

Shapes = Mapping[str, Mapping[str, int]]  # {"batch"|"sequence": {"min", "opt", "max"}}


def default_cache_dir(bundle: Path) -> Path:
    # Next to the models for a bundle directory; beside an archive (whose
    # extraction is temporary) so engines survive restarts.
    bundle = bundle.resolve()
    return bundle / "trt_cache" if bundle.is_dir() else bundle.parent / (bundle.name.split(".")[0] + ".trt_cache")


class _MinLength:
    """Pads every batch to at least `length` tokens: a TensorRT engine only takes
    shapes inside its optimization profile, whose minimum may exceed a short batch."""

    def __init__(self, encoder: Any, length: int) -> None:
        self.encoder = encoder
        self.length = length

    def encode(self, texts: Sequence[str]) -> Dict[str, Any]:
        import numpy as np

        arrays = self.encoder.encode(texts)
        short = self.length - arrays["input_ids"].shape[1]
        if short <= 0:
            return arrays
        pads = {"input_ids": self.encoder.pad_id, "attention_mask": 0, "token_type_ids": 0}
        return {k: np.pad(v, ((0, 0), (0, short)), constant_values=pads.get(k, 0)) for k, v in arrays.items()}


class OnnxBackend:
    """An ONNX artifact on ONNX Runtime: TensorRT, CUDA or CPU execution provider."""

    def __init__(self, bundle: Bundle, entry: Dict[str, Any], args: argparse.Namespace, shapes: Shapes) -> None:
        from .providers import (CUDA, TENSORRT, available_providers, check_session, cuda_options, parse_providers,
                                plan_providers, tensorrt_options)

        name = entry["name"]
        requested = parse_providers(args.providers)
        have = available_providers()
        options = {CUDA: cuda_options(device_id=args.device_id, cudnn_conv_algo_search=args.cudnn_conv_algo_search)}
        if TENSORRT in requested and TENSORRT in have:
            precision = entry.get("precision", "")
            cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(Path(args.bundle))
            cache = cache / name
            cache.mkdir(parents=True, exist_ok=True)
            batch, seq = shapes["batch"], shapes["sequence"]
            options[TENSORRT] = tensorrt_options(
                device_id=args.device_id, cache_dir=cache, fp16=precision == "fp16", int8=precision == "int8",
                workspace_mb=args.trt_workspace_mb, input_names=self._input_names(bundle.root / entry["path"]),
                batch=(batch["min"], batch["opt"], batch["max"]),
                sequence=(seq["min"], seq["opt"], max(seq["max"], bundle.manifest["tokenizer"]["max_length"])))
        plan = plan_providers(requested, available=have, options=options)
        # A sentence-embedding bundle's artifact runs the same way; its output is a vector per text (embed).
        open_model = bundle.embedder if bundle.task == "embedding" else bundle.classifier
        self.classifier = open_model(name, threads=args.threads or None, providers=plan.providers)
        self.providers = check_session(self.classifier.session, plan)
        self.notes = plan.notes
        self.batch_size = shapes["batch"]["max"]
        self.info: Dict[str, Any] = {"backend": "onnxruntime", "providers": self.providers, "notes": self.notes}
        if self.providers[0] == TENSORRT:
            self.classifier.encoder = _MinLength(self.classifier.encoder, shapes["sequence"]["min"])
            self.info["trt_cache"] = options[TENSORRT]["trt_engine_cache_path"]

    @staticmethod
    def _input_names(model_path: Path) -> List[str]:
        # The TensorRT profile must name exactly the graph's inputs (a DistilBERT
        # export has no token_type_ids); read them with a cheap unoptimized CPU session.
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BundleError(f"{model_path}: onnxruntime cannot read the model ({one_line(exc)}); rebuild the bundle") from None
        return [i.name for i in session.get_inputs()]

    def predict(self, texts: List[str]) -> List[Dict[str, Any]]:
        return self.classifier.predict(texts, batch_size=self.batch_size)

    def embed(self, texts: List[str]) -> Any:
        return self.classifier.embed(texts, batch_size=self.batch_size)


class TorchBackend:
    """A PyTorch checkpoint (the bitsandbytes nf4 one) loaded with runtime.nf4, the
    loader the build host measured it with: on CUDA in the compute dtype stored in
    the checkpoint, on the CPU in float32."""

    def __init__(self, bundle: Bundle, entry: Dict[str, Any], args: argparse.Namespace, shapes: Shapes) -> None:
        from . import nf4
        from .tokenize import TextEncoder

        name = entry["name"]
        path = bundle.root / entry["path"]
        model_dir = path if path.is_dir() else path.parent  # the artifact may name the weights file
        if bundle.task != "classification":
            raise BundleError(f"artifact {name!r}: the nf4 backend serves classifiers; serve an ONNX artifact of this "
                              f"{bundle.task} bundle")
        try:
            nf4.require_packages()
            torch = nf4.import_heavy("torch")
            if args.threads:
                torch.set_num_threads(args.threads)
            model = nf4.load_nf4(model_dir, args.device, device_id=args.device_id)
        except BundleError as exc:
            raise BundleError(f"artifact {name!r}: {exc}") from None
        if model.config.num_labels != len(bundle.labels):
            raise BundleError(f"artifact {name!r} has {model.config.num_labels} classes but the bundle has labels "
                              f"{bundle.labels}; rebuild the bundle")
        self._torch = torch
        self.model, self.device = model, next(model.parameters()).device
        tokenizer = bundle.manifest["tokenizer"]
        self.encoder = TextEncoder.from_file(bundle.root / tokenizer["path"], tokenizer["max_length"])
        accepted = inspect.signature(model.forward).parameters  # DistilBERT takes no token_type_ids
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
        self.labels = bundle.labels
        self.batch_size = shapes["batch"]["max"]
        self.notes: List[str] = []
        quant = getattr(model.config, "quantization_config", None)
        quant = quant.to_dict() if hasattr(quant, "to_dict") else (quant or {})
        self.info: Dict[str, Any] = {"backend": "torch", "device": str(self.device), "notes": self.notes,
                                     "quantization": quant.get("bnb_4bit_quant_type") or quant.get("quant_method")}

    def predict(self, texts: List[str]) -> List[Dict[str, Any]]:
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                arrays = self.encoder.encode(texts[start:start + self.batch_size])
                feeds = {k: torch.from_numpy(arrays[k]).to(self.device) for k in self.input_names}
                chunks.append(self.model(**feeds).logits.float().cpu().numpy())
        return [p for chunk in chunks for p in predictions(chunk, self.labels)]


BACKENDS = {"onnx": OnnxBackend, "torch": TorchBackend}
