"""runtime/tensorrt_runner.py and run_engine.py's TensorRT backend, run on stand-ins for TensorRT and pycuda.

tests/fake_tensorrt holds the stand-ins: the "engine" is the bundle's ONNX run
by onnxruntime, device memory is host memory. That checks the runner's own
logic (batching, padding to the profile, buffers, wiring from run_engine.py)
on any machine; that the TensorRT/pycuda names exist is tests/test_tensorrt_api.py's
job, and a real engine is test_tensorrt_stub.py's test_real_engine_build_and_run.
"""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes.package.stubs import render_to
from runtime import load_bundle, tensorrt_runner
from runtime.errors import BundleError
from tiny_bundle import refresh_files, write_bundle

FAKES = Path(__file__).resolve().parent / "fake_tensorrt"
FAKE_MODULES = ("tensorrt", "pycuda", "pycuda.autoinit", "pycuda.driver")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]
LABELS = ["negative", "positive"]
TEXTS = ["a great movie", "the worst film", "i loved it", "awful", "it was fun"]
# Three rows at most per run, at least two, and at least twelve tokens: the tiny texts need padding.
SHAPES = {"batch": {"min": 2, "opt": 2, "max": 3}, "sequence": {"min": 12, "opt": 16, "max": 16}}


@pytest.fixture
def fake_trt(monkeypatch):
    monkeypatch.syspath_prepend(str(FAKES))
    for name in FAKE_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield importlib.import_module("tensorrt")
    for name in FAKE_MODULES:
        sys.modules.pop(name, None)


def classify(bundle: Path, engine: Path):
    return tensorrt_runner.classify(engine, "engine_fp32", TEXTS, tokenizer_path=bundle / "tokenizer" / "tokenizer.json",
                                    max_length=16, labels=LABELS, input_names=INPUTS, shapes=SHAPES, batch_size=8)


def expected(bundle: Path):
    with load_bundle(bundle) as b:
        return b.classifier("fp32").predict(TEXTS)


def test_classify_batches_pads_and_matches_the_onnx_model(fake_trt, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    engine = tmp_path / "fp32.engine"
    engine.write_bytes((bundle / "models" / "fp32.onnx").read_bytes())
    tensorrt_runner.start()
    got = classify(bundle, engine)
    want = expected(bundle)
    assert [g["label"] for g in got] == [w["label"] for w in want]
    for g, w in zip(got, want):
        assert g["scores"] == pytest.approx(w["scores"], abs=1e-5)
    # Five texts in runs of at most 3 rows, each padded to the profile's minimum rows and length.
    assert [run["input_ids"] for run in fake_trt.RUNS] == [(3, 12), (2, 12)]


def test_an_engine_from_elsewhere_is_one_line(fake_trt, tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"built for another GPU")
    with pytest.raises(BundleError) as err:
        classify(bundle, engine)
    assert str(err.value) == (f"engine {engine} does not load here: engines only run with the TensorRT version and GPU "
                              "that built them; rebuild it with: python run_engine.py --rebuild --artifact engine_fp32")


def test_run_engine_runs_a_present_engine(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    ctx = dict(target="jetson", description="tiny", labels=LABELS, default_artifact="engine_fp16",
               input_names=INPUTS, shapes=SHAPES, engine={"workspace_mb": 64},
               artifacts=[{k: a[k] for k in ("name", "format", "precision", "runtime", "path")}
                          for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]],
               engines=[{"name": "engine_fp16", "onnx": "models/fp32.onnx", "engine": "engines/engine_fp16.engine",
                         "shipped": None, "precision": "fp16", "strongly_typed": False}])
    render_to("tensorrt/run_engine.py", ctx, bundle / "run_engine.py")
    refresh_files(bundle)
    (bundle / "engines").mkdir()
    (bundle / "engines" / "engine_fp16.engine").write_bytes((bundle / "models" / "fp32.onnx").read_bytes())
    env = dict(os.environ, PYTHONPATH=str(FAKES))
    out = subprocess.run([sys.executable, str(bundle / "run_engine.py"), *TEXTS], capture_output=True, text=True,
                         env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # the engine was there: nothing built, nothing to note
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["text"] for r in rows] == TEXTS
    assert [r["label"] for r in rows] == [w["label"] for w in expected(bundle)]
