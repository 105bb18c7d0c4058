"""Datasets: read CSV / TSV / JSONL / Parquet, validate, split, normalise.

The output of the data stage is canonical: examples sorted by id, one JSON
object per line. Re-ordering the source rows therefore produces the same
bytes, and SCons stops the rebuild there (early cut-off).
"""
from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

from recipes.errors import DataError
from recipes.fsutil import atomic_dir
from recipes.params import bounded
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph

FORMATS = (".csv", ".tsv", ".jsonl", ".parquet")
TEXT_COLUMNS = ("text", "sentence", "content", "review")


@dataclass(frozen=True)
class DataParams:
    text_column: str = ""   # "" = first of TEXT_COLUMNS present
    label_column: str = "label"
    eval_fraction: float = bounded(0.2, min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # Labels in model order when the checkpoint already has a trained head.
    model_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class Example:
    id: str
    text: str
    label: str


def check_path(path: Path, key: str = "data") -> None:
    """Cheap checks done while SCons reads the build files."""
    if not path.is_file():
        raise DataError(f"{key}={path}: no such file")
    if path.suffix.lower() not in FORMATS:
        raise DataError(f"{key}={path}: unknown format {path.suffix or '(no extension)'!r}; use one of {', '.join(FORMATS)}")


def read_rows(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8-sig") as fh:
                if suffix == ".tsv":
                    # TSV datasets (GLUE, SST-2) are unquoted: quotes are text.
                    return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
                return list(csv.DictReader(fh))
        if suffix == ".jsonl":
            rows = []
            with open(path, encoding="utf-8") as fh:
                for lineno, line in enumerate(fh, 1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as e:
                            raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
                        if not isinstance(row, dict):
                            raise DataError(f"{path}:{lineno}: expected a JSON object per line")
                        rows.append(row)
            return rows
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    except (OSError, csv.Error) as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    except Exception as e:  # pyarrow raises its own exception types
        if type(e).__module__.startswith("pyarrow"):
            raise DataError(f"{path}: not a readable Parquet file ({e})") from e
        raise
    raise DataError(f"{path}: unknown format {suffix!r}; use one of {', '.join(FORMATS)}")


def _label_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip()


def to_examples(rows: list[dict[str, Any]], path: Path, params: DataParams) -> tuple[list[Example], int]:
    """Examples with stable ids, and how many duplicate texts were dropped."""
    if not rows:
        raise DataError(f"{path}: the dataset is empty (no rows)")
    columns = list(rows[0].keys())
    text_col = params.text_column or next((c for c in TEXT_COLUMNS if c in columns), "")
    if text_col not in columns:
        wanted = f"text column {params.text_column!r}" if params.text_column else f"a text column ({', '.join(TEXT_COLUMNS)})"
        raise DataError(f"{path}: no {wanted}; columns found: {', '.join(map(str, columns))}; pass text_column=NAME")
    if params.label_column not in columns:
        raise DataError(f"{path}: no label column {params.label_column!r}; columns found: {', '.join(map(str, columns))}; pass label_column=NAME")
    has_id = "id" in columns
    seen: set[str] = set()
    examples, dropped = [], 0
    for i, row in enumerate(rows):
        text, label = row.get(text_col), row.get(params.label_column)
        where = f"{path}: row {i + 1}"
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{where}: empty or missing {text_col!r}")
        if label is None or _label_text(label) == "":
            raise DataError(f"{where}: empty or missing {params.label_column!r}")
        text = text.strip()
        ex_id = str(row["id"]) if has_id else hashlib.sha256(text.encode()).hexdigest()[:16]
        if text in seen or (has_id and ex_id in seen):
            dropped += 1
            continue
        seen.update((text, ex_id))
        examples.append(Example(ex_id, text, _label_text(label)))
    return examples, dropped


def order_labels(found: Iterable[str], model_labels: tuple[str, ...], where: str) -> list[str]:
    found = set(found)
    if model_labels:
        unknown = sorted(found - set(model_labels))
        if unknown:
            raise DataError(
                f"{where}: labels {', '.join(map(repr, unknown))} are not labels of the model "
                f"(its id2label has {', '.join(map(repr, model_labels))}); use matching labels or a checkpoint without a trained head"
            )
        return list(model_labels)
    if len(found) < 2:
        raise DataError(f"{where}: only one label ({', '.join(map(repr, found))}); a classifier needs at least two")
    # Integer labels in numeric order (0, 1, 2, ... 10), others alphabetically.
    if all(l.lstrip("-").isdigit() for l in found):
        return sorted(found, key=int)
    return sorted(found)


def in_eval_split(ex_id: str, fraction: float) -> bool:
    """Hash-based split: an example stays on its side when others are added."""
    bucket = int(hashlib.sha256(ex_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < fraction


def _write_jsonl(path: Path, examples: list[Example]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for ex in sorted(examples, key=lambda e: e.id):
            fh.write(json.dumps({"id": ex.id, "text": ex.text, "label": ex.label}, ensure_ascii=False) + "\n")


def prepare(src: Path, eval_src: Path | None, dst: Path, params: DataParams) -> dict[str, Any]:
    """Write train.jsonl, eval.jsonl and data.json (labels, counts) into dst."""
    src = Path(src)
    examples, dropped = to_examples(read_rows(src), src, params)
    if eval_src is not None:
        eval_examples, dropped_eval = to_examples(read_rows(Path(eval_src)), Path(eval_src), params)
        train = examples
        dropped += dropped_eval
    else:
        train = [e for e in examples if not in_eval_split(e.id, params.eval_fraction)]
        eval_examples = [e for e in examples if in_eval_split(e.id, params.eval_fraction)]
    if not train or not eval_examples:
        raise DataError(f"{src}: the split left {len(train)} train and {len(eval_examples)} eval examples; add data or change eval_fraction")
    labels = order_labels((e.label for e in train + eval_examples), params.model_labels, str(src))
    summary = {
        "labels": labels,
        "train": len(train),
        "eval": len(eval_examples),
        "dropped_duplicates": dropped,
        "label_counts": {
            split: {l: sum(e.label == l for e in exs) for l in labels}
            for split, exs in (("train", train), ("eval", eval_examples))
        },
    }
    with atomic_dir(dst) as tmp:
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "eval.jsonl", eval_examples)
        (tmp / "data.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


def load_split(path: Path) -> list[Example]:
    with open(path, encoding="utf-8") as fh:
        return [Example(**json.loads(line)) for line in fh if line.strip()]


def load_labels(data_json: Path) -> list[str]:
    return json.loads(Path(data_json).read_text(encoding="utf-8"))["labels"]


@dataclass(frozen=True)
class DataArgs:
    src: Path
    eval_src: Path | None
    dst: Path
    params: DataParams


def build(args: DataArgs) -> dict[str, Any]:
    return prepare(args.src, args.eval_src, args.dst, args.params)


STAGE = Stage("data", DataArgs, build, modules=("inputs.data", "params"))


def declare(g: "Graph", src: Path, eval_src: Path | None, params: DataParams) -> Path:
    """The canonical splits (train.jsonl, eval.jsonl, data.json) of the user's data."""
    out = g.stage_dir("data", {"src": src, "eval_src": eval_src, "params": params})
    args = DataArgs(src=src, eval_src=eval_src, dst=out, params=params)
    g.stage(STAGE, [out / "train.jsonl", out / "eval.jsonl", out / "data.json"], [src] + ([eval_src] if eval_src else []), args)
    return out
