"""One QAT model built end to end and shipped for three runtimes (tests/fixtures/tiny_qat.toml):
its QDQ ONNX on ONNX Runtime, the same ONNX as a Jetson's TensorRT engine source, and its .pte on
ExecuTorch; the report's parity across them; the bundle running the QAT model."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import make_project, scons, stages_run
from tiny_model import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory, one_layer_model, tiny_data):
    project = make_project(tmp_path_factory.mktemp("qat") / "project")
    shutil.copy2(REPO / "tests" / "fixtures" / "tiny_qat.toml", project / "targets" / "tiny_qat.toml")
    proc = scons(project, "-j2", "target=tiny_qat", f"model={one_layer_model}", f"data={tiny_data}", timeout=1200)
    return project, proc


def test_one_qat_stage_feeds_every_format(built):
    _, proc = built
    ran = stages_run(proc)
    assert [s for s, _ in ran].count("qat") == 1
    # The QAT program ships as it is: no export or quantizer runs for the QAT artifacts (only for
    # the teacher's dynamic int8 and the report's MAC counts), and the .pte lowers it.
    quantized = [t for s, t in ran if s == "quantize"]
    assert len(quantized) == 1 and "dynamic" in quantized[0]
    assert [s for s, _ in ran].count("pte") == 1


def test_report_shows_parity_of_the_three_formats(built):
    project, _ = built
    report = json.loads((project / "build" / "tiny_qat" / "report.json").read_text())
    pairs = report["parity"]["qat"]["pairs"]
    assert {frozenset((p["a"], p["b"])) for p in pairs} == {
        frozenset(x) for x in (("qat_onnx", "qat_engine"), ("qat_onnx", "qat_pte"), ("qat_engine", "qat_pte"))}
    assert all(p["agreement"] >= 0.98 for p in pairs) and not report["gate_failures"]
    rows = {r["name"]: r for r in report["artifacts"]}
    assert rows["qat_pte"]["format"] == "pte" and rows["qat_pte"]["precision"] == "int8"
    assert rows["qat_onnx"]["compute_precision"] == {"linear": "int8", "attention": "fp32"}
    assert "QAT int8 (linear_io)" in report["models"]["qat"]["summary"]
    md = (project / "build" / "tiny_qat" / "report.md").read_text()
    assert "## Parity across formats" in md and "| qat_onnx | qat_pte |" in md
    assert "<h2>Parity across formats</h2>" in (project / "build" / "tiny_qat" / "report.html").read_text()


def test_engine_onnx_is_the_qat_program(built):
    project, _ = built
    models = project / "build" / "tiny_qat" / "bundle" / "models"
    assert (models / "qat_engine.onnx").read_bytes() == (models / "qat_onnx.onnx").read_bytes()
    manifest = json.loads((project / "build" / "tiny_qat" / "bundle" / "manifest.json").read_text())
    arts = {a["name"]: a for a in manifest["artifacts"]}
    assert {arts[n]["quantization"]["method"] for n in ("qat_onnx", "qat_engine", "qat_pte")} == {"qat"}
    assert arts["qat_onnx"]["lineage"] == "teacher > qat int8"


def test_bundle_runs_the_qat_model(built):
    project, _ = built
    bundle = project / "build" / "tiny_qat" / "bundle"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as on a user's machine
    out = subprocess.run([sys.executable, str(bundle / "run.py"), "great movie", "awful film"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 2 and all(r["label"] in ("negative", "positive") for r in lines)
