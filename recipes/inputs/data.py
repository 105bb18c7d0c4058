"""Datasets: read CSV / TSV / JSONL / Parquet, validate, split, normalise.

The output of the data stage is canonical: examples sorted by id, one JSON
object per line. Re-ordering the source rows therefore produces the same
bytes, and SCons stops the rebuild there (early cut-off).

Labels are normalised by one rule (`normalize_label`), the same for every
format, so a class can never be spelled two ways:

* text is stripped of surrounding whitespace; case and inner spaces are kept
  ("Pos" and "pos" are two classes);
* a number -- an int, a float, a Decimal, or text that reads as a plain
  decimal number such as "1", "1.0", "+1", "01", "1e0" -- is a number: an
  integral one is written as its integer digits ("1", "0", "-3"; so 1, 1.0,
  "1" and "1.0" are all the class "1"), any other as its shortest decimal
  ("2.50" and 2.5 are "2.5");
* a label is missing when it is absent, null/None, NaN (a JSONL NaN, a
  Parquet null or NaN) or text that is empty or, in any case, "nan", "null",
  "none" or "<na>" (what pandas, Python and JSON tools write for a missing
  value). A real class named "none" therefore has to be renamed. "NA" and
  "N/A" are ordinary text. Missing labels are an error, never a class;
* booleans (JSONL true/false, a Parquet bool column) are an error: they are
  neither a class name nor a class number, and would otherwise become
  "True"/"False" or 0/1 depending on the tool. Infinities, lists, objects and
  other values are errors too. The text "true" in a CSV is ordinary text.

Rows are numbered from 1 in the order they are read (the CSV/TSV header is
not a row; blank JSONL lines are skipped). Each file is checked on its own,
then against the other: contradicting labels for the same (stripped) text,
an id shared by different texts, a class present only in the eval side, and
missing or non-label values are DataErrors naming the file and up to five
rows. Exact duplicates (same text, same label) are dropped and counted.
eval_data with the same examples as data, or sharing some with it, is only a
warning, recorded in data.json's "warnings" (one-line strings).
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass
from decimal import Context, Decimal
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
    # An embedding build (task = "embedding") reads texts only: a label column, if any, is not read.
    texts_only: bool = False


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


# Text (stripped, any case) that stands for a missing value: str(float("nan")),
# JSON's null, Python's None, pandas' pd.NA. Empty text is missing too.
MISSING_LABEL_TEXTS = frozenset({"", "nan", "null", "none", "<na>"})
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
SHOWN = 5  # examples named in one error message


def _canonical_number(d: Decimal) -> str:
    if d.is_nan():
        raise AssertionError("NaN is handled as missing before this point")
    if d.is_infinite():
        raise ValueError("not a finite number")
    if d == d.to_integral_value() and d.adjusted() < 64:
        return str(int(d))  # 1, 1.0, "+1", "1e0" -> "1"; -0 -> "0"
    return str(d.normalize(Context(prec=max(28, len(d.as_tuple().digits)))))  # exact: "2.50" -> "2.5"


def normalize_label(value: Any) -> str | None:
    """The one canonical spelling of a label; None when it is missing.

    Raises ValueError (its text says what the value is) for values that are
    not labels: booleans, infinities, lists and other non-scalar values.
    The rule is documented at the top of this module.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError("a boolean")
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in MISSING_LABEL_TEXTS:
            return None
        return _canonical_number(Decimal(text)) if _NUMBER.fullmatch(text) else text
    if isinstance(value, Decimal):
        return None if value.is_nan() else _canonical_number(value)
    if isinstance(value, numbers.Integral):
        return _canonical_number(Decimal(int(value)))
    if isinstance(value, numbers.Real):
        value = float(value)
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ValueError("not a finite number")
        return _canonical_number(Decimal(repr(value)))  # repr: the shortest text that reads back as this float
    raise ValueError(f"a {type(value).__name__}, not text or a number")


def _show(value: Any) -> str:
    """A raw cell value as one short line (JSON spellings for null/booleans/NaN)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "NaN"
    if isinstance(value, str):
        return repr(_short(value) if value.strip() else value)
    return _short(repr(value))


def _short(text: str, width: int = 40) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _rows(numbers_: list[int]) -> str:
    """'row 4' / 'rows 3, 5, 7, 8, 9 and 2 more'."""
    if len(numbers_) == 1:
        return f"row {numbers_[0]}"
    shown = ", ".join(map(str, numbers_[:SHOWN]))
    return f"rows {shown}" + (f" and {len(numbers_) - SHOWN} more" if len(numbers_) > SHOWN else "")


def _some(items: list[str]) -> str:
    """Up to SHOWN examples joined on one line, with the count of the rest."""
    return "; ".join(items[:SHOWN]) + (f"; and {len(items) - SHOWN} more" if len(items) > SHOWN else "")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def to_examples(rows: list[dict[str, Any]], path: Path, params: DataParams) -> tuple[list[Example], int]:
    """Examples with stable ids, and how many duplicate texts were dropped."""
    examples, dropped, _ = _to_examples(rows, path, params)
    return examples, dropped


def _to_examples(rows: list[dict[str, Any]], path: Path, params: DataParams) -> tuple[list[Example], int, dict[str, int]]:
    """Examples, the number of exact duplicates dropped, and each kept example's row number (by id)."""
    if not rows:
        raise DataError(f"{path}: the dataset is empty (no rows)")
    columns = list(rows[0].keys())
    text_col = params.text_column or next((c for c in TEXT_COLUMNS if c in columns), "")
    if text_col not in columns:
        wanted = f"text column {params.text_column!r}" if params.text_column else f"a text column ({', '.join(TEXT_COLUMNS)})"
        raise DataError(f"{path}: no {wanted}; columns found: {', '.join(map(str, columns))}; pass text_column=NAME")
    label_col = params.label_column
    if label_col not in columns and not params.texts_only:
        raise DataError(f"{path}: no label column {label_col!r}; columns found: {', '.join(map(str, columns))}; pass "
                        "label_column=NAME, or, for texts without labels, build a sentence-embedding model "
                        "(task=embedding, with a sentence-transformers checkpoint)")
    has_id = "id" in columns

    parsed: list[tuple[int, str, str, str]] = []  # (row, id, text, label)
    missing: list[tuple[int, Any]] = []
    invalid: list[tuple[int, Any, str]] = []
    no_id: list[int] = []
    for row_no, row in enumerate(rows, 1):
        text, raw = row.get(text_col), row.get(label_col)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}: row {row_no}: empty or missing {text_col!r}; fill in the text or remove the row")
        if params.texts_only:
            raw = ""  # a label column, if any, is not read: every text is an example of the same kind
        try:
            label = normalize_label(raw)  # the one label rule: see the module docstring
        except ValueError as e:
            invalid.append((row_no, raw, str(e)))
            continue
        if label is None and not params.texts_only:
            missing.append((row_no, raw))
            continue
        label = label or ""
        text = text.strip()
        if has_id and _missing(row["id"]):
            no_id.append(row_no)
            continue
        ex_id = str(row["id"]) if has_id else hashlib.sha256(text.encode()).hexdigest()[:16]
        parsed.append((row_no, ex_id, text, label))

    if missing:
        values = ", ".join(dict.fromkeys(_show(v) for _, v in missing))
        raise DataError(
            f"{path}: {_n(len(missing), 'row')} {'has' if len(missing) == 1 else 'have'} no label in column {label_col!r} "
            f"({_rows([r for r, _ in missing])}; values: {values}); empty cells, null, NaN and the texts "
            f"'nan', 'null', 'none', '<NA>' (any case) count as missing; fill in the labels or remove those rows"
        )
    if invalid:
        raise DataError(
            f"{path}: {_n(len(invalid), 'label')} in column {label_col!r} {'is not a class name' if len(invalid) == 1 else 'are not class names'} "
            f"({_some([f'row {r}: {_show(v)} is {why}' for r, v, why in invalid])}); "
            f"write each label as text (e.g. 'yes'/'no') or as an integer class number (e.g. 0/1)"
        )
    if no_id:
        raise DataError(
            f"{path}: {_n(len(no_id), 'row')} {'has' if len(no_id) == 1 else 'have'} an empty 'id' ({_rows(no_id)}); "
            f"fill in the ids, or remove the 'id' column so ids come from a hash of the text"
        )

    by_id: dict[str, tuple[int, str, str]] = {}    # id -> (row, text, label)
    by_text: dict[str, tuple[int, str]] = {}       # text -> (row, label)
    collisions: list[str] = []
    contradictions: list[str] = []
    examples, dropped = [], 0
    for row_no, ex_id, text, label in parsed:
        if ex_id in by_id and by_id[ex_id][1] != text:
            first, first_text, _ = by_id[ex_id]
            collisions.append(f"id {ex_id!r}: row {first} {_show(first_text)} vs row {row_no} {_show(text)}")
            continue
        if text in by_text:
            first, first_label = by_text[text]
            if first_label != label:
                contradictions.append(f"row {row_no} {_show(text)} is {label!r} but row {first} says {first_label!r}")
            else:
                dropped += 1  # an exact duplicate: same text, same label
            continue
        by_id[ex_id] = (row_no, text, label)
        by_text[text] = (row_no, label)
        examples.append(Example(ex_id, text, label))
    if collisions:
        how = "give every example its own id, or remove the 'id' column so ids come from a hash of the text" if has_id else "report this hash collision"
        raise DataError(f"{path}: {_n(len(collisions), 'id')} {'is' if len(collisions) == 1 else 'are'} shared by rows with different texts ({_some(collisions)}); {how}")
    if contradictions:
        raise DataError(
            f"{path}: contradicting labels for the same text in {_n(len(contradictions), 'row')} "
            f"({_some(contradictions)}); fix or remove the wrong rows so each text has one label"
        )
    return examples, dropped, {ex_id: row_no for ex_id, (row_no, _, _) in by_id.items()}


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


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def _check_eval_data(src: Path, eval_src: Path, train: list[Example], eval_examples: list[Example],
                     eval_rows: dict[str, int]) -> list[str]:
    """Cross-file checks of a separate eval_data; returns the warnings."""
    if _same_file(src, eval_src) or {(e.text, e.label) for e in train} == {(e.text, e.label) for e in eval_examples}:
        how = "is the same file as" if _same_file(src, eval_src) else "has the same examples as"
        return [f"eval_data {eval_src} {how} data {src}: the eval scores measure the training examples; "
                f"pass a held-out eval_data, or leave eval_data out to split data"]
    train_label = {e.text: e.label for e in train}
    contradictions = [
        f"eval_data row {eval_rows[e.id]} {_show(e.text)} is {e.label!r} but data says {train_label[e.text]!r}"
        for e in sorted(eval_examples, key=lambda e: eval_rows[e.id])
        if e.text in train_label and train_label[e.text] != e.label
    ]
    if contradictions:
        raise DataError(
            f"data {src} and eval_data {eval_src}: contradicting labels for the same text in {_n(len(contradictions), 'row')} "
            f"({_some(contradictions)}); fix or remove the wrong rows so each text has one label"
        )
    shared = sum(e.text in train_label for e in eval_examples)
    if shared:
        return [f"{shared} of {len(eval_examples)} eval_data examples ({eval_src}) also appear in data {src}: "
                f"their eval scores measure training examples; remove them from one of the files"]
    return []


def _check_eval_only_classes(train: list[Example], eval_examples: list[Example], eval_rows: dict[str, int],
                             model_labels: tuple[str, ...], where: str, how: str) -> None:
    """A class with no training example would make a head that was never trained for it."""
    trained = {e.label for e in train} | set(model_labels)  # a trained head already knows its labels
    only: dict[str, list[int]] = {}
    for e in eval_examples:
        if e.label not in trained:
            only.setdefault(e.label, []).append(eval_rows[e.id])
    if only:
        classes = "; ".join(f"{label!r} ({_rows(sorted(rows))})" for label, rows in sorted(only.items()))
        raise DataError(f"{where}: {'class' if len(only) == 1 else 'classes'} {classes} {'is' if len(only) == 1 else 'are'} {how}")


def prepare(src: Path, eval_src: Path | None, dst: Path, params: DataParams) -> dict[str, Any]:
    """Write train.jsonl, eval.jsonl and data.json (labels, counts, warnings) into dst."""
    src = Path(src)
    examples, dropped, rows = _to_examples(read_rows(src), src, params)
    warnings: list[str] = []
    if eval_src is not None:
        eval_src = Path(eval_src)
        eval_examples, dropped_eval, eval_rows = _to_examples(read_rows(eval_src), eval_src, params)
        train = examples
        dropped += dropped_eval
        warnings += _check_eval_data(src, eval_src, train, eval_examples, eval_rows)
    else:
        train = [e for e in examples if not in_eval_split(e.id, params.eval_fraction)]
        eval_examples = [e for e in examples if in_eval_split(e.id, params.eval_fraction)]
        eval_rows = rows
    if not train or not eval_examples:
        raise DataError(f"{src}: the split left {len(train)} train and {len(eval_examples)} eval examples; add data or change eval_fraction")
    if params.texts_only:
        return _write_texts(src, eval_src, dst, train, eval_examples, dropped, warnings)
    labels = order_labels((e.label for e in train + eval_examples), params.model_labels, str(src))
    if eval_src is not None:
        _check_eval_only_classes(train, eval_examples, eval_rows, params.model_labels, f"eval_data {eval_src}",
                                 f"only in eval_data, not in data {src}; add training examples of it to data or remove those rows from eval_data")
    else:
        _check_eval_only_classes(train, eval_examples, eval_rows, params.model_labels, str(src),
                                 "only in the eval split (no example left to train on); add more examples of it or remove those rows")
    summary = {
        "labels": labels,
        "train": len(train),
        "eval": len(eval_examples),
        "dropped_duplicates": dropped,
        "label_counts": {
            split: {l: sum(e.label == l for e in exs) for l in labels}
            for split, exs in (("train", train), ("eval", eval_examples))
        },
        "warnings": warnings,
    }
    with atomic_dir(dst) as tmp:
        _write_jsonl(tmp / "train.jsonl", train)
        _write_jsonl(tmp / "eval.jsonl", eval_examples)
        (tmp / "data.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return summary


# recall@10 (recipes/measure/embedding_metrics.py) ranks each eval text's ten nearest other eval texts.
MIN_EMBEDDING_EVAL = 11


def _write_texts(src: Path, eval_src: Path | None, dst: Path, train: list[Example], eval_examples: list[Example],
                 dropped: int, warnings: list[str]) -> dict[str, Any]:
    """The splits of an embedding build: texts without labels."""
    if len(eval_examples) < MIN_EMBEDDING_EVAL:
        where = f"eval_data {eval_src}" if eval_src is not None else f"the eval split of {src}"
        raise DataError(f"{where}: {len(eval_examples)} texts; an embedding build measures recall@10 over the eval "
                        f"texts and needs at least {MIN_EMBEDDING_EVAL}; add texts, or raise eval_fraction")
    summary = {"labels": [], "task": "embedding", "train": len(train), "eval": len(eval_examples),
               "dropped_duplicates": dropped, "warnings": warnings}
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
