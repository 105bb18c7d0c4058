"""The teacher's logits on the train split, stored per example id.

A cached stage of its own, keyed by the teacher and the data, so every
student and every pruning recovery distils from one computation. The table
is indexed by example id, never by position or training step: a shuffled
student batch looks its targets up by the ids of the examples it holds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recipes.errors import StageError
from recipes.fsutil import atomic_path
from recipes.inputs.data import Example, load_split
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    import numpy as np

    from recipes.wiring.graph import Graph, Model

# Inference batch for the table. In the spec (and so the signature) because
# padding to each batch's longest text may move float sums in the last bit.
BATCH = 32


@dataclass(frozen=True)
class TeacherLogitsArgs:
    model_dir: Path
    data_dir: Path
    dst: Path
    input_names: tuple[str, ...]
    max_length: int
    threads: int
    batch_size: int


class TeacherLogits:
    """id -> teacher logits row, read from the stage's ids.json and logits.npy."""

    def __init__(self, ids: list[str], logits: "np.ndarray", source: Path):
        if len(ids) != len(logits) or len(set(ids)) != len(ids):
            raise StageError(f"{source}: ids.json and logits.npy do not pair up one to one; rebuild the teacher logits")
        self.rows = {i: k for k, i in enumerate(ids)}
        self.logits = logits
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> "TeacherLogits":
        import numpy as np

        directory = Path(directory)
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        return cls(ids, np.load(directory / "logits.npy", allow_pickle=False), directory)

    def lookup(self, ids: list[str]) -> "np.ndarray":
        """Rows for `ids`, in that order; an id the teacher never saw is an error."""
        try:
            return self.logits[[self.rows[i] for i in ids]]
        except KeyError as e:
            raise StageError(f"{self.source}: no teacher logits for example id {e.args[0]!r}; "
                             f"the table was computed for other data (rebuild it)") from None


def build(args: TeacherLogitsArgs) -> int:
    import numpy as np
    import torch

    from recipes.models.hf import load_classifier

    torch.set_num_threads(args.threads)
    model = load_classifier(args.model_dir)
    examples: list[Example] = load_split(args.data_dir / "train.jsonl")
    encoder = Encoder(args.model_dir / "tokenizer.json", args.max_length)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(examples), args.batch_size):
            batch = examples[start:start + args.batch_size]
            feeds = encoder.encode([e.text for e in batch], args.input_names)
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
            chunks.append(out.float().numpy())
    logits = np.concatenate(chunks).astype(np.float32)
    # Two plain files rather than an .npz: np.savez stamps zip members with
    # the current time, and this output must be byte-reproducible.
    with atomic_path(args.dst / "logits.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, logits)
    with atomic_path(args.dst / "ids.json") as tmp:
        tmp.write_text(json.dumps([e.id for e in examples], ensure_ascii=False) + "\n", encoding="utf-8")
    return len(examples)


STAGE = Stage("teacher_logits", TeacherLogitsArgs, build,
              modules=("models.teacher_logits", "models.hf", "models.embedding", "textenc", "inputs.data", "models.slim", "models.archs", "params", "runtime.tokenize"),
              packages=("torch", "transformers", "tokenizers"))


def declare(g: "Graph", teacher: "Model", data_dir: Path, max_length: int, threads: int) -> Path:
    identity = {"model_dir": teacher.dir, "data_dir": data_dir, "input_names": g.input_names, "max_length": max_length,
                "threads": threads}
    out = g.stage_dir("teacher-logits", identity)
    args = TeacherLogitsArgs(model_dir=teacher.dir, data_dir=data_dir, dst=out, input_names=g.input_names,
                             max_length=max_length, threads=threads, batch_size=BATCH)
    g.stage(STAGE, [out / "logits.npy", out / "ids.json"], teacher.weights + [teacher.tokenizer, data_dir / "train.jsonl"], args)
    return out
