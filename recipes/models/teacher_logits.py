"""The teacher's logits on the train split, stored per example id.

A cached stage of its own, keyed by the teacher and the data, so every
student and every pruning recovery distils from one computation. The table
is indexed by example id, never by position or training step: a shuffled
student batch looks its targets up by the ids of the examples it holds.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from recipes.inputs.data import Example, load_split
from recipes.errors import StageError
from recipes.fsutil import atomic_path
from recipes.textenc import Encoder

BATCH = 32


class TeacherLogits:
    """id -> teacher logits row, read from the stage's ids.json and logits.npy."""

    def __init__(self, ids: list[str], logits: np.ndarray, source: Path):
        if len(ids) != len(logits) or len(set(ids)) != len(ids):
            raise StageError(f"{source}: ids.json and logits.npy do not pair up one to one; rebuild the teacher logits")
        self.rows = {i: k for k, i in enumerate(ids)}
        self.logits = logits
        self.source = source

    @classmethod
    def load(cls, directory: Path) -> "TeacherLogits":
        directory = Path(directory)
        ids = json.loads((directory / "ids.json").read_text(encoding="utf-8"))
        return cls(ids, np.load(directory / "logits.npy", allow_pickle=False), directory)

    def lookup(self, ids: list[str]) -> np.ndarray:
        """Rows for `ids`, in that order; an id the teacher never saw is an error."""
        try:
            return self.logits[[self.rows[i] for i in ids]]
        except KeyError as e:
            raise StageError(f"{self.source}: no teacher logits for example id {e.args[0]!r}; "
                             f"the table was computed for other data (rebuild it)") from None


def compute(model_dir: Path, data_dir: Path, dst: Path, input_names: tuple[str, ...], max_length: int,
            threads: int) -> int:
    import torch

    from recipes.models.hf import load_classifier

    torch.set_num_threads(threads)
    model = load_classifier(model_dir)
    examples: list[Example] = load_split(data_dir / "train.jsonl")
    encoder = Encoder(model_dir / "tokenizer.json", max_length)
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(examples), BATCH):
            batch = examples[start:start + BATCH]
            feeds = encoder.encode([e.text for e in batch], input_names)
            out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
            chunks.append(out.float().numpy())
    logits = np.concatenate(chunks).astype(np.float32)
    # Two plain files rather than an .npz: np.savez stamps zip members with
    # the current time, and this output must be byte-reproducible.
    with atomic_path(dst / "logits.npy") as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, logits)
    with atomic_path(dst / "ids.json") as tmp:
        tmp.write_text(json.dumps([e.id for e in examples], ensure_ascii=False) + "\n", encoding="utf-8")
    return len(examples)


def teacher_logits_stage(model_dir: str, data_dir: str, dst: str, input_names: list[str], max_length: int,
                         threads: int) -> None:
    compute(Path(model_dir), Path(data_dir), Path(dst), tuple(input_names), max_length, threads)
