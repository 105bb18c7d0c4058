"""Labels are normalised by one rule, and bad labels are errors, not classes.

Issue "Trust", item 6: NaN labels, 1 vs 1.0, eval-only classes, contradicting
labels and id collisions used to ship a wrong model silently.
"""
from __future__ import annotations

import json
import math
import shutil

import pytest

from recipes.errors import DataError
from recipes.inputs.data import DataArgs, DataParams, build, load_split, prepare


def jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def parquet(path, rows):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def rows(n=20, labels=("neg", "pos"), prefix="sentence"):
    return [{"text": f"{prefix} number {i}", "label": labels[i % len(labels)]} for i in range(n)]


def error(src, eval_src=None, params=DataParams(eval_fraction=0.5), *, dst=None) -> str:
    with pytest.raises(DataError) as e:
        prepare(src, eval_src, dst or src.parent / "out", params)
    message = str(e.value)
    assert "\n" not in message and "Traceback" not in message, message
    return message


# --- missing labels ---------------------------------------------------------

def test_nan_label_in_csv_is_an_error(tmp_path):
    path = tmp_path / "d.csv"
    body = "".join(f"sentence {i},{'pos' if i % 2 else 'neg'}\n" for i in range(10))
    path.write_text("text,label\n" + body + "sentence x,NaN\nsentence y, null \nsentence z,nan\n")
    message = error(path)
    assert "d.csv" in message and "rows 11, 12, 13" in message and "'label'" in message
    assert "NaN" in message


def test_nan_and_null_labels_in_jsonl_are_errors_naming_the_rows(tmp_path):
    data = rows(12)
    for i, bad in ((2, math.nan), (4, None), (6, "nan"), (7, "None"), (8, " "), (9, math.nan), (10, "NULL")):
        data[i]["label"] = bad
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in data))  # json.dumps writes NaN
    message = error(path)
    assert "d.jsonl" in message and "7 rows" in message
    assert "rows 3, 5, 7, 8, 9 and 2 more" in message


def test_nan_label_in_parquet_is_an_error(tmp_path):
    data = [{"text": f"sentence {i}", "label": float(i % 2)} for i in range(10)]
    data[3]["label"] = math.nan
    message = error(parquet(tmp_path / "d.parquet", data))
    assert "d.parquet" in message and "row 4" in message and "no label" in message


# --- one spelling per class -------------------------------------------------

def test_1_and_1_0_are_the_same_class(tmp_path):
    path = tmp_path / "d.csv"
    labels = ["0", "1", "0.0", "1.0", " 1 ", "+1", "-0"]
    path.write_text("text,label\n" + "".join(f"sentence {i},{labels[i % len(labels)]}\n" for i in range(28)))
    summary = prepare(path, None, tmp_path / "o", DataParams(eval_fraction=0.25))
    assert summary["labels"] == ["0", "1"]
    assert {e.label for e in load_split(tmp_path / "o" / "train.jsonl")} == {"0", "1"}

    # Across formats too: JSONL integers for training, CSV "1.0" strings for eval.
    train = jsonl(tmp_path / "t.jsonl", [{"text": f"t {i}", "label": i % 2} for i in range(10)])
    dev = tmp_path / "e.csv"
    dev.write_text("text,label\n" + "".join(f"e {i},{float(i % 2)}\n" for i in range(6)))
    summary = prepare(train, dev, tmp_path / "o2", DataParams())
    assert summary["labels"] == ["0", "1"] and summary["label_counts"]["eval"] == {"0": 3, "1": 3}


def test_boolean_labels_are_an_error(tmp_path):
    data = [{"text": f"sentence {i}", "label": bool(i % 2)} for i in range(10)]
    message = error(jsonl(tmp_path / "d.jsonl", data))
    assert "d.jsonl" in message and "boolean" in message and "row 1" in message


# --- contradictions and collisions -------------------------------------------

def test_contradicting_labels_for_the_same_text_are_an_error(tmp_path):
    data = rows(10) + [{"text": "  sentence number 3 ", "label": "neg"}]  # row 4 says pos
    message = error(jsonl(tmp_path / "d.jsonl", data))
    assert "d.jsonl" in message and "contradict" in message
    assert "row 4" in message and "row 11" in message and "'sentence number 3'" in message
    assert "'pos'" in message and "'neg'" in message


def test_contradiction_between_data_and_eval_data_is_an_error(tmp_path):
    train = jsonl(tmp_path / "t.jsonl", rows(10))
    dev = jsonl(tmp_path / "e.jsonl", rows(4, prefix="other") + [{"text": "sentence number 1", "label": "neg"}])
    message = error(train, dev)
    assert "t.jsonl" in message and "e.jsonl" in message and "contradict" in message and "'sentence number 1'" in message


def test_rows_sharing_an_id_with_different_texts_are_an_error(tmp_path):
    data = [{"id": f"r{i}", **r} for i, r in enumerate(rows(10))]
    data.append({"id": "r2", "text": "a completely different sentence", "label": "neg"})
    message = error(jsonl(tmp_path / "d.jsonl", data))
    assert "d.jsonl" in message and "'r2'" in message and "row 3" in message and "row 11" in message
    assert "'a completely different sentence'" in message and "id" in message


def test_true_duplicates_are_still_dropped_and_counted(tmp_path):
    data = [{"id": f"r{i}", **r} for i, r in enumerate(rows(10))]
    summary = prepare(jsonl(tmp_path / "d.jsonl", data + data[:3]), None, tmp_path / "o", DataParams(eval_fraction=0.5))
    assert summary["dropped_duplicates"] == 3 and summary["warnings"] == []


# --- eval_data --------------------------------------------------------------

def test_a_class_only_in_eval_data_is_an_error(tmp_path):
    train = jsonl(tmp_path / "t.jsonl", rows(10))
    dev = jsonl(tmp_path / "e.jsonl", rows(6, labels=("neg", "pos", "neutral"), prefix="other"))
    message = error(train, dev)
    assert "'neutral'" in message and "e.jsonl" in message and "t.jsonl" in message


def test_eval_data_identical_to_data_is_a_warning_in_data_json(tmp_path):
    src = jsonl(tmp_path / "d.jsonl", rows(10))
    copy = tmp_path / "copy.jsonl"
    shutil.copy(src, copy)
    as_csv = tmp_path / "d.csv"
    as_csv.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows(10)))
    for n, dev in enumerate((src, copy, as_csv)):
        out = tmp_path / f"o{n}"
        summary = build(DataArgs(src=src, eval_src=dev, dst=out, params=DataParams()))
        written = json.loads((out / "data.json").read_text())
        assert written["warnings"] == summary["warnings"] and len(written["warnings"]) == 1, dev
        warning = written["warnings"][0]
        assert "eval_data" in warning and dev.name in warning and "\n" not in warning
        assert {"labels", "train", "eval", "dropped_duplicates", "label_counts"} <= set(written)


def test_a_class_only_in_the_eval_split_is_an_error(tmp_path):
    # "lonely" hashes into the eval side at eval_fraction=0.2, so "neutral" has nothing to train on.
    path = jsonl(tmp_path / "d.jsonl", rows(20) + [{"text": "lonely", "label": "neutral"}])
    message = error(path, params=DataParams(eval_fraction=0.2))
    assert "d.jsonl" in message and "'neutral' (row 21)" in message and "eval split" in message
    # A trained head already knows its labels: that is not an error.
    summary = prepare(path, None, tmp_path / "o", DataParams(eval_fraction=0.2, model_labels=("neg", "pos", "neutral")))
    assert summary["label_counts"]["train"]["neutral"] == 0 and summary["label_counts"]["eval"]["neutral"] == 1


def test_empty_ids_are_an_error(tmp_path):
    data = [{"id": f"r{i}", **r} for i, r in enumerate(rows(10))]
    data[4]["id"] = None
    message = error(jsonl(tmp_path / "d.jsonl", data))
    assert "d.jsonl" in message and "row 5" in message and "empty 'id'" in message


def test_overlap_between_eval_data_and_data_is_a_warning(tmp_path):
    train = jsonl(tmp_path / "t.jsonl", rows(10))
    dev = jsonl(tmp_path / "e.jsonl", rows(4, prefix="other") + rows(2))
    summary = prepare(train, dev, tmp_path / "o", DataParams())
    assert len(summary["warnings"]) == 1 and "2 of 6 eval_data examples" in summary["warnings"][0]
