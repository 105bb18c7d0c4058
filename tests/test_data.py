"""Datasets in every supported format, the split, and label handling."""
from __future__ import annotations

import json

import pytest

from recipes.inputs.data import DataParams, in_eval_split, load_split, prepare
from recipes.errors import DataError

ROWS = [{"id": f"r{i}", "text": f"sentence number {i}", "label": "pos" if i % 2 else "neg"} for i in range(40)]


def write(tmp_path, fmt: str):
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        path.write_text("id,text,label\n" + "".join(f'{r["id"]},"{r["text"]}",{r["label"]}\n' for r in ROWS))
    elif fmt == "tsv":
        path.write_text("id\ttext\tlabel\n" + "".join(f'{r["id"]}\t{r["text"]}\t{r["label"]}\n' for r in ROWS))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(ROWS), path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "tsv", "jsonl", "parquet"])
def test_every_format_gives_the_same_splits(tmp_path, fmt):
    out = tmp_path / "out"
    summary = prepare(write(tmp_path, fmt), None, out, DataParams(eval_fraction=0.25))
    assert summary["labels"] == ["neg", "pos"] and summary["train"] + summary["eval"] == 40
    ids = [e.id for e in load_split(out / "eval.jsonl")]
    assert ids == sorted(ids) and ids == sorted(r["id"] for r in ROWS if in_eval_split(r["id"], 0.25))


def test_output_is_canonical_whatever_the_row_order(tmp_path):
    prepare(write(tmp_path, "jsonl"), None, tmp_path / "a", DataParams())
    ROWS.reverse()
    try:
        prepare(write(tmp_path, "jsonl"), None, tmp_path / "b", DataParams())
    finally:
        ROWS.reverse()
    for name in ("train.jsonl", "eval.jsonl", "data.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_separate_eval_file_and_integer_labels(tmp_path):
    train = tmp_path / "t.jsonl"
    train.write_text("".join(json.dumps({"sentence": f"s {i}", "label": i % 3}) + "\n" for i in range(12)))
    dev = tmp_path / "e.jsonl"
    dev.write_text("".join(json.dumps({"sentence": f"e {i}", "label": i % 3}) + "\n" for i in range(6)))
    summary = prepare(train, dev, tmp_path / "o", DataParams())
    assert summary["labels"] == ["0", "1", "2"] and summary["train"] == 12 and summary["eval"] == 6


def test_duplicates_are_dropped_and_counted(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": f"text {i}", "label": "xy"[i % 2]} for i in range(20)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows + rows[:7]))
    summary = prepare(path, None, tmp_path / "o", DataParams(eval_fraction=0.3))
    assert summary["dropped_duplicates"] == 7 and summary["train"] + summary["eval"] == 20


def test_model_labels_fix_the_order(tmp_path):
    summary = prepare(write(tmp_path, "csv"), None, tmp_path / "o", DataParams(model_labels=("pos", "neg", "other")))
    assert summary["labels"] == ["pos", "neg", "other"]


@pytest.mark.parametrize("content,message", [
    ('{"text": "a"}\n', "no label column 'label'; columns found: text"),
    ('{"text": "", "label": "x"}\n', "row 1: empty or missing 'text'"),
    ('{"text": "a", "label": "x"}\nnot json\n', "d.jsonl:2: invalid JSON"),
    ('{"text": "a", "label": "x"}\n{"text": "b", "label": "x"}\n', "only one label"),
])
def test_errors(tmp_path, content, message):
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        prepare(path, None, tmp_path / "o", DataParams(eval_fraction=0.5))
    assert message in str(e.value) and "\n" not in str(e.value)
