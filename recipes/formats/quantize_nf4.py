"""A bitsandbytes nf4 checkpoint of a Hugging Face classifier, for PyTorch serving.

transformers' BitsAndBytesConfig quantizes every nn.Linear to 4-bit NormalFloat
while loading; `save_pretrained` then writes the packed weights and their
quantization state to safetensors, with the config in config.json, so the
server loads it with a plain `from_pretrained(dir)`.

Which Linear layers stay in full precision is computed from the model and
recorded with the reason:

- the classification head: a few thousand weights, and the logits depend on
  them directly;
- layers bitsandbytes cannot run in 4-bit everywhere we run it. Its CPU
  inference kernel (used on CPUs with AVX512-BF16, and under torch.inference_mode)
  repacks weights in blocks of 32 output rows and one absmax per 64-wide input
  block, so out_features must be a multiple of 32 and in_features a multiple
  of the block size 64 ("shape '[32, 0]' is invalid" otherwise). On CUDA an
  in_features that is not a multiple of 64 falls back to dequantize + matmul.

Quantization always runs on the CPU, and the checkpoint is saved before any
forward pass: bitsandbytes repacks CPU weights in place on the first forward
(absmax in bfloat16), so saving after one would change the bytes. Then the
artifact is the same on every build host, and a shared CacheDir stays valid.
Verification reloads the saved files, on the CPU and also on CUDA when present.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import StageError
from recipes.fsutil import atomic_dir, dir_manifest, write_json
from recipes.inputs.checkpoint import TOKENIZER_FILES
from recipes.params import MAX_SAMPLES, MAX_THREADS, bounded
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model

BLOCKSIZE = 64       # bitsandbytes' 4-bit block size (transformers does not expose it)
OUT_ALIGN = 32       # rows per block of bitsandbytes' CPU 4-bit weight packing
COMPUTE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Nf4:
    method: Literal["nf4"]
    double_quant: bool = False
    # The dtype bitsandbytes computes in on CUDA (recorded in the checkpoint's config).
    compute_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    # Eval examples the saved checkpoint is verified on against the float model.
    samples: int = bounded(64, min=1, max=MAX_SAMPLES)
    # 0 = every core of the build host.
    threads: int = bounded(0, min=0, max=MAX_THREADS)
RELOAD_ATOL = 1e-5   # saved-and-reloaded vs in-memory model, same device and dtype
VERIFY_BATCH = 16


def skip_reasons(name: str, in_features: int, out_features: int, head_prefixes: tuple[str, ...]) -> list[str]:
    """Why a Linear layer stays in full precision ([] = it is quantized)."""
    reasons = []
    if any(f"{name}.".startswith(prefix) for prefix in head_prefixes):
        reasons.append("classification head: kept in full precision (small, and the logits depend on it directly)")
    if in_features % BLOCKSIZE:
        reasons.append(f"in_features {in_features} is not a multiple of the 4-bit block size {BLOCKSIZE}")
    if out_features % OUT_ALIGN:
        reasons.append(f"out_features {out_features} is not a multiple of {OUT_ALIGN} (bitsandbytes' CPU weight packing)")
    return reasons


def plan_skips(model: Any, head_prefixes: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    """(skipped Linear layers with shapes and reasons, names of the Linear layers to quantize)."""
    import torch

    skipped, quantized = [], []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        reasons = skip_reasons(name, module.in_features, module.out_features, head_prefixes)
        if reasons:
            skipped.append({"name": name, "in_features": module.in_features, "out_features": module.out_features,
                            "reasons": reasons})
        else:
            quantized.append(name)
    return skipped, quantized


def _logits(model: Any, batches: list[dict[str, np.ndarray]]) -> np.ndarray:
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.inference_mode():
        for feeds in batches:
            out.append(model(**{k: torch.from_numpy(v).to(device) for k, v in feeds.items()}).logits.float().cpu().numpy())
    return np.concatenate(out)


def compare(logits: np.ndarray, reference: np.ndarray) -> dict[str, Any]:
    import numpy as np
    if not np.isfinite(logits).all():
        raise StageError("nf4: the quantized model produced non-finite logits; keep more layers in full precision "
                         "or use another quantization for this model")
    diff = np.abs(logits - reference)
    return {
        "max_abs_logit_diff": float(diff.max()),
        "mean_abs_logit_diff": float(diff.mean()),
        "agreement": float((logits.argmax(axis=1) == reference.argmax(axis=1)).mean()),
    }


def _versions() -> dict[str, str]:
    from importlib import metadata

    return {name: metadata.version(name) for name in ("torch", "transformers", "bitsandbytes", "accelerate")}


def quantize_nf4(model_dir: Path, dst: Path, report_path: Path, params: Nf4, *, input_names: tuple[str, ...],
                 tokenizer_json: Path, max_length: int, texts: list[str], compute_dtype: str = "float16",
                 threads: int = 0) -> dict[str, Any]:
    """Write the nf4 checkpoint (config.json, model.safetensors, tokenizer files, manifest.json)
    into `dst` and a report to `report_path`; `texts` are the verification inputs."""
    import numpy as np
    from recipes.measure.nf4_runner import linear_layers, load_nf4, require_packages, set_compute_dtype

    require_packages()
    if compute_dtype not in COMPUTE_DTYPES:
        raise StageError(f"nf4: compute_dtype {compute_dtype!r} is not one of {', '.join(COMPUTE_DTYPES)}")
    if not texts:
        raise StageError("nf4: no verification texts (the evaluation split is empty); the checkpoint cannot be checked")
    import torch
    from transformers import AutoModelForSequenceClassification, BitsAndBytesConfig

    from recipes.models.archs import arch_for
    from recipes.models.hf import load_classifier, set_threads
    from recipes.textenc import Encoder

    set_threads(threads)
    model_dir, dst = Path(model_dir), Path(dst)
    encoder = Encoder(Path(tokenizer_json), max_length)
    batches = [encoder.encode(texts[i:i + VERIFY_BATCH], input_names) for i in range(0, len(texts), VERIFY_BATCH)]

    reference = load_classifier(model_dir)
    arch = arch_for(reference.config.model_type, str(model_dir / "config.json"))
    skipped, to_quantize = plan_skips(reference, arch.head_prefixes)
    if not to_quantize:
        raise StageError(f"nf4: no Linear layer of {model_dir} can be quantized (every one is skipped: "
                         f"{'; '.join(s['name'] + ': ' + s['reasons'][0] for s in skipped[:3])}); nf4 would only add "
                         "overhead, drop the nf4 artifact from the profile")
    ref_logits = _logits(reference, batches)
    del reference

    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
        llm_int8_skip_modules=[s["name"] for s in skipped],
    )
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), local_files_only=True, use_safetensors=True, quantization_config=config, device_map="cpu",
    ).eval()
    kinds = linear_layers(model)
    # transformers matches skip names as regexes and suffixes; check it did exactly what we planned.
    if sorted(n for n, k in kinds.items() if k == "nf4") != sorted(to_quantize):
        wrong = sorted(set(to_quantize).symmetric_difference(n for n, k in kinds.items() if k == "nf4"))
        raise StageError(f"nf4: transformers quantized a different set of layers than planned (differs at {', '.join(wrong[:5])}); "
                         "check llm_int8_skip_modules matching in this transformers version")

    with atomic_dir(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)  # before any forward: see the module docstring
        for name in TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copyfile(model_dir / name, tmp / name)

        set_compute_dtype(model, torch.float32)
        in_memory = _logits(model, batches)
        del model
        reloaded = load_nf4(tmp, "cpu")
        if sorted(linear_layers(reloaded).items()) != sorted(kinds.items()):
            raise StageError(f"nf4: {dst} reloads with different quantized layers than were saved; the checkpoint is broken")
        cpu_logits = _logits(reloaded, batches)
        del reloaded
        reload_diff = float(np.abs(cpu_logits - in_memory).max())
        if not reload_diff <= RELOAD_ATOL:
            raise StageError(f"nf4: the saved checkpoint reloads with logits {reload_diff:.3g} away from the model that "
                             f"was saved (limit {RELOAD_ATOL}); the safetensors round trip is broken")
        verification: dict[str, Any] = {"texts": len(texts), "cpu": {"compute_dtype": "float32", **compare(cpu_logits, ref_logits)}}
        if torch.cuda.is_available():
            on_gpu = load_nf4(tmp, "cuda")
            verification["cuda"] = {"compute_dtype": compute_dtype, "device": torch.cuda.get_device_name(0),
                                    **compare(_logits(on_gpu, batches), ref_logits)}
            del on_gpu
        (tmp / "manifest.json").write_text(json.dumps({"files": dir_manifest(tmp)}, indent=2, sort_keys=True) + "\n",
                                           encoding="utf-8")
        nf4_bytes = (tmp / "model.safetensors").stat().st_size

    report = {
        "method": "nf4",
        "double_quant": params.double_quant,
        "compute_dtype": compute_dtype,
        "blocksize": BLOCKSIZE,
        "quantized_modules": sorted(n for n, k in kinds.items() if k == "nf4"),
        "skipped_modules": skipped,
        "fp32_bytes": (model_dir / "model.safetensors").stat().st_size,
        "nf4_bytes": nf4_bytes,
        "reload_max_abs_diff": reload_diff,
        "verification": verification,
        "versions": _versions(),
    }
    write_json(Path(report_path), report)
    return report


@dataclass(frozen=True)
class Nf4Args:
    model_dir: Path
    dst: Path
    report: Path
    params: Nf4
    input_names: tuple[str, ...]
    tokenizer_json: Path
    max_length: int
    eval_jsonl: Path


def build(args: Nf4Args) -> dict[str, Any]:
    """Verifies on the first `params.samples` eval examples."""
    from recipes.inputs.data import load_split

    texts = [e.text for e in load_split(args.eval_jsonl)[: args.params.samples]]
    return quantize_nf4(args.model_dir, args.dst, args.report, args.params, input_names=args.input_names,
                        tokenizer_json=args.tokenizer_json, max_length=args.max_length, texts=texts,
                        compute_dtype=args.params.compute_dtype, threads=args.params.threads)


STAGE = Stage("quantize_nf4", Nf4Args, build,
              modules=("formats.quantize_nf4", "measure.nf4_runner", "models.hf", "models.embedding", "models.slim", "textenc", "inputs.data",
                       "models.archs", "inputs.checkpoint", "params", "runtime.nf4", "runtime.tokenize"),
              packages=("torch", "transformers", "bitsandbytes", "accelerate", "safetensors", "tokenizers"))


def declare(g: "Graph", model: "Model", params: Nf4, data_dir: Path, max_length: int) -> tuple[Path, list[Path]]:
    """The nf4 checkpoint directory of `model` and the files that make it up."""
    identity = {"model_dir": model.dir, "params": params, "input_names": g.input_names, "tokenizer_json": model.tokenizer,
                "max_length": max_length, "eval_jsonl": data_dir / "eval.jsonl"}
    out = g.stage_dir("torch-nf4", identity)
    args = Nf4Args(model_dir=model.dir, dst=out / "model", report=out / "quantize.json", params=params,
                   input_names=g.input_names, tokenizer_json=model.tokenizer, max_length=max_length,
                   eval_jsonl=data_dir / "eval.jsonl")
    files = [out / "model" / "config.json", out / "model" / "model.safetensors"]
    g.stage(STAGE, files + [out / "model" / "manifest.json", args.report],
            model.weights + [model.tokenizer, data_dir / "eval.jsonl"], args)
    return out / "model", files
