#!/usr/bin/env python
"""NNCF 3.4 as a peer on the SST-2 teacher: its post-training quantization (PTQ) and its
quantization-aware training (QAT), run on ONNX Runtime and on OpenVINO.

Runs inside the peer venv, bench/nncf/.venv (bench/nncf/setup_venv.sh); it never imports the
project's code. Everything it makes goes under --work (default bench/work/nncf); the report
stage writes bench/results/nncf_peer.{md,json}.

Stages (--stages, in this order; each writes <work>/<stage>.json, so a later one can be rerun alone):

  teacher   fp32 PyTorch logits of the teacher on SST-2 dev (the reference for "agreement"),
            the fp32 ONNX (torch.onnx.export, dynamo=True, opset 18, dynamic batch and sequence)
            and the fp32 OpenVINO IR (ov.convert_model of the PyTorch model); both verified
            against PyTorch on padded and unpadded batches and evaluated on their runtimes.
  onnx_ptq  nncf.quantize(onnx.ModelProto, ..., model_type=TRANSFORMER, subset_size=300) on the
            fp32 ONNX; run on ONNX Runtime (CPUExecutionProvider).
  ov_ptq    nncf.quantize(ov.Model, ..., model_type=TRANSFORMER, subset_size=300) on the fp32 IR;
            run on OpenVINO CPU with INFERENCE_PRECISION_HINT f32.
  qat       NNCF 3.x QAT: nncf.quantize(torch model, ...) (its PTQ initialisation), then one
            epoch of fine-tuning of the returned model with knowledge distillation from the fp32
            teacher's logits; saves the fine-tuned model (state_dict + nncf.torch.get_config).
  qat_export  the fine-tuned QAT model to OpenVINO (ov.convert_model, NNCF's documented export)
            and to ONNX (every route tried and recorded), each run on its runtime.
  time      latency at batch 1 and 32, sequence 128, 2 threads: each (model, batch) in its own
            process (--worker), models alternating over rounds, order rotated each round.
  report    bench/results/nncf_peer.md and bench/results/nncf_peer.json.

  bench/nncf/.venv/bin/python bench/nncf/run_nncf.py                  # everything, the full recipe
  bench/nncf/.venv/bin/python bench/nncf/run_nncf.py --all-onnx-routes --qat-max-minutes 15 --qat-calibration 100
      # the recorded run (bench/results/nncf_peer.md): QAT bounded for a busy 2-core host
  bench/nncf/.venv/bin/python bench/nncf/run_nncf.py --stages time,report      # another timing pass
  bench/nncf/.venv/bin/python bench/nncf/run_nncf.py --limit 64 --calibration 20 --work /tmp/nncf-smoke \
      --results /tmp/nncf-smoke/results --rounds 1 --repeats 2 --repeats-large 1 --warmup 1 --warmup-s 0   # smoke
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# NNCF compiles its C++ QAT kernels on first use under a 60 s limit; setup_venv.sh builds them once, and a
# busy 2-core host may need longer if the cache is gone.
os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")

ROOT = Path(__file__).resolve().parents[2]
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
STAGES = ("teacher", "onnx_ptq", "ov_ptq", "qat", "qat_export", "time", "report")
SEED = 42
EVAL_BATCH = 32                  # examples per runner call on dev (as the project's evaluation)
OPSET = 18
VERSIONS = ("nncf", "openvino", "onnxruntime", "onnx", "onnxscript", "torch", "transformers", "tokenizers", "numpy")


def log(msg: str) -> None:
    print(f"[run_nncf] {msg}", file=sys.stderr, flush=True)


def rel(path: Path | str) -> str:
    """A path as results files name it: relative to the repo, never this machine's absolute path."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def file_size(path: Path) -> int:
    """Bytes of a model: ONNX file (+ external data next to it) or IR .xml + .bin."""
    path = Path(path)
    if path.suffix == ".xml":
        return path.stat().st_size + path.with_suffix(".bin").stat().st_size
    return sum(p.stat().st_size for p in path.parent.iterdir() if p.name.startswith(path.name))


def one_line(exc: BaseException, limit: int = 500) -> str:
    """The exception as one line: ANSI colours dropped; torch.export's long advice cut to its summary."""
    import re

    text = re.sub(r"\x1b\[[0-9;]*m|\[[0-9;]+m", "", str(exc))
    where = re.search(r'The following call raised this error:\s*File "([^"]+)", line (\d+), in (\w+)', text)
    if "## Exception summary" in text:
        text = text.split("## Exception summary", 1)[1]
        text = text.split("For more information", 1)[0].split("consider using", 1)[0]
    text = " ".join(text.split())
    if where:
        text += f" (raised in {where.group(1).split('site-packages/')[-1]}:{where.group(2)}, {where.group(3)})"
    return f"{type(exc).__name__}: {text[:limit]}"


# --------------------------------------------------------------------------- inputs

def locate_inputs(args: argparse.Namespace) -> None:
    """Teacher and data from the CPU bench build's report (bench/cpu_sst2.toml), unless given."""
    report = ROOT / "build" / "cpu_sst2" / "report.json"
    inputs = read_json(report)["inputs"] if report.is_file() else {}
    if args.teacher is None:
        if not inputs.get("teacher_dir"):
            raise SystemExit(f"no --teacher and no {rel(report)} to read it from; build bench/cpu_sst2.toml or pass --teacher")
        args.teacher = ROOT / inputs["teacher_dir"]
    if args.data_dir is None:
        if not inputs.get("data_dir"):
            raise SystemExit(f"no --data-dir and no {rel(report)} to read it from; pass --data-dir (train.jsonl, eval.jsonl)")
        args.data_dir = ROOT / inputs["data_dir"]
    if args.build_teacher_logits is None and inputs.get("teacher_eval_dir"):
        cand = ROOT / inputs["teacher_eval_dir"] / "logits.npy"
        args.build_teacher_logits = cand if cand.is_file() else None
    for need in (args.teacher / "model.safetensors", args.teacher / "tokenizer.json", args.data_dir / "train.jsonl",
                 args.data_dir / "eval.jsonl"):
        if not need.is_file():
            raise SystemExit(f"missing {need}")


TEACHER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "vocab.txt")


def sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def snapshot_inputs(args: argparse.Namespace) -> None:
    """Copy the teacher and the data split into <work>/inputs once, and use the copies.

    The build directory is shared: another build may rewrite build/stages/* while this runs
    (a stage whose signature changed is rebuilt in place). The copy keeps one run on one teacher;
    its sha256 goes in the results."""
    import shutil

    dst_t, dst_d = args.work / "inputs" / "teacher", args.work / "inputs" / "data"
    stamp = args.work / "inputs" / "source.json"
    if not stamp.is_file() or args.refresh_inputs:
        if dst_t.parent.exists():
            shutil.rmtree(dst_t.parent)
        dst_t.mkdir(parents=True)
        dst_d.mkdir(parents=True)
        for name in TEACHER_FILES:
            if (args.teacher / name).is_file():
                shutil.copy2(args.teacher / name, dst_t / name)
        for name in ("train.jsonl", "eval.jsonl", "data.json"):
            if (args.data_dir / name).is_file():
                shutil.copy2(args.data_dir / name, dst_d / name)
        write_json(stamp, {"teacher": rel(args.teacher), "data_dir": rel(args.data_dir),
                           "teacher_sha256": sha256(dst_t / "model.safetensors"),
                           "copied_at": time.strftime("%Y-%m-%d %H:%M:%S")})
    args.source = read_json(stamp)
    args.teacher, args.data_dir = dst_t, dst_d


def load_split(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return rows[:limit] if limit else rows


def label_ids(rows: list[dict[str, str]], teacher: Path) -> list[int]:
    label2id = read_json(teacher / "config.json").get("label2id") or {"negative": 0, "positive": 1}
    return [int(label2id[r["label"]]) for r in rows]


def calibration_indices(total: int, count: int) -> list[int]:
    """`count` evenly spread positions of the (id-sorted) train split: every k-th row."""
    count = min(count, total)
    step = max(1, total // count)
    return list(range(0, total, step))[:count]


class Tok:
    """tokenizers.Tokenizer from the teacher's tokenizer.json: truncation to max_length, padding to
    the batch's longest (or to `fixed`), token_type_ids all 0 (single sentences)."""

    def __init__(self, tokenizer_json: Path):
        from tokenizers import Tokenizer

        self.path = tokenizer_json
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.pad_id = self.tok.token_to_id("[PAD]")
        if self.pad_id is None:
            raise SystemExit(f"{tokenizer_json}: no [PAD] token")

    def encode(self, texts: list[str], max_length: int, fixed: int | None = None) -> dict[str, Any]:
        import numpy as np

        self.tok.enable_truncation(max_length)
        self.tok.enable_padding(pad_id=self.pad_id, pad_token="[PAD]", length=fixed)
        enc = self.tok.encode_batch(list(texts))
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}


def full_length_texts(texts: list[str], batch: int) -> list[str]:
    """`batch` rows long enough to fill the sequence with real tokens (as bench/cpu_runtimes.py times)."""
    return [" ".join(texts[i % len(texts):] + texts[:i % len(texts)]) for i in range(batch)]


# --------------------------------------------------------------------------- runners

def ort_runner(path: Path, threads: int) -> Callable[[dict], Any]:
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    return lambda feeds: np.asarray(sess.run(None, {k: feeds[k] for k in names})[0], dtype=np.float32)


def ov_runner(path_or_model: Any, threads: int) -> Callable[[dict], Any]:
    import numpy as np
    import openvino as ov

    core = ov.Core()
    props = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(str(path_or_model) if isinstance(path_or_model, Path) else path_or_model, "CPU", props)
    got = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    if "f32" not in got and "float32" not in got:
        raise RuntimeError(f"OpenVINO compiled for {got}, not f32")
    request = compiled.create_infer_request()
    names = [p.get_any_name() for p in compiled.inputs]
    out = compiled.output(0)
    return lambda feeds: np.array(request.infer({k: feeds[k] for k in names})[out], dtype=np.float32)


def torch_runner(model: Any) -> Callable[[dict], Any]:
    import torch

    def run(feeds: dict) -> Any:
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        out = out.logits if hasattr(out, "logits") else out
        return out.float().numpy()
    return run


def dev_logits(run: Callable[[dict], Any], tok: Tok, texts: list[str], max_length: int) -> Any:
    import numpy as np

    chunks = [run(tok.encode(texts[i:i + EVAL_BATCH], max_length)) for i in range(0, len(texts), EVAL_BATCH)]
    return np.concatenate(chunks).astype(np.float32)


def metrics(logits: Any, gold: Any, ref: Any | None) -> dict[str, Any]:
    import numpy as np

    pred = logits.argmax(1)
    out = {"examples": int(len(gold)), "accuracy": float((pred == gold).mean())}
    if ref is not None:
        out["agreement"] = float((pred == ref.argmax(1)).mean())
        out["max_abs_logit_diff"] = float(np.abs(logits - ref).max())
    return out


def verify_inputs(tok: Tok, texts: list[str]) -> list[dict[str, Any]]:
    """Shapes the fp32 conversions are checked on: padded batches, an unpadded single text, fixed 128."""
    return [tok.encode(texts[:8], 128), tok.encode(texts[8:9], 128), tok.encode(texts[9:12], 128, fixed=128),
            tok.encode([" ".join(texts)], 128)]


def save_torch_as_ov(module: Any, example: tuple, xml: Path) -> tuple[Path, Any]:
    """A PyTorch module as an fp32 OpenVINO IR (ov.convert_model), its inputs and output named as ours are."""
    import openvino as ov
    import torch

    with torch.no_grad():
        ov_model = ov.convert_model(module, example_input=example)
    for port, name in zip(ov_model.inputs, INPUT_NAMES):
        port.get_tensor().set_names({name})
    ov_model.outputs[0].get_tensor().set_names({"logits"})
    xml.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov_model, str(xml), compress_to_fp16=False)
    return xml, ov_model


def max_diff(run_a: Callable, run_b: Callable, feeds_list: list[dict]) -> float:
    import numpy as np

    return max(float(np.abs(run_a(f) - run_b(f)).max()) for f in feeds_list)


# --------------------------------------------------------------------------- models

def load_teacher(teacher: Path, dropout: bool = True) -> Any:
    """The fine-tuned BertForSequenceClassification, eager attention (MatMul/Softmax/MatMul, which every
    NNCF backend quantizes the same way), eval mode. dropout=False sets the dropout probabilities to 0
    (NNCF's QAT guide: turn Dropout off when training with quantization)."""
    from transformers import AutoModelForSequenceClassification

    extra = {} if dropout else {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    model = AutoModelForSequenceClassification.from_pretrained(
        str(teacher), local_files_only=True, use_safetensors=True, attn_implementation="eager", **extra)
    return model.eval()


def logits_module(model: Any) -> Any:
    """Positional (input_ids, attention_mask, token_type_ids) in, logits out: one output for every export."""
    import torch

    class Logits(torch.nn.Module):
        def __init__(self, inner: Any):
            super().__init__()
            self.model = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).logits

    return Logits(model).eval()


def torch_feeds(feeds: dict) -> dict:
    import torch

    return {k: torch.from_numpy(v) for k, v in feeds.items()}


def export_onnx(module: Any, example: dict, dst: Path) -> dict[str, Any]:
    """torch.onnx.export with the torch.export-based exporter (dynamo=True), dynamic batch and sequence."""
    import torch

    dst.parent.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("sequence", min=2, max=512)
    t0 = time.perf_counter()
    torch.onnx.export(module, tuple(torch_feeds(example)[n] for n in INPUT_NAMES), str(dst), input_names=list(INPUT_NAMES),
                      output_names=["logits"], dynamic_shapes={n: {0: batch, 1: seq} for n in INPUT_NAMES},
                      opset_version=OPSET, dynamo=True, external_data=False, optimize=True, verbose=False)
    return {"seconds": round(time.perf_counter() - t0, 2)}


def onnx_facts(path: Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
        ops[key] = ops.get(key, 0) + 1
    init: dict[str, int] = {}
    for t in m.graph.initializer:
        name = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).name
        init[name] = init.get(name, 0) + (len(t.raw_data) if t.raw_data else 0)
    return {"opset": {(o.domain or "ai.onnx"): o.version for o in m.opset_import}, "op_counts": dict(sorted(ops.items())),
            "initializer_bytes_by_dtype": init}


def ov_facts(model: Any) -> dict[str, Any]:
    ops: dict[str, int] = {}
    for op in model.get_ordered_ops():
        ops[op.get_type_name()] = ops.get(op.get_type_name(), 0) + 1
    return {"op_counts": dict(sorted(ops.items())),
            "inputs": [f"{p.get_any_name()} {p.get_partial_shape()}" for p in model.inputs]}


# --------------------------------------------------------------------------- nncf logging

class Captured(logging.Handler):
    """NNCF's warnings during a step, kept for the record."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(" ".join(record.getMessage().split())[:400])


@contextlib.contextmanager
def nncf_warnings():
    handler = Captured()
    logger = logging.getLogger("nncf")
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)


# --------------------------------------------------------------------------- stages

class Ctx:
    def __init__(self, args: argparse.Namespace):
        import numpy as np

        self.args = args
        self.work: Path = args.work
        self.tok = Tok(args.teacher / "tokenizer.json")
        self.train = load_split(args.data_dir / "train.jsonl", args.limit)
        self.dev = load_split(args.data_dir / "eval.jsonl", args.limit)
        self.dev_texts = [r["text"] for r in self.dev]
        self.dev_gold = np.array(label_ids(self.dev, args.teacher))
        self.calib_idx = calibration_indices(len(self.train), args.calibration)
        # Batch-1, unpadded calibration feeds (as single texts reach the device), truncated at the eval length.
        self.calib = [self.tok.encode([self.train[i]["text"]], args.eval_length) for i in self.calib_idx]

    def ref_logits(self) -> Any:
        import numpy as np

        return np.load(self.work / "teacher_dev_logits.npy")

    def evaluate(self, run: Callable[[dict], Any]) -> tuple[dict[str, Any], Any]:
        logits = dev_logits(run, self.tok, self.dev_texts, self.args.eval_length)
        return metrics(logits, self.dev_gold, self.ref_logits()), logits


def set_threads(n: int) -> None:
    import torch

    torch.manual_seed(SEED)
    torch.set_num_threads(n)
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


def stage_teacher(ctx: Ctx) -> dict[str, Any]:
    import numpy as np

    args, work = ctx.args, ctx.work
    out: dict[str, Any] = {"models": {}}
    model = load_teacher(args.teacher)
    wrapped = logits_module(model)
    t0 = time.perf_counter()
    logits = dev_logits(torch_runner(model), ctx.tok, ctx.dev_texts, args.eval_length)
    np.save(work / "teacher_dev_logits.npy", logits)
    out["teacher"] = {**metrics(logits, ctx.dev_gold, None), "seconds": round(time.perf_counter() - t0, 2),
                      "path": args.source["teacher"], "model_sha256": args.source["teacher_sha256"],
                      "attention": "eager"}
    if args.build_teacher_logits is not None and not args.limit:
        build = np.load(args.build_teacher_logits)
        if build.shape == logits.shape:
            out["teacher"]["vs_build_teacher_logits"] = {
                "file": rel(args.build_teacher_logits), "max_abs_diff": float(np.abs(build - logits).max()),
                "argmax_agreement": float((build.argmax(1) == logits.argmax(1)).mean())}
    log(f"teacher fp32 (PyTorch): accuracy {out['teacher']['accuracy']:.4f} on {len(ctx.dev)} dev sentences")
    checks = verify_inputs(ctx.tok, ctx.dev_texts)
    ref_run = torch_runner(wrapped)

    # fp32 ONNX, run on ONNX Runtime
    onnx_path = work / "fp32_onnx" / "model.onnx"
    info = export_onnx(wrapped, ctx.tok.encode(ctx.dev_texts[:2], 16, fixed=16), onnx_path)
    run = ort_runner(onnx_path, args.threads)
    info["max_abs_diff_vs_torch"] = max_diff(run, ref_run, checks)
    m, _ = ctx.evaluate(run)
    out["models"]["fp32_onnx"] = {"runtime": "onnxruntime", "path": rel(onnx_path), "size_bytes": file_size(onnx_path),
                                  **m, "export": info, **onnx_facts(onnx_path),
                                  "how": f"torch.onnx.export(dynamo=True, opset {OPSET}, dynamic batch/sequence)"}
    log(f"fp32_onnx: {m['accuracy']:.4f} / agreement {m['agreement']:.4f}; |diff| vs torch {info['max_abs_diff_vs_torch']:.2e}")

    # fp32 OpenVINO IR converted from PyTorch, run with f32 inference precision
    t0 = time.perf_counter()
    example = tuple(torch_feeds(ctx.tok.encode(ctx.dev_texts[:2], 16, fixed=16))[n] for n in INPUT_NAMES)
    xml, ov_model = save_torch_as_ov(wrapped, example, work / "fp32_ov" / "model.xml")
    info = {"seconds": round(time.perf_counter() - t0, 2)}
    run = ov_runner(xml, args.threads)
    info["max_abs_diff_vs_torch"] = max_diff(run, ref_run, checks)
    m, _ = ctx.evaluate(run)
    out["models"]["fp32_ov"] = {"runtime": "openvino", "path": rel(xml), "size_bytes": file_size(xml), **m,
                                "export": info, **ov_facts(ov_model),
                                "how": "ov.convert_model(PyTorch model, example_input) -> ov.save_model(compress_to_fp16=False)"}
    log(f"fp32_ov: {m['accuracy']:.4f} / agreement {m['agreement']:.4f}; |diff| vs torch {info['max_abs_diff_vs_torch']:.2e}")
    return out


def stage_onnx_ptq(ctx: Ctx) -> dict[str, Any]:
    import nncf
    import onnx

    args, work = ctx.args, ctx.work
    src = work / "fp32_onnx" / "model.onnx"
    model = onnx.load(str(src))
    dataset = nncf.Dataset(ctx.calib)          # items are {input name: int64 array}: the ONNX model's feeds
    t0 = time.perf_counter()
    with nncf_warnings() as warns:
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=args.calibration)
    seconds = time.perf_counter() - t0
    dst = work / "ptq_onnx" / "model.onnx"
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(quantized, str(dst))
    m, _ = ctx.evaluate(ort_runner(dst, args.threads))
    log(f"ptq_onnx: {m['accuracy']:.4f} / agreement {m['agreement']:.4f} ({seconds:.0f} s)")
    return {"models": {"ptq_onnx": {
        "runtime": "onnxruntime", "path": rel(dst), "size_bytes": file_size(dst), **m, **onnx_facts(dst),
        "quantize_seconds": round(seconds, 2), "calibration_samples": len(ctx.calib), "nncf_warnings": warns,
        "how": f"nncf.quantize(onnx.ModelProto, nncf.Dataset({len(ctx.calib)} train sentences), "
               f"model_type=TRANSFORMER, subset_size={args.calibration}); defaults otherwise"}}}


def stage_ov_ptq(ctx: Ctx) -> dict[str, Any]:
    import nncf
    import openvino as ov

    args, work = ctx.args, ctx.work
    model = ov.Core().read_model(str(work / "fp32_ov" / "model.xml"))
    dataset = nncf.Dataset(ctx.calib)
    t0 = time.perf_counter()
    with nncf_warnings() as warns:
        quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=args.calibration)
    seconds = time.perf_counter() - t0
    dst = work / "ptq_ov" / "model.xml"
    dst.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(quantized, str(dst), compress_to_fp16=False)
    m, _ = ctx.evaluate(ov_runner(dst, args.threads))
    log(f"ptq_ov: {m['accuracy']:.4f} / agreement {m['agreement']:.4f} ({seconds:.0f} s)")
    return {"models": {"ptq_ov": {
        "runtime": "openvino", "path": rel(dst), "size_bytes": file_size(dst), **m, **ov_facts(quantized),
        "quantize_seconds": round(seconds, 2), "calibration_samples": len(ctx.calib), "nncf_warnings": warns,
        "how": f"nncf.quantize(ov.Model of fp32_ov, nncf.Dataset({len(ctx.calib)} train sentences), "
               f"model_type=TRANSFORMER, subset_size={args.calibration}); defaults otherwise; "
               "ov.save_model(compress_to_fp16=False)"}}}


def train_teacher_logits(ctx: Ctx, model: Any) -> Any:
    import numpy as np

    texts = [r["text"] for r in ctx.train]
    run = torch_runner(model)
    chunks = [run(ctx.tok.encode(texts[i:i + 64], ctx.args.train_length)) for i in range(0, len(texts), 64)]
    return np.concatenate(chunks).astype(np.float32)


def quantizer_count(qmodel: Any) -> dict[str, int]:
    """NNCF's fake quantizers in the torch model: per-channel ones are on weights, per-tensor on activations."""
    from nncf.torch.function_hook.wrapper import get_hook_storage
    from nncf.torch.quantization.layers import BaseQuantizer

    qs = [m for _, m in get_hook_storage(qmodel).named_hooks() if isinstance(m, BaseQuantizer)]
    return {"total": len(qs), "per_channel": sum(bool(q.per_channel) for q in qs),
            "per_tensor": sum(not q.per_channel for q in qs)}


def cpu_extension() -> str:
    """Whether NNCF's QAT ran on its compiled C++ CPU kernels or fell back on torch's reference ops."""
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPU

    ns = QuantizedFunctionsCPU._loaded_namespace
    if ns is None:
        return "not loaded"
    return "torch reference ops (the C++ extension did not compile)" if isinstance(ns, type) else "compiled C++ CPU extension"


def stage_qat(ctx: Ctx) -> dict[str, Any]:
    import nncf
    import numpy as np
    import torch
    import torch.nn.functional as F

    args, work = ctx.args, ctx.work
    out: dict[str, Any] = {}
    teacher = load_teacher(args.teacher)
    t0 = time.perf_counter()
    t_logits = train_teacher_logits(ctx, teacher)
    out["teacher_train_logits_seconds"] = round(time.perf_counter() - t0, 2)
    del teacher

    student = logits_module(load_teacher(args.teacher, dropout=False))
    # QAT's initialisation may use fewer of the same calibration sentences (--qat-calibration): NNCF's
    # torch backend collects statistics through Python hooks, seconds per sample on a busy 2-core host.
    n_cal = args.qat_calibration or len(ctx.calib)
    keep = calibration_indices(len(ctx.calib), n_cal)
    calib = [torch_feeds(ctx.calib[i]) for i in keep]
    out["calibration_samples"] = len(calib)
    t0 = time.perf_counter()
    with nncf_warnings() as warns:
        qmodel = nncf.quantize(student, nncf.Dataset(calib), model_type=nncf.ModelType.TRANSFORMER,
                               subset_size=len(calib))
    out["init_seconds"] = round(time.perf_counter() - t0, 2)
    out["nncf_warnings"] = warns
    out["quantizers"] = quantizer_count(qmodel)
    qmodel.eval()
    t0 = time.perf_counter()
    m_init, _ = ctx.evaluate(torch_runner(qmodel))
    out["init_eval_seconds"] = round(time.perf_counter() - t0, 2)
    out["init_metrics"] = m_init
    log(f"qat init (PTQ in PyTorch, fake-quant): {m_init['accuracy']:.4f} / agreement {m_init['agreement']:.4f} "
        f"({out['init_seconds']:.0f} s)")

    # One epoch of knowledge distillation: 0.5 * CE(labels) + 0.5 * T^2 * KL(teacher || student) at T = 2.
    texts = [r["text"] for r in ctx.train]
    labels = torch.tensor(label_ids(ctx.train, args.teacher))
    teacher_t = torch.from_numpy(t_logits)
    n = len(texts) if not args.qat_examples else min(args.qat_examples, len(texts))
    gen = torch.Generator().manual_seed(SEED)
    order = torch.randperm(len(texts), generator=gen)[:n].tolist()
    params = [p for p in qmodel.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr)
    T, alpha = args.temperature, args.alpha
    qmodel.train()
    history = []
    t0 = time.perf_counter()
    steps = 0
    capped = None
    for start in range(0, n, args.batch_size):
        if args.qat_max_minutes and time.perf_counter() - t0 > 60 * args.qat_max_minutes:
            capped = start
            log(f"qat: stopped by --qat-max-minutes {args.qat_max_minutes} after {steps} steps ({start} sentences)")
            break
        idx = order[start:start + args.batch_size]
        feeds = torch_feeds(ctx.tok.encode([texts[i] for i in idx], args.train_length))
        logits = qmodel(**feeds)
        ce = F.cross_entropy(logits, labels[idx])
        kd = F.kl_div(F.log_softmax(logits / T, dim=-1), F.softmax(teacher_t[idx] / T, dim=-1), reduction="batchmean") * T * T
        loss = (1 - alpha) * ce + alpha * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
        history.append(round(float(loss.detach()), 5))
        if steps % 10 == 0 or start + args.batch_size >= n:
            el = time.perf_counter() - t0
            log(f"qat step {steps}/{-(-n // args.batch_size)}: loss {np.mean(history[-10:]):.4f} ({el:.0f} s, "
                f"{el / steps:.2f} s/step)")
    out["train_seconds"] = round(time.perf_counter() - t0, 2)
    out["train"] = {"examples": capped if capped is not None else n, "examples_planned": n,
                    "stopped_by_time_cap_min": args.qat_max_minutes if capped is not None else None, "steps": steps, "batch_size": args.batch_size, "lr": args.lr, "optimizer": "AdamW",
                    "weight_decay": 0.01, "schedule": "constant", "epochs": 1, "max_length": args.train_length,
                    "temperature": T, "alpha_kd": alpha, "seed": SEED, "threads": args.threads,
                    "loss_first10": float(np.mean(history[:10])), "loss_last10": float(np.mean(history[-10:])),
                    "trainable_parameters": int(sum(p.numel() for p in params)),
                    "nncf_quantize_kernels": cpu_extension()}
    qmodel.eval()
    t0 = time.perf_counter()
    m_qat, logits = ctx.evaluate(torch_runner(qmodel))
    np.save(work / "qat_torch_dev_logits.npy", logits)
    out["eval_seconds"] = round(time.perf_counter() - t0, 2)
    out["metrics"] = m_qat
    log(f"qat (PyTorch, fake-quant) after {steps} steps: {m_qat['accuracy']:.4f} / agreement {m_qat['agreement']:.4f} "
        f"({out['train_seconds']:.0f} s)")
    ckpt = work / "qat" / "checkpoint.pt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": qmodel.state_dict(), "nncf_config": nncf.torch.get_config(qmodel)}, ckpt)
    out["checkpoint"] = rel(ckpt)
    return out


def load_qat(ctx: Ctx) -> Any:
    import nncf.torch
    import torch

    student = logits_module(load_teacher(ctx.args.teacher, dropout=False))
    ckpt = torch.load(ctx.work / "qat" / "checkpoint.pt", weights_only=False)
    qmodel = nncf.torch.load_from_config(student, ckpt["nncf_config"])
    qmodel.load_state_dict(ckpt["state_dict"])
    return qmodel.eval()


def stage_qat_export(ctx: Ctx) -> dict[str, Any]:
    import numpy as np
    import torch

    args, work = ctx.args, ctx.work
    out: dict[str, Any] = {"models": {}, "attempts": []}
    qmodel = load_qat(ctx)
    torch_logits = np.load(work / "qat_torch_dev_logits.npy")
    check = dev_logits(torch_runner(qmodel), ctx.tok, ctx.dev_texts[:64], args.eval_length)
    out["reload_max_abs_diff"] = float(np.abs(check - torch_logits[:64]).max())
    example_np = ctx.tok.encode(ctx.dev_texts[:2], 16, fixed=16)
    example = tuple(torch_feeds(example_np)[n] for n in INPUT_NAMES)

    def vs_torch(logits: Any) -> dict[str, float]:
        return {"agreement_with_qat_torch": float((logits.argmax(1) == torch_logits.argmax(1)).mean()),
                "max_abs_diff_vs_qat_torch": float(np.abs(logits - torch_logits).max())}

    # OpenVINO: NNCF's documented export of a QAT model (ov.convert_model of the quantized torch model).
    t0 = time.perf_counter()
    try:
        xml, ov_model = save_torch_as_ov(qmodel, example, work / "qat_ov" / "model.xml")
        secs = time.perf_counter() - t0
        m, logits = ctx.evaluate(ov_runner(xml, args.threads))
        out["models"]["qat_ov"] = {"runtime": "openvino", "path": rel(xml), "size_bytes": file_size(xml), **m,
                                   **vs_torch(logits), **ov_facts(ov_model), "export_seconds": round(secs, 2),
                                   "how": "ov.convert_model(NNCF QAT torch model, example_input) -> "
                                          "ov.save_model(compress_to_fp16=False)"}
        out["attempts"].append({"route": "openvino: ov.convert_model(qat model)", "ok": True})
        log(f"qat_ov: {m['accuracy']:.4f} / agreement {m['agreement']:.4f}")
    except Exception as exc:  # noqa: BLE001 - recorded
        out["attempts"].append({"route": "openvino: ov.convert_model(qat model)", "ok": False, "error": one_line(exc)})
        log(f"qat_ov FAILED: {one_line(exc)}\n{traceback.format_exc()}")

    # ONNX: NNCF 3.4 documents no ONNX export for a QAT model. Tried in order; the first that ONNX
    # Runtime loads and that keeps the QAT model's predictions is the one reported.
    batch = torch.export.Dim("batch", min=1, max=1024)
    seq = torch.export.Dim("sequence", min=2, max=512)
    dyn = {n: {0: batch, 1: seq} for n in INPUT_NAMES}

    def dynamo_export(module: Any, dst: Path) -> None:
        torch.onnx.export(module, example, str(dst), input_names=list(INPUT_NAMES), output_names=["logits"],
                          dynamic_shapes=dyn, opset_version=OPSET, dynamo=True, external_data=False, optimize=True,
                          verbose=False)

    def legacy_export(module: Any, dst: Path) -> None:
        """The TorchScript-based exporter (NNCF's quantizers emit Q/DQ or FakeQuantize only under jit tracing)."""
        torch.onnx.export(module, example, str(dst), input_names=list(INPUT_NAMES), output_names=["logits"],
                          dynamic_axes={n: {0: "batch", 1: "sequence"} for n in INPUT_NAMES}, opset_version=OPSET,
                          dynamo=False)

    def legacy_qdq_export(module: Any, dst: Path) -> None:
        from nncf.torch.function_hook.wrapper import get_hook_storage
        from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

        m = copy.deepcopy(module)
        for _, q in get_hook_storage(m).named_hooks():
            if isinstance(q, BaseQuantizer):
                q.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
        legacy_export(m, dst)

    def strip_native(module: Any) -> Any:
        import nncf

        return nncf.strip(module, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)

    routes = [
        ("onnx: torch.onnx.export(qat model, dynamo=True)", lambda dst: dynamo_export(qmodel, dst)),
        ("onnx: nncf.strip(qat model, StripFormat.NATIVE) -> torch.onnx.export(dynamo=True)",
         lambda dst: dynamo_export(strip_native(qmodel), dst)),
        ("onnx: nncf.strip(qat model, StripFormat.NATIVE) -> torch.onnx.export(dynamo=False)",
         lambda dst: legacy_export(strip_native(qmodel), dst)),
        ("onnx: NNCF quantizers set to QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS -> torch.onnx.export(dynamo=False)",
         lambda dst: legacy_qdq_export(qmodel, dst)),
    ]
    # The TorchScript exporter on this model without quantizers, against PyTorch on padded and unpadded
    # batches: separates exporter error from quantization error in the dynamo=False routes.
    try:
        fp32 = logits_module(load_teacher(args.teacher))
        dst = work / "fp32_onnx_legacy" / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            legacy_export(fp32, dst)
        out["legacy_exporter_fp32_max_abs_diff"] = max_diff(ort_runner(dst, args.threads), torch_runner(fp32),
                                                            verify_inputs(ctx.tok, ctx.dev_texts))
        log(f"TorchScript exporter, fp32 teacher: |diff| vs PyTorch {out['legacy_exporter_fp32_max_abs_diff']:.2e}")
    except Exception as exc:  # noqa: BLE001 - recorded
        out["legacy_exporter_fp32_max_abs_diff"] = None
        out["legacy_exporter_fp32_error"] = one_line(exc)

    chosen = None
    for i, (route, fn) in enumerate(routes):
        dst = work / f"qat_onnx_try{i + 1}" / "model.onnx"
        dst.parent.mkdir(parents=True, exist_ok=True)
        rec: dict[str, Any] = {"route": route, "path": rel(dst)}
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                fn(dst)
            rec["export_seconds"] = round(time.perf_counter() - t0, 2)
            facts = onnx_facts(dst)
            rec["op_counts"] = facts["op_counts"]
            rec["initializer_bytes_by_dtype"] = facts["initializer_bytes_by_dtype"]
            rec["quantize_linear_nodes"] = facts["op_counts"].get("QuantizeLinear", 0)
            m, logits = ctx.evaluate(ort_runner(dst, args.threads))
            rec.update({**m, **vs_torch(logits), "size_bytes": file_size(dst)})
            # Reported only if it really is the int8 model: Q/DQ pairs ORT can run on int8 kernels, and
            # the fake-quant model's predictions kept (on dev).
            rec["ok"] = rec["quantize_linear_nodes"] > 0 and rec["agreement_with_qat_torch"] >= 0.98
            if not rec["ok"]:
                rec["why_not"] = ("no QuantizeLinear nodes: the fake quantization was exported as float ops"
                                  if rec["quantize_linear_nodes"] == 0 else
                                  f"agreement with the QAT PyTorch model {rec['agreement_with_qat_torch']:.3f} < 0.98")
        except Exception as exc:  # noqa: BLE001 - recorded
            rec.update({"ok": False, "error": one_line(exc), "export_seconds": round(time.perf_counter() - t0, 2)})
            log(f"{route} FAILED: {one_line(exc)}")
        out["attempts"].append(rec)
        log(f"{route}: {'ok' if rec.get('ok') else 'not used'} "
            + (f"acc {rec['accuracy']:.4f} agree {rec['agreement']:.4f} vs-torch {rec['agreement_with_qat_torch']:.4f}"
               if "accuracy" in rec else ""))
        if rec.get("ok") and chosen is None:
            chosen = rec
            if not args.all_onnx_routes:
                break
    if chosen is not None:
        out["models"]["qat_onnx"] = {"runtime": "onnxruntime", "path": chosen["path"], "size_bytes": chosen["size_bytes"],
                                     **{k: chosen[k] for k in ("examples", "accuracy", "agreement", "max_abs_logit_diff",
                                                               "agreement_with_qat_torch", "max_abs_diff_vs_qat_torch",
                                                               "export_seconds", "op_counts",
                                                               "initializer_bytes_by_dtype")},
                                     "how": chosen["route"]}
    return out


# --------------------------------------------------------------------------- timing

def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """One (model, batch) in this fresh process: open, warm up, time `repeats` calls."""
    texts = [r["text"] for r in load_split(Path(spec["eval_jsonl"]))]
    tok = Tok(Path(spec["tokenizer"]))
    feeds = tok.encode(full_length_texts(texts, spec["batch"]), spec["sequence"], fixed=spec["sequence"])
    real = int(feeds["attention_mask"].sum())
    t0 = time.perf_counter()
    run = ort_runner(Path(spec["path"]), spec["threads"]) if spec["runtime"] == "onnxruntime" \
        else ov_runner(Path(spec["path"]), spec["threads"])
    open_s = time.perf_counter() - t0
    warm = time.perf_counter()
    calls = 0
    while calls < spec["warmup"] or time.perf_counter() - warm < spec["warmup_s"]:
        run(feeds)
        calls += 1
    times = []
    for _ in range(spec["repeats"]):
        t = time.perf_counter()
        run(feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return {"median_ms": statistics.median(times), "times_ms": [round(x, 3) for x in times], "open_s": round(open_s, 3),
            "warmup_calls": calls, "real_tokens": real, "tokens": spec["batch"] * spec["sequence"]}


def time_in_process(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"failed": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def others_busy(window_s: float = 2.0) -> float | None:
    """Share of all CPUs busy while this process sleeps (/proc/stat): what other processes use."""
    def sample() -> tuple[int, int]:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(f[:8]), f[3] + f[4]
    try:
        t0, i0 = sample()
        time.sleep(window_s)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / (t1 - t0) if t1 > t0 else None


def cpu_jiffies() -> tuple[float, float] | None:
    """(busy seconds of all CPUs, wall seconds) now, from /proc/stat."""
    try:
        f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(f[:8]) - f[3] - f[4]) / tick, time.time()


def others_during(start: tuple[float, float] | None, children_start: float) -> float | None:
    """Share of all CPUs that processes other than this run's workers used over a window."""
    end = cpu_jiffies()
    if start is None or end is None:
        return None
    busy = end[0] - start[0]
    t = os.times()
    mine = t.children_user + t.children_system - children_start
    wall = end[1] - start[1]
    return max(0.0, (busy - mine) / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def stage_time(ctx: Ctx, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    args = ctx.args
    entries = [(name, m) for name, m in models.items() if m.get("runtime") in ("onnxruntime", "openvino") and m.get("path")]
    base = {"eval_jsonl": str(args.data_dir / "eval.jsonl"), "tokenizer": str(args.teacher / "tokenizer.json"),
            "sequence": args.sequence, "threads": args.threads, "warmup": args.warmup, "warmup_s": args.warmup_s}
    res: dict[str, Any] = {name: {str(b): {"rounds": []} for b in (1, 32)} for name, _ in entries}
    stopped: dict[str, str] = {}
    busy_before = others_busy()
    t_all = time.perf_counter()
    j0, c0 = cpu_jiffies(), os.times().children_user + os.times().children_system
    for r in range(args.rounds):
        k = r % len(entries)
        order = entries[k:] + entries[:k]
        for b in (1, 32):
            for name, m in order:
                if name in stopped:
                    continue
                spec = {**base, "runtime": m["runtime"], "path": str(ROOT / m["path"]), "batch": b,
                        "repeats": args.repeats if b == 1 else args.repeats_large}
                got = time_in_process(spec)
                if "median_ms" not in got:
                    stopped[name] = got.get("failed", "failed")
                    log(f"time {name}: {stopped[name]}")
                    continue
                cell = res[name][str(b)]
                cell["rounds"].append(round(got["median_ms"], 3))
                cell.setdefault("open_s", []).append(got["open_s"])
                cell["real_tokens"], cell["tokens"] = got["real_tokens"], got["tokens"]
                log(f"round {r + 1}/{args.rounds} b{b:<2} {name:<10} {got['median_ms']:9.2f} ms "
                    f"(median of {spec['repeats']}, opened in {got['open_s']:.1f} s)")
    during = others_during(j0, c0)
    for name, why in stopped.items():
        res[name] = {"failed": why}
    for cells in res.values():
        for c in cells.values():
            if isinstance(c, dict) and c.get("rounds"):
                c["median_ms"] = round(statistics.median(c["rounds"]), 3)
                c["min_ms"], c["max_ms"] = min(c["rounds"]), max(c["rounds"])
    return {"latency": res, "seconds": round(time.perf_counter() - t_all, 1), "others_busy": [busy_before, others_busy()],
            "others_during": during,
            "settings": {"rounds": args.rounds, "repeats_b1": args.repeats, "repeats_b32": args.repeats_large,
                         "warmup": args.warmup, "warmup_s": args.warmup_s, "sequence": args.sequence,
                         "threads": args.threads, "nice": os.nice(0)}}


# --------------------------------------------------------------------------- report

ORT_INT8 = {"MatMulIntegerToFloat", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul", "QGemm"}
ORT_FLOAT = {"MatMul", "Gemm", "FusedGemm", "FusedMatMul"}


def matmul_kernels(runtime: str, path: Path) -> dict[str, int]:
    """How many matrix multiplications the runtime really runs in int8 and in float, after its own graph
    optimizations: ONNX Runtime's optimized graph (ORT_ENABLE_ALL), OpenVINO's compiled (runtime) model."""
    import tempfile

    out = {"int8": 0, "float": 0}
    if runtime == "onnxruntime":
        import onnx
        import onnxruntime as ort

        with tempfile.TemporaryDirectory() as tmp:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.intra_op_num_threads = 1
            so.log_severity_level = 3
            so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            g = onnx.load(so.optimized_model_filepath).graph
            producer = {o: n.op_type for n in g.node for o in n.output}
            out["float_fed_by_dequantize"] = 0
            for n in g.node:
                out["int8"] += n.op_type in ORT_INT8
                out["float"] += n.op_type in ORT_FLOAT
                if n.op_type in ORT_FLOAT and all(producer.get(i) == "DequantizeLinear" for i in n.input[:2]):
                    out["float_fed_by_dequantize"] += 1
            src = onnx.load(str(path), load_external_data=False).graph
            inits = {t.name for t in src.initializer}
            users: dict[str, int] = {}
            for n in src.node:
                if n.op_type in ORT_FLOAT:
                    for i in n.input[:2]:
                        users[i] = users.get(i, 0) + 1
            out["activation_dequantize_shared_by_matmuls"] = sum(
                1 for n in src.node if n.op_type == "DequantizeLinear" and n.input[0] not in inits
                and users.get(n.output[0], 0) > 1)
            out["int8_weight_bytes_as_loaded"] = sum(len(t.raw_data) for t in g.initializer if t.data_type == onnx.TensorProto.INT8)
    else:
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        for op in compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            keys = set(info.keys())
            text = lambda key: info[key].astype(str) if key in keys else ""  # noqa: E731 - OVAny prints as "<OVAny class>"
            kind = text("layerType")
            if kind in ("Subgraph", "ScaledDotProductAttention"):
                # OpenVINO's fused attention (MHA snippets): its two matmuls run inside, at the subgraph's precision.
                out["fused_subgraphs"] = out.get("fused_subgraphs", 0) + 1
            if kind in ("FullyConnected", "MatMul"):
                prec = text("runtimePrecision")
                out["int8" if prec in ("u8", "i8") else "float"] += 1
    return out


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def cpu_flags() -> list[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return [f for f in ("avx2", "fma", "avx_vnni", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
                    if f in have]
    return []


def pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def lat(cell: Any) -> str:
    if not isinstance(cell, dict) or "median_ms" not in cell:
        return "n/a"
    if len(cell["rounds"]) == 1:
        return f"{cell['median_ms']:.2f}"
    return f"{cell['median_ms']:.2f} [{cell['min_ms']:.2f}-{cell['max_ms']:.2f}]"


ROWS = [  # (name, label, runtime label)
    ("fp32_onnx", "fp32 reference: torch.onnx.export", "ONNX Runtime"),
    ("ptq_onnx", "NNCF PTQ on the ONNX model", "ONNX Runtime"),
    ("qat_onnx", "NNCF QAT, exported to ONNX", "ONNX Runtime"),
    ("fp32_ov", "fp32 reference: ov.convert_model from PyTorch", "OpenVINO"),
    ("ptq_ov", "NNCF PTQ on the OpenVINO IR", "OpenVINO"),
    ("qat_ov", "NNCF QAT, ov.convert_model", "OpenVINO"),
]


def quiet_fp32_reference() -> tuple[float, float] | None:
    """The project's fp32 ONNX latency (b1, b32 ms) from bench/results/cpu_runtimes.md, if it is there."""
    path = ROOT / "bench" / "results" / "cpu_runtimes.md"
    if not path.is_file():
        return None
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("| `fp32` |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            try:
                return float(cells[6].split()[0]), float(cells[7].split()[0])
            except (IndexError, ValueError):
                return None
    return None


def stage_report(ctx: Ctx, state: dict[str, Any], started: float) -> None:
    args = ctx.args
    models = state["models"]
    timing = state.get("time", {})
    latency = timing.get("latency", {})
    teacher = state["teacher"]["teacher"]
    qat = state.get("qat", {})
    qexp = state.get("qat_export", {})
    t_acc = teacher["accuracy"]
    vers = {n: version(n) for n in VERSIONS}
    vers["python"] = platform.python_version()
    flags = cpu_flags()
    out_md = args.results / "nncf_peer.md"
    out_json = args.results / "nncf_peer.json"
    smoke = bool(args.limit)

    failures: list[str] = [f"stage {k} failed: {v}" for k, v in state.get("stage_failures", {}).items()]
    for a in qexp.get("attempts", []):
        if not a.get("ok"):
            why = a.get("error") or a.get("why_not") or "not used"
            failures.append(f"QAT export route {a['route']}: {why[:300]}")
    for name, cells in latency.items():
        if "failed" in cells:
            failures.append(f"timing of {name}: {cells['failed']}")
    missing = [n for n, _, _ in ROWS if n not in models]
    for name, m in models.items():
        if "matmuls_as_run" not in m:
            try:
                m["matmuls_as_run"] = matmul_kernels(m["runtime"], ROOT / m["path"])
            except Exception as exc:  # noqa: BLE001 - a missing count is not a failed run
                m["matmuls_as_run"] = {"error": one_line(exc)}

    lines = [
        "# NNCF as a peer on SST-2: its PTQ and its QAT, on ONNX Runtime and OpenVINO",
        "",
        ("**Smoke run on a subset (--limit {}): not results.**".format(args.limit) + "\n") if smoke else "",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical CPUs, {platform.machine()}; vector features: "
        f"{', '.join(flags) or 'unknown'}" + ("" if {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags) else
                                              " (no VNNI, no AMX)") + f". Threads: {args.threads} everywhere "
        "(PyTorch, ONNX Runtime intra-op, OpenVINO INFERENCE_NUM_THREADS). Peer toolchain (its own venv, bench/nncf/.venv): "
        + ", ".join(f"{k} {v}" for k, v in vers.items()) + ".",
        "",
        f"Teacher: {teacher['path']} (model.safetensors sha256 {teacher.get('model_sha256', '?')[:16]}; copied once into "
        f"the work dir so one run sees one teacher; all-MiniLM-L6-v2 fine-tuned on the 4000-sentence SST-2 train subset at "
        f"max_length 64; the CPU bench's teacher, found through build/cpu_sst2/report.json). Data: "
        f"{args.source['data_dir']} (the build's split: {len(ctx.train)} train sentences, {len(ctx.dev)} SST-2 dev sentences). "
        f"Evaluation as bench/cpu_sst2.toml's: truncation at {args.eval_length} tokens, batches of {EVAL_BATCH} padded to "
        "their longest, token_type_ids 0. The fp32 reference logits for agreement (share of dev sentences where the "
        "model's argmax equals the fp32 teacher's) were computed in the peer venv with the fp32 PyTorch teacher: "
        f"accuracy {pct(t_acc)}.",
    ]
    cross = teacher.get("vs_build_teacher_logits")
    if cross:
        lines[-1] += (f" They match the build's own teacher logits ({cross['file']}) to {cross['max_abs_diff']:.1e} "
                      f"(argmax agreement {pct(cross['argmax_agreement'])}), so the peer sees the same ids.")
    lines += ["", "## Results", "",
              "| model | runtime | accuracy | vs teacher | agreement | size MB | MatMuls int8 / float, as run | b1 ms | b32 ms "
              "| b1 / b32 vs fp32 on the same runtime, per round | quantize / train wall time |",
              "|---|---|---|---|---|---|---|---|---|---|---|",
              f"| fp32 teacher (the agreement reference) | PyTorch | {pct(t_acc)} | 1.000 | 100.0% | | | | | | |"]

    def kernels(m: dict[str, Any]) -> str:
        k = m.get("matmuls_as_run") or {}
        if "int8" not in k:
            return "n/a"
        return f"{k['int8']} / {k['float']}" + (f" + {k['fused_subgraphs']} fused subgraphs" if k.get("fused_subgraphs") else "")
    fp32_of = {"onnxruntime": "fp32_onnx", "openvino": "fp32_ov"}

    def vs_fp32(name: str, runtime: str) -> str:
        """Median of the per-round ratios (both timed in the same round), [min-max]."""
        base = latency.get(fp32_of.get(runtime, ""), {})
        mine = latency.get(name, {})
        cells = []
        for b in ("1", "32"):
            ra, rf = (mine.get(b) or {}).get("rounds") or [], (base.get(b) or {}).get("rounds") or []
            rr = [x / y for x, y in zip(ra, rf) if y]
            if not rr:
                cells.append("n/a")
            elif len(rr) == 1 or name == fp32_of.get(runtime):
                cells.append(f"{statistics.median(rr):.2f}x")
            else:
                cells.append(f"{statistics.median(rr):.2f}x [{min(rr):.2f}-{max(rr):.2f}]")
        return " / ".join(cells)
    for name, label, runtime in ROWS:
        m = models.get(name)
        if m is None:
            lines.append(f"| `{name}` {label} | {runtime} | not built | | | | | | | | see below |")
            continue
        cells = latency.get(name, {})
        if name == "ptq_onnx" or name == "ptq_ov":
            wall = f"PTQ {m['quantize_seconds']:.0f} s"
        elif name.startswith("qat"):
            wall = (f"PTQ init {qat.get('init_seconds', 0):.0f} s + training {qat.get('train_seconds', 0):.0f} s "
                    f"+ export {m.get('export_seconds', 0):.0f} s")
        else:
            wall = f"export {m.get('export', {}).get('seconds', 0):.0f} s"
        lines.append(f"| `{name}` {label} | {runtime} | {pct(m['accuracy'])} | {m['accuracy'] / t_acc:.3f} | "
                     f"{pct(m.get('agreement'))} | {m['size_bytes'] / 1e6:.1f} | {kernels(m)} | {lat(cells.get('1'))} | "
                     f"{lat(cells.get('32'))} | {vs_fp32(name, m['runtime'])} | {wall} |")
    if qat.get("metrics"):
        q, i = qat["metrics"], qat["init_metrics"]
        lines.append(f"| QAT model in PyTorch (fake quantization, not a deployable artifact) | PyTorch | {pct(q['accuracy'])} | "
                     f"{q['accuracy'] / t_acc:.3f} | {pct(q['agreement'])} | | | | | | |")
        lines.append(f"| its PTQ initialisation before fine-tuning (nncf.quantize on the torch model) | PyTorch | "
                     f"{pct(i['accuracy'])} | {i['accuracy'] / t_acc:.3f} | {pct(i['agreement'])} | | | | | | "
                     f"PTQ {qat['init_seconds']:.0f} s |")
    ts = timing.get("settings", {})
    busy = timing.get("others_busy", [None, None])
    lines += [
        "",
        f"One dev sentence is {100 / len(ctx.dev):.2f} points; the standard error of an accuracy near {pct(t_acc)} on "
        f"{len(ctx.dev)} sentences is {100 * (t_acc * (1 - t_acc) / len(ctx.dev)) ** 0.5:.1f} points. Size: the ONNX file, "
        "or the IR's .xml + .bin. MatMuls int8 / float, as run: the matrix multiplications (linear layers, the two "
        "attention products, pooler and classifier) that the runtime executes on int8 kernels and on float ones after "
        "its own graph optimizations (ONNX Runtime: its optimized graph at ORT_ENABLE_ALL, MatMulIntegerToFloat / "
        "QLinearMatMul against MatMul / Gemm; OpenVINO: the compiled model's FullyConnected / MatMul layers by runtime "
        "precision; a fused subgraph is OpenVINO's fused attention, whose two products are not counted).",
        "",
        (f"Latency: batch 1 and 32 at sequence {ts.get('sequence')} (every row {ts.get('sequence')} real tokens: dev "
         "sentences joined and truncated, as bench/cpu_runtimes.py times; no padding tokens), "
         f"{ts.get('threads')} threads. Each (model, batch) ran in its own process (run_nncf.py --worker), the models "
         f"alternating, order rotated each round, for {ts.get('rounds')} round(s); a round's figure is the median of "
         f"{ts.get('repeats_b1')} calls at batch 1 and {ts.get('repeats_b32')} at batch 32 after at least "
         f"{ts.get('warmup')} warm-up calls and {ts.get('warmup_s')} s; the table gives the median over rounds and "
         f"[min-max] of the rounds. ONNX Runtime: CPUExecutionProvider, ORT_ENABLE_ALL, intra-op {args.threads}, "
         f"inter-op 1. OpenVINO: CPU, INFERENCE_PRECISION_HINT f32 pinned, PERFORMANCE_HINT LATENCY, "
         f"INFERENCE_NUM_THREADS {args.threads}. Other processes kept {pct(busy[0])} of the CPUs busy in the 2 s before "
         f"the timing, {pct(busy[1])} in the 2 s after it, and {pct(timing.get('others_during'))} on average during it "
         f"(/proc/stat busy time less this run's workers' CPU time; timing took {timing.get('seconds', 0) / 60:.1f} min).")
        if timing else "Latency: not measured in this run.",
    ]
    others = [p for p in state.get("time_passes", []) if p is not timing and p != timing]
    if others:
        lines += ["", f"{len(state['time_passes'])} timing passes were run; the table shows the one other processes "
                  f"disturbed least ({pct(timing.get('others_during'))} of the CPUs busy with other work during it). "
                  + " ".join(f"Another pass{(' (' + p['finished'] + ')') if p.get('finished') else ''} had "
                             f"{pct(p.get('others_during'))}: its fp32 ONNX Runtime figures were "
                             f"{lat((p['latency'].get('fp32_onnx') or {}).get('1'))} / "
                             f"{lat((p['latency'].get('fp32_onnx') or {}).get('32'))} ms."
                             for p in others) + " All passes are in bench/results/nncf_peer.json."]
    if timing and max((b for b in list(busy) + [timing.get("others_during")] if b is not None), default=0) > 0.1:
        nice = ts.get("nice")
        lines += ["", "**The host was busy while timing** (other engineers share its 2 cores"
                  + (f", and the timed processes ran at nice {nice}, below them" if nice else "")
                  + "): the latencies carry that noise; the per-round [min-max] shows how much. "
                  "Read the ratios to fp32 on the same runtime (taken within each round), not the absolute figures."]
        quiet = quiet_fp32_reference()
        mine = latency.get("fp32_onnx", {})
        if quiet and all((mine.get(b) or {}).get("median_ms") for b in ("1", "32")):
            lines[-1] += (f" For scale: bench/results/cpu_runtimes.md timed the project's fp32 ONNX on this host when it "
                          f"was quiet at {quiet[0]:.2f} / {quiet[1]:.0f} ms (b1 / b32); `fp32_onnx` took "
                          f"{mine['1']['median_ms']:.2f} / {mine['32']['median_ms']:.0f} ms here, "
                          f"{mine['1']['median_ms'] / quiet[0]:.1f}x / {mine['32']['median_ms'] / quiet[1]:.1f}x that.")
    if not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags):
        lines += ["", "**This host has no VNNI and no AMX.** ONNX Runtime's and OpenVINO's int8 kernels run their AVX2 "
                  "paths here (OpenVINO's int8 is then slower than its fp32, bench/results/cpu_runtimes.md); on a Sapphire "
                  "Rapids Xeon the int8 rows would be much faster. Accuracy and agreement do not depend on the host."]

    # What the numbers say, from the numbers
    notes = []
    k = (models.get("ptq_onnx") or {}).get("matmuls_as_run") or {}
    if k.get("float_fed_by_dequantize"):
        notes.append(f"- `ptq_onnx` on ONNX Runtime is only partly int8: of its matrix multiplications ORT runs {k['int8']} on "
                     f"int8 kernels and {k['float']} in float, {k['float_fed_by_dequantize']} of those float ones fed by "
                     "DequantizeLinear on both inputs, i.e. quantized by NNCF but left as DequantizeLinear -> float MatMul by "
                     "ORT's QDQ fusion, so they pay the dequantization on top of float arithmetic. NNCF's graph has "
                     f"{k.get('activation_dequantize_shared_by_matmuls', '?')} activation DequantizeLinear nodes that each "
                     "feed several MatMuls (one per layer: the query, key and value projections share their "
                     "SmoothQuant-scaled, quantized input), and ORT fuses a DequantizeLinear into an int8 MatMul only "
                     "when that MatMul is its one consumer.")
    q = models.get("qat_onnx") or {}
    kq = q.get("matmuls_as_run") or {}
    fp = (q.get("initializer_bytes_by_dtype") or {}).get("float32", 0)
    if q and fp > q["size_bytes"] / 2:
        notes.append(f"- `qat_onnx` stores its weights in float32 ({fp / 1e6:.1f} MB of {q['size_bytes'] / 1e6:.1f} MB) with a "
                     "QuantizeLinear -> DequantizeLinear pair on each (that is how torch's exporter writes a fake-quantized "
                     "weight); ONNX Runtime folds those at load, so it runs int8 weights "
                     f"({kq.get('int8_weight_bytes_as_loaded', 0) / 1e6:.1f} MB) on {kq.get('int8', '?')} int8 MatMuls, "
                     f"but the file to ship is the float size.")
    qlog = args.work / "qat_torch_dev_logits.npy"
    if qat.get("metrics") and qat.get("init_metrics") and qlog.is_file():
        import numpy as np

        i, f = qat["init_metrics"], qat["metrics"]
        tp, qp = ctx.ref_logits().argmax(1), np.load(qlog).argmax(1)
        diff = tp != qp
        notes.append(f"- QAT's fine-tuning moved the model away from the teacher: accuracy {pct(i['accuracy'])} after "
                     f"NNCF's initialisation -> {pct(f['accuracy'])} (inside the standard error), agreement "
                     f"{pct(i['agreement'])} -> {pct(f['agreement'])}. Half of the loss is cross entropy on the gold labels: "
                     f"of the {int(diff.sum())} dev sentences where the PyTorch QAT model now disagrees with the teacher it "
                     f"is right on {int((qp[diff] == ctx.dev_gold[diff]).sum())}, the teacher on "
                     f"{int((tp[diff] == ctx.dev_gold[diff]).sum())}.")
    if notes:
        lines += ["", "## Notes", ""] + notes

    # How each was made
    lines += ["", "## How each model was made", ""]
    for name, label, _ in ROWS:
        m = models.get(name)
        if m:
            lines.append(f"- `{name}`: {m['how']}.")
    lines += [
        f"- Calibration (every PTQ, and QAT's initialisation): {len(ctx.calib)} train sentences (rows 0, k, 2k, ... of "
        f"the train split, k = {max(1, len(ctx.train) // args.calibration)}), one sentence per sample, unpadded, "
        f"truncated at {args.eval_length} tokens (as the project's own NNCF stage calibrates).",
        "- Every fp32 graph is exported with eager attention (MatMul/Softmax/MatMul), so all three NNCF backends see "
        "the same attention MatMuls to quantize.",
    ]
    if qat.get("train"):
        tr = qat["train"]
        lines.append(
            f"- QAT: NNCF 3.x's flow (docs/usage/training_time_compression/quantization_aware_training/Usage.md): "
            f"`nncf.quantize(torch model, calibration, model_type=TRANSFORMER)` on {qat.get('calibration_samples')} of the "
            f"calibration sentences ({qat['init_seconds']:.0f} s), then "
            "fine-tuning of the returned model: " + (
                f"{tr['epochs']} epoch over {tr['examples']} train sentences " if not tr.get("stopped_by_time_cap_min") else
                f"NOT a full epoch: the first {tr['examples']} of {tr['examples_planned']} train sentences in the seeded "
                f"order (stopped by the {tr['stopped_by_time_cap_min']:g}-min cap, --qat-max-minutes) ") +
            f"({tr['steps']} steps of batch {tr['batch_size']}, max_length {tr['max_length']} as the teacher was trained, "
            f"padded to each batch's longest), AdamW lr {tr['lr']} (weight decay {tr['weight_decay']}, constant), seed "
            f"{tr['seed']}, torch threads {tr['threads']}, dropout off (NNCF's guide), loss 0.5 x cross entropy on the "
            f"labels + 0.5 x T^2 x KL(teacher || student) at T = {tr['temperature']} against the fp32 teacher's logits "
            f"(computed once, in {qat['teacher_train_logits_seconds']:.0f} s). Loss {tr['loss_first10']:.3f} over the "
            f"first 10 steps, {tr['loss_last10']:.3f} over the last 10; {tr['trainable_parameters']:,} trainable "
            f"parameters (weights and quantizer ranges). Training took {qat['train_seconds'] / 60:.1f} min "
            f"({qat['train_seconds'] / max(1, tr['steps']):.2f} s/step).")
    if qexp.get("attempts"):
        lines += ["", "## QAT export routes", ""]
        d = qexp.get("legacy_exporter_fp32_max_abs_diff")
        if d is not None and d <= 1e-3:
            lines += [f"The TorchScript exporter (dynamo=False) itself is exact on this model: the fp32 teacher exported "
                      f"with it differs from PyTorch by at most {d:.1e} on padded and unpadded batches, so what separates "
                      "its QAT exports from the PyTorch QAT model is the quantized arithmetic.", ""]
        elif d is not None:
            lines += [f"**The TorchScript exporter (dynamo=False) is not exact on this model**: the fp32 teacher exported "
                      f"with it differs from PyTorch by up to {d:.2g} on padded and unpadded batches; the dynamo=False "
                      "routes below carry that error as well as the quantization's.", ""]
        for a in qexp["attempts"]:
            if a.get("ok"):
                extra = (f": loads in ONNX Runtime, {a.get('quantize_linear_nodes')} QuantizeLinear nodes, agreement with "
                         f"the PyTorch QAT model {pct(a.get('agreement_with_qat_torch'))}" if "quantize_linear_nodes" in a
                         else "")
                lines.append(f"- OK: {a['route']}{extra}.")
            else:
                res = ""
                if "accuracy" in a:
                    res = (f" (it exported and runs: accuracy {pct(a['accuracy'])}, agreement with the PyTorch QAT model "
                           f"{pct(a.get('agreement_with_qat_torch'))}, {a.get('quantize_linear_nodes')} QuantizeLinear nodes)")
                lines.append(f"- NOT USED: {a['route']}: {a.get('error') or a.get('why_not')}{res}.")
    lines += ["", "## Wall times", ""]
    wt = state.get("wall_s", {})
    for k, v in wt.items():
        lines.append(f"- stage `{k}`: {v / 60:.1f} min")
    lines.append(f"- all stages: {sum(wt.values()) / 60:.1f} min (wall clock on the shared 2-core host; the stages' own "
                 "PTQ / training / export times are in the table and the QAT paragraph)")
    lines += ["", "## What failed or was left out", ""]
    lines += [f"- {f}" for f in failures] or ["- nothing failed."]
    tr = qat.get("train") or {}
    if tr.get("stopped_by_time_cap_min"):
        lines.append(f"- QAT's epoch was cut by the time cap: {tr['examples']} of {tr['examples_planned']} train sentences "
                     f"({tr['steps']} steps), because the shared host ran at {qat['train_seconds'] / max(1, tr['steps']):.0f} "
                     "s/step; run without --qat-max-minutes for the full epoch.")
    if qat.get("calibration_samples") and qat["calibration_samples"] < len(ctx.calib):
        lines.append(f"- QAT's initialisation calibrated on {qat['calibration_samples']} of the {len(ctx.calib)} calibration "
                     f"sentences (NNCF's torch statistics collection took {qat['init_seconds'] / qat['calibration_samples']:.1f} "
                     "s per sample here); the PTQ rows used all of them.")
    lines.append("- Found while setting up: `nncf.strip()` for torch models imports `torchao`, which NNCF 3.4 does not "
                 "declare as a dependency (without it: `ModuleNotFoundError: No module named 'torchao'`); "
                 "bench/nncf/requirements.txt pins torchao 0.18.0, the project's.")
    if missing:
        lines += [f"- `{n}` not built in this run." for n in missing]
    lines += ["- Not run: NNCF's accuracy-controlled PTQ (`quantize_with_accuracy_control`; the project's own "
              "bench/cpu_sst2.toml builds that one, `ov_int8`); tuned advanced parameters (NNCF's defaults for "
              "model_type=TRANSFORMER were kept: they include SmoothQuant and fast bias correction); target_device "
              "other than NNCF's default (ANY); QAT beyond one epoch."]
    lines += ["", "## Reproduce", "", "    bash bench/nncf/setup_venv.sh"]
    for inv in state.get("invocations", []):
        lines.append("    bench/nncf/.venv/bin/python bench/nncf/run_nncf.py " + " ".join(inv["argv"])
                     + f"    # {inv['started']}")
    lines += ["", "(bench/nncf/README.md.) Raw numbers: bench/results/nncf_peer.json."]
    text = "\n".join(ln for ln in lines).replace("\n\n\n", "\n\n").rstrip() + "\n"
    out_md.parent.mkdir(parents=True, exist_ok=True)
    out_md.write_text(text, encoding="utf-8")
    raw = {"schema": "edgesmith.nncf_peer/1", "smoke_limit": args.limit,
           "machine": {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "features": flags, "arch": platform.machine()},
           "versions": vers, "threads": args.threads,
           "teacher": teacher, "data": {"dir": args.source["data_dir"], "train": len(ctx.train), "dev": len(ctx.dev),
                                        "eval_length": args.eval_length, "calibration_samples": len(ctx.calib)},
           "models": models, "latency": latency, "timing": {k: v for k, v in timing.items() if k != "latency"},
           "timing_passes": state.get("time_passes", []),
           "qat": {k: v for k, v in qat.items()}, "qat_export_attempts": qexp.get("attempts", []),
           "wall_s": wt, "failures": failures}
    write_json(out_json, raw)
    log(f"wrote {rel(out_md)} and {rel(out_json)}")
    print(text)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--teacher", type=Path, help="HF checkpoint dir (default: build/cpu_sst2/report.json inputs.teacher_dir)")
    ap.add_argument("--data-dir", type=Path, help="dir with train.jsonl / eval.jsonl (default: the report's data_dir)")
    ap.add_argument("--build-teacher-logits", type=Path, help="the build's teacher dev logits, for a cross-check only")
    ap.add_argument("--work", type=Path, default=ROOT / "bench" / "work" / "nncf")
    ap.add_argument("--refresh-inputs", action="store_true", help="copy the teacher and data into <work>/inputs again")
    ap.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    ap.add_argument("--limit", type=int, default=0, help="smoke test: only the first N train and dev rows")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=300, help="calibration samples (subset_size)")
    ap.add_argument("--qat-calibration", type=int, default=0, help="calibration samples for QAT's nncf.quantize "
                    "initialisation, evenly spread over the PTQ ones (0 = the same as --calibration)")
    ap.add_argument("--eval-length", type=int, default=128, help="truncation for evaluation and calibration")
    ap.add_argument("--train-length", type=int, default=64, help="truncation for QAT (the teacher's fine-tuning length)")
    ap.add_argument("--qat-examples", type=int, default=0, help="train sentences for the QAT epoch (0 = all)")
    ap.add_argument("--qat-max-minutes", type=float, default=0, help="stop the QAT epoch after this many minutes "
                    "(0 = no cap); the sentences it used are the first ones of the seeded order, stated in the report")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--temperature", type=float, default=2.0)
    ap.add_argument("--alpha", type=float, default=0.5, help="weight of the distillation term (1 - alpha on CE)")
    ap.add_argument("--all-onnx-routes", action="store_true", help="try every QAT -> ONNX route, not only up to the first that works")
    ap.add_argument("--sequence", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=30, help="timed calls per process at batch 1")
    ap.add_argument("--repeats-large", type=int, default=5, help="timed calls per process at batch 32")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--warmup-s", type=float, default=1.0)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))), flush=True)
        return 0
    stages = [s for s in args.stages.split(",") if s]
    if bad := [s for s in stages if s not in STAGES]:
        ap.error(f"unknown stages {bad}")
    locate_inputs(args)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    snapshot_inputs(args)
    started = time.time()
    set_threads(args.threads)
    logging.getLogger("nncf").setLevel(logging.INFO)
    ctx = Ctx(args)
    log(f"teacher {args.source['teacher']} (sha256 {args.source['teacher_sha256'][:12]}), data {args.source['data_dir']}: {len(ctx.train)} train, {len(ctx.dev)} dev; "
        f"work {args.work}")

    state_path = args.work / "state.json"
    state = read_json(state_path) if state_path.is_file() else {}
    state.setdefault("models", {})
    state.setdefault("wall_s", {})
    if set(stages) - {"report"}:   # a report-only call changes no number
        state.setdefault("invocations", []).append({"argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S")})
    funcs = {"teacher": stage_teacher, "onnx_ptq": stage_onnx_ptq, "ov_ptq": stage_ov_ptq, "qat": stage_qat,
             "qat_export": stage_qat_export}
    for stage in stages:
        t0 = time.time()
        log(f"=== stage {stage}")
        if stage in funcs:
            try:
                got = funcs[stage](ctx)
            except Exception as exc:  # noqa: BLE001 - a failed stage is recorded, the others still run
                log(f"stage {stage} FAILED: {one_line(exc)}\n{traceback.format_exc()}")
                state.setdefault("stage_failures", {})[stage] = one_line(exc)
                write_json(state_path, state)
                continue
            state.get("stage_failures", {}).pop(stage, None)
            state["models"].update(got.pop("models", {}))
            state[stage] = got
        elif stage == "time":
            # Every timing pass is kept; the report uses the one other processes disturbed least.
            passes = state.setdefault("time_passes", [state["time"]] if state.get("time") else [])
            passes.append({**stage_time(ctx, state["models"]), "finished": time.strftime("%Y-%m-%d %H:%M:%S")})
            state["time"] = min(passes, key=lambda p: p.get("others_during") if p.get("others_during") is not None else 1.0)
        elif stage == "report":
            stage_report(ctx, state, started)
            continue
        state["wall_s"][stage] = round(time.time() - t0, 1)
        write_json(state_path, state)
    return 0


if __name__ == "__main__":
    sys.exit(main())
