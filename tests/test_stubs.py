"""Rendered stubs: golden files, strict undefined, and values escaped as literals."""
from __future__ import annotations

import json
import subprocess
import sys

import jinja2
import pytest

from golden import check
from recipes.package.stubs import render, render_to
from tiny_bundle import write_bundle

CONTEXT = {
    "target": "cpu",
    "description": "x86-64 CPU: ONNX Runtime \"int8\" & fp32",
    "labels": ["negative", "positive"],
    "default_artifact": "int8_dynamic",
    "artifacts": [
        {"name": "fp32", "format": "onnx", "precision": "fp32", "runtime": "onnxruntime", "path": "models/fp32.onnx",
         "requires_cpu_any": [], "requires_why": ""},
        {"name": "int8_dynamic", "format": "onnx", "precision": "int8", "runtime": "onnxruntime",
         "path": "models/int8_dynamic.onnx", "requires_cpu_any": [], "requires_why": ""},
        {"name": "ov_int8", "format": "openvino", "precision": "int8", "runtime": "openvino", "path": "models/ov_int8/model.xml",
         "requires_cpu_any": ["amx_int8", "avx512_vnni", "avx_vnni"],
         "requires_why": "OpenVINO's int8 kernels are slower than fp32 without them"},
    ],
    "fallback": ["int8_dynamic"],
    "max_length": 128,
    "runtime_version": "0.1.0",
    "task": "classification",
}
# The same bundle as a sentence-embedding model (task = "embedding"): no labels, vectors out.
EMBEDDING_CONTEXT = dict(CONTEXT, labels=[], task="embedding")


@pytest.mark.parametrize("template", ["cpu/run.py", "cpu/README.md", "arm64/README.md"])
def test_golden(template):
    check(template, render(template, CONTEXT))


@pytest.mark.parametrize("template", ["cpu/run.py", "cpu/README.md"])
def test_golden_embedding(template):
    check(f"embedding/{template}", render(template, EMBEDDING_CONTEXT))


def test_missing_value_is_an_error():
    with pytest.raises(jinja2.UndefinedError):
        render("cpu/run.py", {k: v for k, v in CONTEXT.items() if k != "default_artifact"})


def test_values_enter_code_as_literals():
    nasty = dict(CONTEXT, default_artifact='x"; import os #', artifacts=[{**CONTEXT["artifacts"][0], "name": 'x"; import os #'}])
    code = render("cpu/run.py", nasty)
    compile(code, "run.py", "exec")
    assert "DEFAULT_ARTIFACT = 'x\"; import os #'" in code


def test_generated_stub_runs_on_a_bundle(tmp_path):
    # run.py imports the runtime package that sits next to it in a bundle.
    bundle = write_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    ctx = dict(CONTEXT, default_artifact=manifest["default_artifact"],
               artifacts=[{**a, "runtime": "onnxruntime"} for a in manifest["artifacts"]])
    stub = bundle / "run.py"
    render_to("cpu/run.py", ctx, stub)
    (tmp_path / "texts.txt").write_text("a great movie\n\nthe worst film\n")
    out = subprocess.run([sys.executable, str(stub), "--file", str(tmp_path / "texts.txt"),
                          "--batch-size", "1", "it was fun"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(l) for l in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["it was fun", "a great movie", "the worst film"]
    empty = subprocess.run([sys.executable, str(stub)], capture_output=True, text=True)
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "no texts" in empty.stderr


def test_unreadable_input_is_one_line(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    manifest = json.loads((bundle / "manifest.json").read_text())
    ctx = dict(CONTEXT, default_artifact=manifest["default_artifact"], artifacts=manifest["artifacts"])
    render_to("cpu/run.py", ctx, bundle / "run.py")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café\n".encode("latin-1"))
    out = subprocess.run([sys.executable, str(bundle / "run.py"), "--file", str(latin1)], capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == "" and "Traceback" not in out.stderr
    assert out.stderr == f"run.py: --file {latin1}: line 1 is not UTF-8 text (byte 0xe9); save it as UTF-8\n"
