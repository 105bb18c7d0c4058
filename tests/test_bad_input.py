"""Every user mistake gets one clear line: what, where, how to fix. No traceback."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import scons
from tiny_model import make_checkpoint, write_csv


def one_error(proc, *fragments: str) -> str:
    """The single error line SCons or SConstruct printed, checked for fragments."""
    assert proc.returncode != 0, proc.stdout
    text = proc.stdout + proc.stderr
    assert "Traceback" not in text, text
    errors = [l for l in text.splitlines() if l.startswith(("scons: ***", "edgesmith: error:"))]
    assert len(errors) == 1, text
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture
def args(tiny_model, tiny_data):
    return ["target=tiny", f"model={tiny_model}", f"data={tiny_data}"]


def with_arg(args, key, value):
    return [a for a in args if not a.startswith(key + "=")] + [f"{key}={value}"]


def test_unknown_target_lists_known(project, args):
    one_error(scons(project, *with_arg(args, "target", "jetsn"), check=False), "target=jetsn", "known targets: android, arm64, cpu, cpu_embedding, gpu_server, jetson", "tiny")


def test_unknown_variable(project, args):
    one_error(scons(project, *args, "modle=x", check=False), "unknown variable modle=x", "known variables", "model")


def test_target_list(project):
    proc = scons(project, "target=list")
    assert "cpu" in proc.stdout and "x86-64" in proc.stdout and "tiny" in proc.stdout


def test_help_documents_variables(project):
    proc = scons(project, "-h")
    for var in ("target", "model", "data", "eval_data", "text_column", "label_column", "cache"):
        assert f"\n{var}:" in proc.stdout
    for budget in ("latency_b1_ms", "latency_bmax_ms", "size_mb", "peak_memory_mb", "accuracy_ratio", "agreement", "objective"):
        assert f"\n    budget.{budget}:" in proc.stdout


def test_unknown_budget_is_one_line(project, args):
    one_error(scons(project, *args, "budget.latency_ms=4", check=False), "budget.latency_ms=4: no such budget",
              "latency_b1_ms")


@pytest.mark.parametrize("edit,fragments", [
    (lambda t: t.replace('[device]', '[device\n'), ("targets/tiny.toml", "invalid TOML", "line")),
    (lambda t: t.replace('epochs = 2', 'epochs = "two"'), ("stages.finetune.epochs", "'two'", "expected an integer")),
    (lambda t: t.replace('epochs = 2', 'epoch = 2'), ("unknown key stages.finetune.epoch", "allowed keys", "epochs")),
    (lambda t: t.replace('precision = "fp32"', 'precision = "fp64"', 1), ("artifacts[0].precision", "'fp64'", "'fp16'")),
    (lambda t: t.replace('default_artifact = "int8_dynamic"', 'default_artifact = "int9"'), ("bundle.default_artifact", "'int9'", "'int8_dynamic'")),
    (lambda t: t.replace('batch = { min = 1, opt = 1, max = 8 }', 'batch = { min = 4, opt = 1, max = 8 }'), ("shapes.batch", "min <= opt <= max")),
    (lambda t: t.replace('quantize = { method = "dynamic" }', 'quantize = { method = "dinamic" }'), ("artifacts[1].quantize.method", "'dinamic'", "'dynamic'")),
    (lambda t: t.replace('format = "onnx"', 'format = "tensorrt"', 1), ("artifacts[0]", "tensorrt")),
    (lambda t: t.replace('"cpu/run.py"', '"cpu/runn.py"'), ("stubs.templates[0]", "cpu/runn.py", "known templates")),
])
def test_bad_profile(project, args, edit, fragments):
    profile = project / "targets" / "tiny.toml"
    profile.write_text(edit(profile.read_text()))
    one_error(scons(project, *args, check=False), *fragments)


def test_missing_model_dir(project, args, tmp_path):
    one_error(scons(project, *with_arg(args, "model", tmp_path / "nope"), check=False), "no such directory")


def test_model_dir_without_config(project, args, tmp_path):
    one_error(scons(project, *with_arg(args, "model", tmp_path), check=False), "no config.json")


def test_pickle_only_checkpoint_is_refused(project, args, tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "model.safetensors").rename(model / "pytorch_model.bin")
    one_error(scons(project, *with_arg(args, "model", model), check=False), "no model.safetensors", "pytorch_model.bin")


def test_unsupported_architecture(project, args, tiny_model, tmp_path):
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    cfg = json.loads((model / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (model / "config.json").write_text(json.dumps(cfg))
    one_error(scons(project, *with_arg(args, "model", model), check=False), "'gpt2' is not supported", "bert", "distilbert", "roberta")


def test_missing_dataset(project, args, tmp_path):
    one_error(scons(project, *with_arg(args, "data", tmp_path / "none.csv"), check=False), "data=", "no such file")


def test_dataset_wrong_format(project, args, tmp_path):
    (tmp_path / "d.xlsx").write_text("x")
    one_error(scons(project, *with_arg(args, "data", tmp_path / "d.xlsx"), check=False), "unknown format", ".jsonl")


def test_empty_dataset(project, args, tmp_path):
    (tmp_path / "empty.csv").write_text("text,label\n")
    one_error(scons(project, *with_arg(args, "data", tmp_path / "empty.csv"), check=False), "empty.csv", "empty")


def test_dataset_without_named_columns_lists_found(project, args, tmp_path, tiny_rows):
    path = write_csv(tmp_path / "cols.csv", [{"review_text": r["text"], "y": r["label"]} for r in tiny_rows], columns=("review_text", "y"))
    one_error(scons(project, *with_arg(args, "data", path), check=False), "cols.csv", "columns found: review_text, y", "text_column=")
    one_error(scons(project, *with_arg(args, "data", path), "text_column=review_text", check=False), "no label column 'label'", "label_column=")


def test_labels_that_do_not_match_the_model(project, args, tmp_path, tiny_rows):
    model = make_checkpoint(tmp_path / "headed", [r["text"] for r in tiny_rows], with_head=True, labels=("bad", "good"))
    one_error(scons(project, *with_arg(args, "model", model), check=False), "'negative'", "not labels of the model", "'bad', 'good'")


def test_failing_gate_shows_value_and_limit(project, args, tiny_built):
    profile = project / "targets" / "tiny.toml"
    profile.write_text(profile.read_text().replace('quantize = { method = "dynamic" }', 'quantize = { method = "dynamic" }\ngates = { max_size_mb = 0.0001 }'))
    # Every stage before the report is the session's target=tiny build's: taken from its cache.
    cache = tiny_built[3]
    line = one_error(scons(project, *args, f"cache={cache}", "--cache-readonly", check=False),
                     "quality gate failed", "int8_dynamic", "max_size_mb 0.0001")
    assert "report.md" in line
    assert "FAIL" in (project / "build" / "tiny" / "report.md").read_text()
    assert not (project / "dist" / "tiny-tiny-bert.tar.gz").exists()


def test_tampered_bundle_is_refused_by_the_stub(tmp_path):
    import subprocess
    import sys

    from tiny_bundle import write_bundle

    bundle = write_bundle(tmp_path / "b")
    model = next((bundle / "models").glob("*.onnx"))
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    proc = subprocess.run([sys.executable, "-m", "runtime", str(bundle), "hello"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "sha256 mismatch" in lines[0] and model.name in lines[0]
