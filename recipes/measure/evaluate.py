"""Accuracy and agreement of one artifact on the eval split.

Deterministic (no timings), so its output is a stable cached node; latency is
measured separately, side by side for all artifacts of a target.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import StageError
from recipes.fsutil import atomic_path, write_json
from recipes.inputs.data import load_labels, load_split
from recipes.measure.runners import NotMeasurable, open_runner
from runtime.cpu_features import known_host_features
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model

# Examples per runner call. In the spec (and so the signature): padding to each
# batch's longest text may move float sums in the last bit.
EVAL_BATCH = 32


def compressed_size(path: Path) -> int:
    """Size after zlib level 6, i.e. roughly what the bundle tarball costs."""
    comp = zlib.compressobj(6)
    total = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            total += len(comp.compress(block))
    return total + len(comp.flush())


def artifact_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def evaluate(fmt: str, artifact: Path, size_paths: list[Path], data_dir: Path, tokenizer_json: Path, max_length: int,
             input_names: tuple[str, ...], dst_metrics: Path, dst_logits: Path, teacher_logits: Path | None = None,
             batch_size: int = EVAL_BATCH, task: str = "classification") -> dict[str, Any]:
    """The metrics of one artifact; `dst_logits` keeps its outputs (logits, or sentence vectors for task
    "embedding") for the artifacts compared with it."""
    import numpy as np
    labels = load_labels(data_dir / "data.json")
    examples = load_split(data_dir / "eval.jsonl")
    encoder = Encoder(tokenizer_json, max_length)
    sizes = {"size_bytes": sum(artifact_size(p) for p in size_paths),
             "compressed_bytes": sum(compressed_size(p) for p in size_paths if p.is_file())}
    try:
        runner = open_runner(fmt, artifact, input_names, threads=0)
    except NotMeasurable as exc:
        # No numbers of a different computation: the report shows why, and the gates that need them are unchecked.
        write_empty_logits(dst_logits, len(labels))
        metrics = {"examples": len(examples), "measured": False, "not_measured": str(exc), **sizes}
        write_json(dst_metrics, metrics)
        return metrics
    chunks = []
    for start in range(0, len(examples), batch_size):
        batch = examples[start:start + batch_size]
        chunks.append(runner(encoder.encode([e.text for e in batch], input_names)))
    logits = np.concatenate(chunks).astype(np.float32)
    if task == "embedding":
        return _embedding_metrics(logits, teacher_logits, examples, sizes, dst_metrics, dst_logits)
    gold = np.array([labels.index(e.label) for e in examples])
    pred = logits.argmax(axis=1)
    metrics: dict[str, Any] = {
        "examples": len(examples),
        "accuracy": float((pred == gold).mean()),
        # What always answering the most frequent eval label scores: a model at or below it learned nothing.
        "majority_accuracy": float(np.bincount(gold, minlength=len(labels)).max() / len(gold)),
        **sizes,
    }
    if teacher_logits is not None:
        ref = np.load(teacher_logits)
        metrics["agreement"] = float((pred == ref.argmax(axis=1)).mean())
        metrics["max_abs_logit_diff"] = float(np.abs(logits - ref).max())
    with atomic_path(dst_logits) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, logits)
    write_json(dst_metrics, metrics)
    return metrics


def _embedding_metrics(vectors, teacher_vectors: Path | None, examples, sizes: dict[str, int], dst_metrics: Path,
                       dst_vectors: Path) -> dict[str, Any]:
    """Cosine and neighbour fidelity against the teacher's vectors (the teacher itself: 1 by definition)."""
    import numpy as np

    from recipes.measure.embedding_metrics import compare

    if not np.isfinite(vectors).all():
        raise StageError(f"{dst_vectors}: the artifact's sentence vectors contain NaN or infinity; it is broken, "
                         "do not ship it")
    reference = np.load(teacher_vectors) if teacher_vectors is not None else vectors
    try:
        metrics: dict[str, Any] = {"examples": len(examples), "dimension": int(vectors.shape[1]),
                                   **compare(vectors, reference), **sizes}
    except ValueError as e:
        raise StageError(f"{dst_vectors}: {e}") from None
    with atomic_path(dst_vectors) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, vectors)
    write_json(dst_metrics, metrics)
    return metrics


def write_empty_logits(dst: Path, classes: int) -> None:
    import numpy as np
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, np.zeros((0, classes), dtype=np.float32))


@dataclass(frozen=True)
class EvaluateArgs:
    fmt: str                     # recipes.measure.runners key
    artifact: Path
    size_paths: tuple[Path, ...]
    data_dir: Path
    tokenizer_json: Path
    max_length: int
    input_names: tuple[str, ...]
    metrics: Path
    logits: Path
    teacher_logits: Path | None
    batch_size: int
    task: str = "classification"


def build(args: EvaluateArgs) -> dict[str, Any]:
    return evaluate(args.fmt, args.artifact, list(args.size_paths), args.data_dir, args.tokenizer_json, args.max_length,
                    args.input_names, args.metrics, args.logits, args.teacher_logits, args.batch_size, args.task)


STAGE = Stage("evaluate", EvaluateArgs, build,
              modules=("measure.evaluate", "measure.embedding_metrics", "measure.runners", "measure.nf4_runner",
                       "measure.mobile_runners", "textenc", "inputs.data", "models.hf", "models.embedding", "models.slim",
                       "models.archs", "params", "runtime.nf4", "runtime.tokenize", "runtime.openvino_backend",
                       "runtime.cpu_features"),
              packages=("torch", "transformers", "onnxruntime", "tokenizers", "bitsandbytes", "executorch", "openvino"))


def declare(g: "Graph", fmt: str, artifact: Path, artifact_files: list[Path], teacher: "Model", max_length: int,
            teacher_logits: Path | None) -> Path:
    """Accuracy (and agreement with `teacher_logits`) of one artifact; the output directory."""
    size_paths = [f for f in artifact_files if f.name in ("model.safetensors", "model.onnx", "model.xml", "model.bin")] \
        or artifact_files
    identity = {"fmt": fmt, "artifact": artifact, "size_paths": size_paths, "data_dir": g.data_dir,
                "tokenizer_json": teacher.tokenizer, "max_length": max_length, "input_names": g.input_names,
                "teacher_logits": teacher_logits, "task": g.profile.task or "classification"}
    out = g.stage_dir("eval", identity)
    args = EvaluateArgs(fmt=fmt, artifact=artifact, size_paths=tuple(size_paths), data_dir=g.data_dir,
                        tokenizer_json=teacher.tokenizer, max_length=max_length, input_names=g.input_names,
                        metrics=out / "metrics.json", logits=out / "logits.npy", teacher_logits=teacher_logits,
                        batch_size=EVAL_BATCH, task=g.profile.task or "classification")
    sources = list(artifact_files) + [g.data_dir / "eval.jsonl", g.data_dir / "data.json", teacher.tokenizer]
    # Whether an OpenVINO artifact can run at its precision here (bf16) depends on this host's CPU:
    # a build directory moved to another host re-evaluates it.
    signature = {"host_cpu_features": known_host_features()} if fmt == "openvino" else None
    g.stage(STAGE, [args.metrics, args.logits], sources + ([teacher_logits] if teacher_logits else []), args, signature)
    return out
