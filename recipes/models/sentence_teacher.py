"""The teacher of an embedding build: a sentence-transformers checkpoint as an edgesmith embedding model.

Reads the pooling from the checkpoint's own sentence-transformers files (recipes/models/embedding.py checks
them), loads the encoder with every tensor checked, and writes a model directory whose pooling.json makes
every later stage (export, quantization, evaluation, mobile formats) build the pooled, normalised vector.
Nothing is trained: the checkpoint is the teacher, as a classifier with a trained head is.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.models.model_dir import write_model_dir
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # the graph is SCons-side; importing it would put it in this stage's signature
    from recipes.wiring.graph import Graph, Inputs


@dataclass(frozen=True)
class SentenceTeacherArgs:
    model_dir: Path
    dst: Path


def build(args: SentenceTeacherArgs) -> dict[str, Any]:
    import torch

    from recipes.models.embedding import read_sentence_transformers
    from recipes.models.hf import load_embedding

    torch.manual_seed(0)
    config = json.loads((args.model_dir / "config.json").read_text(encoding="utf-8"))
    pooling = read_sentence_transformers(args.model_dir, int(config.get("hidden_size") or config.get("dim") or 0))
    model = load_embedding(args.model_dir, pooling)
    record = {"pooling": asdict(pooling), "source": "sentence-transformers checkpoint",
              "parameters": sum(p.numel() for p in model.parameters())}
    write_model_dir(model, args.model_dir, args.dst, "embedding.json", record)
    return record


STAGE = Stage("embedder", SentenceTeacherArgs, build,
              modules=("models.sentence_teacher", "models.embedding", "models.model_dir", "inputs.checkpoint",
                       "models.hf", "models.slim", "models.archs"),
              packages=("torch", "transformers"))


def declare(g: "Graph", inputs: "Inputs") -> tuple[Path, list[Path]]:
    """The embedding teacher's model directory and its files."""
    info = inputs.model
    out = g.stage_dir("embedder", {"model_dir": info.root, "st_files": list(info.sentence_transformers_files)})
    args = SentenceTeacherArgs(model_dir=info.root, dst=out)
    names = ["config.json", "model.safetensors"] + [f.name for f in info.files if f.name not in ("config.json", "model.safetensors")]
    targets = [out / n for n in names] + [out / "pooling.json", out / "embedding.json", out / "manifest.json"]
    g.stage(STAGE, targets, list(info.files) + list(info.sentence_transformers_files), args)
    return out, targets
