"""ort_optimize: ONNX Runtime's graph optimizations applied offline, verified and reproducible."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from recipes.errors import ProfileError
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.formats.model_io import verification_inputs
from recipes.formats.ort_optimize import OrtOptimize, OrtOptimizeArgs, build
from recipes.formats.quantize_onnx import quantize_dynamic
from recipes.measure.runners import OnnxRunner
from recipes.wiring.profile import load_profile
from tiny_model import REPO

NAMES = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 400


@pytest.fixture(scope="module")
def int8(tmp_path_factory, exported_classifier) -> Path:
    root = exported_classifier(5, tmp_path_factory.mktemp("ort_optimize"))
    quantize_dynamic(root / "fp32.onnx", root / "int8.onnx", DynamicInt8("dynamic"))
    return root / "int8.onnx"


def optimize(src: Path, dst_dir: Path, level: str) -> dict:
    return build(OrtOptimizeArgs(src, dst_dir / "model.onnx", dst_dir / "ort_optimize.json", OrtOptimize(level), NAMES,
                                 VOCAB, 64, 1e-4))


def ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def test_extended_level_saves_fused_graph_with_the_same_logits(int8, tmp_path):
    report = optimize(int8, tmp_path, "extended")
    out = tmp_path / "model.onnx"
    assert sum(ops(out).values()) < sum(ops(int8).values())
    assert report["ops_after"] != report["ops_before"] and report["level"] == "extended"
    assert (tmp_path / "ort_optimize.json").is_file()
    feeds = verification_inputs(VOCAB, NAMES, 3, 20, seed=9)
    np.testing.assert_allclose(OnnxRunner(out, threads=1)(feeds), OnnxRunner(int8, threads=1)(feeds), atol=1e-4)


@pytest.mark.parametrize("level", ["basic", "extended"])
def test_output_is_byte_reproducible(int8, tmp_path, level):
    optimize(int8, tmp_path / "a", level)
    optimize(int8, tmp_path / "b", level)
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()


def test_only_onnx_artifacts_take_it(tmp_path):
    text = (REPO / "tests" / "fixtures" / "profiles" / "android.toml").read_text()
    text = text.replace('quantize = { method = "dynamic" }', 'quantize = { method = "dynamic" }\nort_optimize = { level = "basic" }', 1)
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match=r"artifacts\[0\]\.ort_optimize: .* applies to onnx artifacts, not ptl; remove it"):
        load_profile(tmp_path / "p.toml")


def test_unknown_level_is_one_line(tmp_path):
    text = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()
    text = text.replace('quantize = { method = "dynamic" }', 'quantize = { method = "dynamic" }\nort_optimize = { level = "all" }', 1)
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match=r"artifacts\[1\]\.ort_optimize\.level = 'all' is not allowed; use one of 'basic', 'extended'"):
        load_profile(tmp_path / "p.toml")
