"""PyTorch dynamic int8 (TorchScript), .ptl and .pte on a tiny random BERT.

Each artifact is exported once per module and checked through its runner
against the PyTorch model on padded batches whose shapes differ from the
trace/export example.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from tiny_model import REPO, make_checkpoint

from recipes.errors import ConfigError, StageError
from recipes.formats import pte, ptl, quantize_torch
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.formats.model_io import verification_inputs
from recipes.formats.ptl import MobileParams, xnnpack_available
from recipes.formats.pte import Int8DynActInt4Weight
from recipes.measure.mobile_runners import PteRunner, PtlRunner, TorchScriptRunner
from recipes.measure.runners import TorchRunner

NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Neither is the (2, 16) trace example; the tiny model has 64 positions.
SHAPES = ((3, 9), (2, 33))
MAX_SEQ = 64
# 2 layers x (q, k, v, attention out, ffn in, ffn out) + pooler + classifier.
LINEARS = 14
# The .pte tests use the first layer only: lowering costs seconds per layer.
PTE_LINEARS = 8
ATOL = 1e-4


# The stages' typed entry points, called with the profile's plain tables as these tests read best.
def torch_int8_stage(model_dir, dst, report, params, names, max_sequence):
    return quantize_torch.build(quantize_torch.TorchInt8Args(Path(model_dir), Path(dst), Path(report),
                                                             _quantize(DynamicInt8, params), tuple(names), max_sequence))


def ptl_stage(model_dir, dst, report, params, mobile, names, max_sequence):
    return ptl.build(ptl.PtlArgs(Path(model_dir), Path(dst), Path(report), _quantize(DynamicInt8, params),
                                 MobileParams(**mobile), tuple(names), max_sequence, ATOL))


def pte_stage(model_dir, dst, report, params, names, max_batch, max_sequence):
    return pte.build(pte.PteArgs(Path(model_dir), Path(dst), Path(report), _quantize(Int8DynActInt4Weight, params),
                                 tuple(names), max_batch, max_sequence, ATOL))


def _quantize(cls, params):
    return None if params is None else cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in params.items()})


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_rows) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("mobile-model") / "tiny-cls", [r["text"] for r in tiny_rows], with_head=True)


@pytest.fixture(scope="module")
def one_layer_dir(model_dir, tmp_path_factory) -> Path:
    from recipes.models.hf import load_classifier

    model = load_classifier(model_dir)
    model.bert.encoder.layer = model.bert.encoder.layer[:1]
    model.config.num_hidden_layers = 1
    dst = tmp_path_factory.mktemp("mobile-model") / "tiny-cls-1layer"
    model.save_pretrained(dst, safe_serialization=True)
    return dst


@pytest.fixture(scope="module")
def reference_1(one_layer_dir):
    return TorchRunner(one_layer_dir, NAMES)


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("mobile-out")


@pytest.fixture(scope="module")
def reference(model_dir):
    return TorchRunner(model_dir, NAMES)


@pytest.fixture(scope="module")
def feeds(reference):
    vocab = reference.model.config.vocab_size
    return [verification_inputs(vocab, NAMES, b, s, seed=7 + i) for i, (b, s) in enumerate(SHAPES)]


def _report(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def torch_int8(model_dir, out):
    torch_int8_stage(str(model_dir), str(out / "int8.pt"), str(out / "int8.pt.json"), {"method": "dynamic"}, list(NAMES), MAX_SEQ)
    return out / "int8.pt", _report(out / "int8.pt.json")


@pytest.fixture(scope="module")
def ptl_fp32(model_dir, out):
    ptl_stage(str(model_dir), str(out / "fp32.ptl"), str(out / "fp32.ptl.json"), None, {"optimize_for_mobile": "auto"},
              list(NAMES), MAX_SEQ)
    return out / "fp32.ptl", _report(out / "fp32.ptl.json")


@pytest.fixture(scope="module")
def ptl_int8(model_dir, out):
    ptl_stage(str(model_dir), str(out / "int8.ptl"), str(out / "int8.ptl.json"), {"method": "dynamic", "per_channel": True},
              {"optimize_for_mobile": "auto"}, list(NAMES), MAX_SEQ)
    return out / "int8.ptl", _report(out / "int8.ptl.json")


@pytest.fixture(scope="module")
def pte_fp32(one_layer_dir, out):
    pte_stage(str(one_layer_dir), str(out / "fp32.pte"), str(out / "fp32.pte.json"), None, list(NAMES), 4, MAX_SEQ)
    return out / "fp32.pte", _report(out / "fp32.pte.json")


@pytest.fixture(scope="module")
def pte_8da4w(one_layer_dir, out):
    # Fixed batch 1 (a phone's usual shape); the runner slices larger batches.
    pte_stage(str(one_layer_dir), str(out / "8da4w.pte"), str(out / "8da4w.pte.json"), {"method": "8da4w", "group_size": 32},
              list(NAMES), 1, MAX_SEQ)
    return out / "8da4w.pte", _report(out / "8da4w.pte.json")


def _max_diff(runner, reference, feeds) -> float:
    diffs = []
    for f in feeds:
        got, want = runner(f), reference(f)
        assert got.dtype == np.float32 and got.shape == want.shape
        diffs.append(float(np.abs(got - want).max()))
    return max(diffs)


# -- host dynamic int8 (TorchScript) ----------------------------------------

def test_torchscript_int8_round_trip(torch_int8, reference, feeds):
    path, report = torch_int8
    runner = TorchScriptRunner(path, NAMES, threads=1)
    assert "quantized::linear_dynamic" in str(runner.module.inlined_graph)
    assert _max_diff(runner, reference, feeds) < 0.05
    assert report["precision"] == "int8" and report["quantize"]["modules"] == ["Embedding", "Linear"]
    assert report["quantize"]["not_applicable_op_types"] == ["Attention"]  # the default op_types name it for ONNX
    assert len(report["checks"]) == 4 and report["max_abs_diff"] < 0.05


# -- .ptl ---------------------------------------------------------------------

def test_ptl_fp32_round_trip(ptl_fp32, reference, feeds):
    path, report = ptl_fp32
    assert _max_diff(PtlRunner(path, NAMES), reference, feeds) < 1e-4
    assert report["precision"] == "fp32" and report["max_abs_diff"] < 1e-4


def test_ptl_int8_round_trip(ptl_int8, reference, feeds):
    path, report = ptl_int8
    runner = PtlRunner(path, NAMES)
    assert runner.engine == "qnnpack"  # Android's kernels, not the host's
    assert _max_diff(runner, reference, feeds) < 0.05
    assert _max_diff(PtlRunner(path, NAMES, engine=None), reference, feeds) < 0.05
    assert report["precision"] == "int8" and report["quantize"]["per_channel"] is True
    assert report["verified_with_engine"] == "qnnpack"


@pytest.mark.skipif(xnnpack_available(), reason="this torch has XNNPACK: optimize_for_mobile runs")
def test_ptl_auto_records_not_optimized(ptl_fp32):
    _, report = ptl_fp32
    assert report["optimized"] is False and report["optimize_for_mobile"] == "auto"
    assert "without XNNPACK" in report["reason"]


@pytest.mark.skipif(xnnpack_available(), reason="this torch has XNNPACK: optimize_for_mobile runs")
def test_ptl_required_fails_in_one_line(model_dir, tmp_path):
    import torch

    with pytest.raises(StageError) as e:
        ptl_stage(str(model_dir), str(tmp_path / "m.ptl"), str(tmp_path / "m.json"), None, {"optimize_for_mobile": "required"},
                  list(NAMES), MAX_SEQ)
    assert str(e.value) == (f"optimize_for_mobile needs a torch build with XNNPACK; this torch {torch.__version__} has none; "
                            "set mobile.optimize_for_mobile = 'auto' to ship an unoptimized .ptl")
    assert not (tmp_path / "m.ptl").exists()


# -- .pte ---------------------------------------------------------------------

def test_pte_fp32_round_trip_dynamic_shapes(pte_fp32, reference_1, feeds):
    path, report = pte_fp32
    assert _max_diff(PteRunner(path, NAMES), reference_1, feeds) < 1e-4
    assert report["max_abs_diff"] < 1e-4
    assert report["batch"] == {"min": 1, "max": 4} and report["sequence"] == {"min": 2, "max": MAX_SEQ}
    d = report["delegation"]
    assert d["delegated_ops"]["aten.linear"] == PTE_LINEARS
    assert not any(op.endswith(("linear", "mm", "bmm")) for op in d["non_delegated_ops"])
    assert report["planned_memory_bytes"] > 0


def test_pte_runner_splits_batches(pte_fp32, feeds):
    path, _ = pte_fp32
    whole = PteRunner(path, NAMES)(feeds[0])
    split = PteRunner(path, NAMES, max_batch=2)(feeds[0])
    assert PteRunner(path, NAMES).max_batch == 4
    assert len(feeds[0]["input_ids"]) == 3
    np.testing.assert_allclose(split, whole, atol=1e-6)


def test_pte_8da4w_round_trip(pte_8da4w, reference_1, feeds):
    path, report = pte_8da4w
    runner = PteRunner(path, NAMES)
    assert runner.max_shape == (1, MAX_SEQ) and report["batch"] == {"min": 1, "max": 1}
    assert _max_diff(runner, reference_1, feeds) < 0.05
    q = report["quantize"]
    assert q["group_size"] == 32 and q["quantized_linears"] == PTE_LINEARS and q["skipped_linears"] == []
    d = report["delegation"]
    assert d["delegated_ops"]["torchao.choose_qparams_affine"] == PTE_LINEARS
    assert not any("quantize" in op or "qparams" in op or op.endswith("linear") for op in d["non_delegated_ops"])


@pytest.mark.parametrize("group_size, message", [
    (48, "quantize.group_size = 48: XNNPACK's 4-bit grouped linear needs a positive multiple of 32 (32, 64, 128, ...)"),
    (128, "quantize.group_size = 128 divides none of the model's linear input widths [32, 64]; use a multiple of 32 that divides them"),
])
def test_pte_bad_group_size_is_one_line(model_dir, tmp_path, group_size, message):
    with pytest.raises(ConfigError) as e:
        pte_stage(str(model_dir), str(tmp_path / "m.pte"), str(tmp_path / "m.json"), {"method": "8da4w", "group_size": group_size},
                  list(NAMES), 4, MAX_SEQ)
    assert str(e.value) == message
    assert not (tmp_path / "m.pte").exists()


def test_8da4w_skips_layers_the_group_does_not_divide(model_dir):
    """group 64 on a 32-wide model: only the FFN output projections (64 in) are quantized."""
    import torch

    from recipes.formats.pte import quantize_8da4w
    from recipes.wiring.profile import Int8DynActInt4Weight
    from recipes.formats.quantize_torch import example_args, load_logits_module

    module, vocab = load_logits_module(model_dir, NAMES)
    info = quantize_8da4w(module, Int8DynActInt4Weight("8da4w", group_size=64))
    assert info["quantized_linears"] == 2 and len(info["skipped_linears"]) == LINEARS - 2
    assert "model.bert.encoder.layer.0.output.dense" not in info["skipped_linears"]
    with torch.inference_mode():
        assert module(*example_args(vocab, NAMES, 2, 9, seed=1)).shape == (2, 2)


# -- determinism --------------------------------------------------------------

_EXPORT_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    from recipes.formats import ptl, quantize_torch
    from recipes.formats.dynamic_int8 import DynamicInt8
    model, out = Path(sys.argv[1]), Path(sys.argv[2])
    names = ("input_ids", "attention_mask", "token_type_ids")
    quantize_torch.build(quantize_torch.TorchInt8Args(model, out / "int8.pt", out / "int8.pt.json", DynamicInt8("dynamic"), names, 64))
    ptl.build(ptl.PtlArgs(model, out / "int8.ptl", out / "int8.ptl.json", DynamicInt8("dynamic"), ptl.MobileParams("auto"),
                          names, 64, 1e-4))
""")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_torchscript_exports_are_byte_identical_per_process_and_checkout(model_dir, tmp_path):
    """TorchScript names classes with a process-wide counter (___torch_mangle_N),
    so bytes repeat for the same work in a fresh process, which is how
    stage_main runs every stage. The second export runs from a copy of the
    recipes in another directory (a teammate's checkout, a Ray node's working
    directory): the archives record no source paths, so the bytes are the same."""
    other = tmp_path / "checkout"
    shutil.copytree(REPO / "recipes", other / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "runtime", other / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
    procs = []
    for run, cwd in (("a", REPO), ("b", other)):  # side by side: most of each is importing torch
        (tmp_path / run).mkdir()
        procs.append(subprocess.Popen([sys.executable, "-c", _EXPORT_SCRIPT, str(model_dir), str(tmp_path / run)], cwd=cwd,
                                      env=dict(os.environ, PYTHONPATH=str(cwd)),
                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    for name in ("int8.pt", "int8.ptl", "int8.pt.json", "int8.ptl.json"):
        assert _sha(tmp_path / "a" / name) == _sha(tmp_path / "b" / name), name


@pytest.mark.slow
def test_pte_export_is_byte_identical(one_layer_dir, pte_8da4w, tmp_path):
    path, _ = pte_8da4w
    pte_stage(str(one_layer_dir), str(tmp_path / "again.pte"), str(tmp_path / "again.json"), {"method": "8da4w", "group_size": 32},
              list(NAMES), 1, MAX_SEQ)
    assert _sha(tmp_path / "again.pte") == _sha(path)
    assert (tmp_path / "again.json").read_bytes() == (path.parent / "8da4w.pte.json").read_bytes()


def test_torch_int8_bad_op_types_is_one_line(model_dir, tmp_path):
    with pytest.raises(ConfigError) as e:
        torch_int8_stage(str(model_dir), str(tmp_path / "m.pt"), str(tmp_path / "m.json"), {"method": "dynamic", "op_types": ["MatMul", "Conv"]},
                         list(NAMES), MAX_SEQ)
    assert str(e.value) == ("quantize.op_types = ['MatMul', 'Conv']: PyTorch dynamic int8 quantizes 'MatMul' (Linear) and "
                            "'Gather' (Embedding); remove 'Conv'")
    assert not (tmp_path / "m.pt").exists()
