#!/usr/bin/env python
"""Build Hugging Face Optimum's ONNX artifacts for a local sequence classifier.

Run with bench/.venv-optimum/bin/python (Optimum pins transformers<4.58, so it
never goes into the project's .venv). Given a local BertForSequenceClassification
checkpoint (model.safetensors + tokenizer files) it makes, under --out:

    fp32/model.onnx                       main_export(task="text-classification")
    O1/ O2/ O3/model.onnx                 ORTOptimizer + AutoOptimizationConfig.O<n>(for_gpu=False)
    <src>-dynint8-<isa>-<pt|pc>/model.onnx
                                          ORTQuantizer + AutoQuantizationConfig.<isa>(is_static=False,
                                          per_channel=...) applied to <src> in --quantize-from
    optimum_artifacts.json                what was built, how, with which versions, and checks

O4 (fp16, GPU only) is not built. Each artifact directory also holds Optimum's
config.json / ort_config.json / tokenizer files, so ORTModelForSequenceClassification
can load it too.

`--check optimum_artifacts.json` only needs numpy + onnxruntime + tokenizers, so it
also runs under the project's .venv: it loads every artifact in a plain
onnxruntime.InferenceSession there and runs a batch, comparing with fp32.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

# Everything is local: never let transformers / huggingface_hub reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

# The repository's runtime package (stdlib, numpy, tokenizers, onnxruntime: all in this venv too).
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from runtime.integrity import sha256_file as sha256  # noqa: E402

SCHEMA = "edgesmith.optimum_artifacts/1"
LEVELS = ("O1", "O2", "O3")
ISAS = ("avx512_vnni", "avx2")
CHECK_TEXTS = (
    "a gripping, beautifully acted film that stays with you",
    "the plot is thin and the jokes fall flat",
    "it's not bad, but it never quite comes alive",
    "an utterly charming and funny movie",
    "dull , lifeless and far too long",
    "",
)


def log(msg: str) -> None:
    print(f"[build_optimum] {msg}", file=sys.stderr, flush=True)


def dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    names = ("optimum", "optimum-onnx", "transformers", "onnxruntime", "onnx", "torch", "tokenizers", "numpy")
    out = {n: dist_version(n) for n in names}
    out["python"] = platform.python_version()
    return out


def onnx_files(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.suffix == ".onnx")


def describe_onnx(path: Path) -> dict:
    """Static facts about a model file, without loading weights twice."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        ops[key] = ops.get(key, 0) + 1
    used = {"ai.onnx"} | {n.domain for n in m.graph.node if n.domain}
    external = [p.name for p in path.parent.iterdir() if p.name.startswith(path.name) and p != path]
    return {
        # Only the domains the nodes use (ORT's optimizer declares a dozen unused ones).
        "opset": {(o.domain or "ai.onnx"): o.version for o in m.opset_import
                  if (o.domain or "ai.onnx") in used},
        "op_counts": dict(sorted(ops.items())),
        "external_data_files": external,
    }


# --------------------------------------------------------------------------- check
def check_texts_feeds(tokenizer_json: Path | None, input_names: list[str], seq: int = 32):
    """Tokenized CHECK_TEXTS padded to `seq` (tokenizers only); random ids if no tokenizer."""
    import numpy as np

    n = len(CHECK_TEXTS)
    if tokenizer_json is not None and tokenizer_json.is_file():
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(tokenizer_json))
        tok.enable_truncation(seq)
        tok.enable_padding(length=seq, pad_id=tok.token_to_id("[PAD]") or 0)
        encs = tok.encode_batch(list(CHECK_TEXTS))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        types = np.array([e.type_ids for e in encs], dtype=np.int64)
    else:
        rng = np.random.default_rng(0)
        ids = rng.integers(5, 100, size=(n, seq), dtype=np.int64)
        mask = np.ones_like(ids)
        types = np.zeros_like(ids)
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    missing = [k for k in input_names if k not in arrays]
    if missing:
        raise ValueError(f"unexpected model inputs {missing}")
    return {k: arrays[k] for k in input_names}


def run_session(path: Path, tokenizer_json: Path | None, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    feeds = check_texts_feeds(tokenizer_json, names)
    t0 = time.perf_counter()
    out = sess.run(None, feeds)[0]
    return sess, out, time.perf_counter() - t0


def check_artifacts(manifest_path: Path) -> dict:
    """Load each artifact in a plain InferenceSession of *this* interpreter's onnxruntime."""
    import numpy as np
    import onnxruntime as ort

    manifest = json.loads(manifest_path.read_text())
    root = manifest_path.parent
    tok_json = root / manifest.get("tokenizer_json", "fp32/tokenizer.json")
    ref = None
    results = {}
    for art in manifest["artifacts"]:
        path = root / art["path"]
        res: dict = {"loads": False, "runs": False}
        try:
            sess, logits, secs = run_session(path, tok_json)
            res["loads"] = True
            res["runs"] = bool(np.all(np.isfinite(logits)))
            res["input_names"] = [i.name for i in sess.get_inputs()]
            res["output_shape"] = list(logits.shape)
            res["first_run_s"] = round(secs, 4)
            if art["name"] == "fp32":
                ref = logits
            if ref is not None:
                res["max_abs_diff_vs_fp32"] = float(np.max(np.abs(logits - ref)))
                res["argmax_agree_vs_fp32"] = float(np.mean(logits.argmax(-1) == ref.argmax(-1)))
        except Exception as e:  # noqa: BLE001 - the report says what failed
            res["error"] = f"{type(e).__name__}: {e}"
        results[art["name"]] = res
    return {
        "onnxruntime": ort.__version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "all_load_and_run": all(r["loads"] and r["runs"] for r in results.values()),
        "artifacts": results,
    }


# --------------------------------------------------------------------------- build
def torch_reference(model_dir: Path, tokenizer_json: Path | None, input_names: list[str]):
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    feeds = check_texts_feeds(tokenizer_json, input_names)
    with torch.inference_mode():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
    return np.asarray(out, dtype=np.float32)


def tidy_dir(d: Path, produced: Path) -> Path:
    """Make the artifact file d/model.onnx whatever Optimum named it."""
    target = d / "model.onnx"
    if produced != target:
        produced.replace(target)
    return target


def quantization_source(src: Path, scratch: Path) -> tuple[Path, str | None]:
    """The directory ORTQuantizer should read for `src`, and the preprocessing applied.

    ORTQuantizer (optimum-onnx 0.1.0) hands the graph straight to onnxruntime's
    ONNXQuantizer, which since ORT ~1.17 needs a dtype for every MatMul output. On
    O2/O3 graphs those MatMuls follow com.microsoft fused ops (Attention,
    SkipLayerNormalization, BiasGelu/FastGelu) that onnx's shape inference does not
    know, so quantize() fails with "Unable to find data type for weight_name=...".
    ORT's own symbolic shape inference knows the contrib ops: run it once (it only
    adds value_info, the nodes are unchanged) into a scratch copy and quantize that.
    Plain fp32 / O1 graphs are quantized as Optimum would, untouched.
    """
    import onnx

    model = onnx.load(str(src / "model.onnx"))
    if not any(n.domain == "com.microsoft" for n in model.graph.node):
        return src, None
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    if not (scratch / "model.onnx").is_file():
        inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True)
        shutil.copytree(src, scratch, dirs_exist_ok=True)
        onnx.save(inferred, str(scratch / "model.onnx"))
    return scratch, "onnxruntime symbolic_shape_infer (value_info only; contrib ops)"


def require_head(model_dir: Path) -> None:
    """Refuse a checkpoint without a trained classifier (export would invent a random one)."""
    import struct

    weights = model_dir / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{model_dir}: no model.safetensors")
    with open(weights, "rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        names = json.loads(fh.read(size))
    if not any(n.startswith("classifier.") for n in names):
        raise SystemExit(f"{model_dir}: no classifier.* weights; pass the fine-tuned BertForSequenceClassification teacher")


def build(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from optimum.exporters.onnx import main_export
    from optimum.onnxruntime import ORTOptimizer, ORTQuantizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig, AutoQuantizationConfig

    model_dir = Path(args.model).resolve()
    out = Path(args.out).resolve()
    require_head(model_dir)
    if out.exists() and any(out.iterdir()):
        if not args.force:
            raise SystemExit(f"{out} is not empty; pass --force to rebuild it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    artifacts: list[dict] = []
    steps: list[dict] = []
    t_all = time.perf_counter()

    def add(name: str, d: Path, recipe: dict, seconds: float) -> None:
        f = d / "model.onnx"
        artifacts.append({
            "name": name,
            "path": str(f.relative_to(out)),
            "recipe": recipe,
            "build_seconds": round(seconds, 2),
            "size_bytes": f.stat().st_size + sum(p.stat().st_size for p in d.iterdir() if p.name.startswith("model.onnx") and p != f),
            "sha256": sha256(f),
            **describe_onnx(f),
        })
        steps.append({"name": name, "seconds": round(seconds, 2)})
        log(f"{name}: {artifacts[-1]['size_bytes'] / 1e6:.1f} MB in {seconds:.1f}s")

    # (a) fp32 export
    fp32 = out / "fp32"
    t0 = time.perf_counter()
    main_export(
        model_name_or_path=str(model_dir),
        output=fp32,
        task="text-classification",
        opset=args.opset,
        device="cpu",
        local_files_only=True,
        do_validation=True,
        library_name="transformers",
    )
    files = onnx_files(fp32)
    if [p.name for p in files] != ["model.onnx"]:
        raise RuntimeError(f"main_export wrote {[p.name for p in files]}, expected model.onnx")
    add("fp32", fp32, {"step": "export", "api": "optimum.exporters.onnx.main_export",
                       "cli_equivalent": f"optimum-cli export onnx --model {model_dir} --task text-classification"
                                         + (f" --opset {args.opset}" if args.opset else "") + " fp32/",
                       "task": "text-classification", "opset": args.opset or "optimum default",
                       "do_validation": True}, time.perf_counter() - t0)

    # (b) graph optimization O1..O3, CPU (optimize_for_gpu=False)
    sources = {"fp32": fp32}
    for level in args.levels:
        d = out / level
        t0 = time.perf_counter()
        config = getattr(AutoOptimizationConfig, level)(for_gpu=False)
        assert config.optimize_for_gpu is False
        optimizer = ORTOptimizer.from_pretrained(fp32, file_names=["model.onnx"])
        optimizer.optimize(optimization_config=config, save_dir=d, file_suffix=None)
        tidy_dir(d, d / "model.onnx")
        fused = ORTOptimizer.get_fused_operators(d / "model.onnx")
        add(level, d, {"step": "optimize", "api": "optimum.onnxruntime.ORTOptimizer",
                       "config": f"AutoOptimizationConfig.{level}(for_gpu=False)", "source": "fp32",
                       "optimization_level": config.optimization_level,
                       "enable_transformers_specific_optimizations": config.enable_transformers_specific_optimizations,
                       "enable_gelu_approximation": config.enable_gelu_approximation,
                       "fused_operators": fused}, time.perf_counter() - t0)
        sources[level] = d

    # (c) dynamic int8 quantization
    for src in args.quantize_from:
        if src not in sources:
            raise SystemExit(f"--quantize-from {src}: not built (levels built: {list(sources)})")
        for isa in args.isas:
            for per_channel in args.per_channel:
                name = f"{src}-dynint8-{isa}-{'pc' if per_channel else 'pt'}"
                d = out / name
                t0 = time.perf_counter()
                qconfig = getattr(AutoQuantizationConfig, isa)(is_static=False, per_channel=per_channel)
                qsrc, pre = quantization_source(sources[src], out / f".pre-{src}")
                quantizer = ORTQuantizer.from_pretrained(qsrc, file_name="model.onnx")
                quantizer.quantize(save_dir=d, quantization_config=qconfig, file_suffix=None)
                tidy_dir(d, d / "model.onnx")
                add(name, d, {"step": "quantize", "api": "optimum.onnxruntime.ORTQuantizer",
                              "config": f"AutoQuantizationConfig.{isa}(is_static=False, per_channel={per_channel})",
                              "source": src, "preprocess": pre, "is_static": False, "per_channel": per_channel,
                              "reduce_range": qconfig.reduce_range,
                              "weights_symmetric": qconfig.weights_symmetric,
                              "activations_symmetric": qconfig.activations_symmetric,
                              "weights_dtype": qconfig.weights_dtype.name,
                              "activations_dtype": qconfig.activations_dtype.name,
                              "operators_to_quantize": list(qconfig.operators_to_quantize)},
                    time.perf_counter() - t0)

    for d in out.glob(".pre-*"):
        shutil.rmtree(d)

    # Every artifact must load in a plain InferenceSession; compare with PyTorch and fp32.
    import numpy as np

    tok_json = fp32 / "tokenizer.json"
    input_names = None
    ref_torch = None
    for art in artifacts:
        sess, logits, _ = run_session(out / art["path"], tok_json, threads=args.threads)
        art["input_names"] = [i.name for i in sess.get_inputs()]
        art["output_names"] = [o.name for o in sess.get_outputs()]
        if input_names is None:
            input_names = art["input_names"]
            ref_torch = torch_reference(model_dir, tok_json, input_names)
        art["check"] = {
            "loads_in_inference_session": True,
            "finite": bool(np.all(np.isfinite(logits))),
            "max_abs_diff_vs_torch": float(np.max(np.abs(logits - ref_torch))),
            "argmax_agree_vs_torch": float(np.mean(logits.argmax(-1) == ref_torch.argmax(-1))),
        }
        if not art["check"]["finite"]:
            raise RuntimeError(f"{art['name']}: non-finite logits")

    manifest = {
        "schema": SCHEMA,
        "model": str(model_dir),
        "model_config_transformers_version": json.loads((model_dir / "config.json").read_text()).get("transformers_version"),
        "versions": versions(),
        "tokenizer_json": "fp32/tokenizer.json",
        "check_texts": list(CHECK_TEXTS),
        "skipped": {"O4": "AutoOptimizationConfig.O4 is fp16 and GPU-only (for_gpu forced True); not built for CPU"},
        "total_seconds": round(time.perf_counter() - t_all, 2),
        "steps": steps,
        "artifacts": artifacts,
    }
    (out / "optimum_artifacts.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"wrote {out / 'optimum_artifacts.json'} ({len(artifacts)} artifacts, {manifest['total_seconds']:.0f}s)")
    return manifest


# --------------------------------------------------------------------------- tiny model
def make_tiny(dst: Path) -> None:
    """A random 2-layer BertForSequenceClassification + WordPiece tokenizer, for smoke tests."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    dst.mkdir(parents=True, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(list(CHECK_TEXTS) * 4 + ["a good movie", "a bad movie", "great acting and a weak plot"],
                            trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    fast.save_pretrained(dst)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    BertForSequenceClassification(config).eval().save_pretrained(dst, safe_serialization=True)
    log(f"tiny model in {dst}")


# --------------------------------------------------------------------------- cli
def flags(value: str) -> list[bool]:
    return {"false": [False], "true": [True], "both": [False, True]}[value]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="local BertForSequenceClassification checkpoint directory")
    p.add_argument("--out", help="output directory (artifacts + optimum_artifacts.json)")
    p.add_argument("--force", action="store_true", help="wipe a non-empty --out first")
    p.add_argument("--opset", type=int, default=None, help="export opset (default: Optimum's own)")
    p.add_argument("--levels", default="O1,O2,O3", help="comma list of O1,O2,O3 ('' for none); O4 is GPU-only")
    p.add_argument("--quantize-from", default="fp32,O2,O3", help="comma list of sources for dynamic int8")
    p.add_argument("--isas", default="avx512_vnni,avx2", help="AutoQuantizationConfig presets")
    p.add_argument("--per-channel", choices=("false", "true", "both"), default="both")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--check", metavar="MANIFEST", help="only load+run every artifact of MANIFEST with this "
                   "interpreter's onnxruntime (works in the project .venv); prints JSON")
    p.add_argument("--make-tiny", metavar="DIR", help="only write a tiny random BertForSequenceClassification to DIR")
    args = p.parse_args(argv)

    if args.check:
        report = check_artifacts(Path(args.check))
        print(json.dumps(report, indent=2))
        return 0 if report["all_load_and_run"] else 1
    if args.make_tiny:
        make_tiny(Path(args.make_tiny))
        return 0
    if not args.model or not args.out:
        p.error("--model and --out are required (or --check / --make-tiny)")
    args.levels = [x for x in args.levels.split(",") if x]
    bad = [x for x in args.levels if x not in LEVELS]
    if bad:
        p.error(f"--levels: {bad} not in {LEVELS} (O4 is fp16 GPU-only, not supported here)")
    args.quantize_from = [x for x in args.quantize_from.split(",") if x]
    args.isas = [x for x in args.isas.split(",") if x]
    if any(x not in ISAS for x in args.isas):
        p.error(f"--isas must be from {ISAS}")
    args.per_channel = flags(args.per_channel)
    build(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
