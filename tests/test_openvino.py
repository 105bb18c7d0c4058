"""The openvino format and the runtime's OpenVINO backend (issue 11, items 1-2).

The bundle tests read the session's `target=all` build of the shipped
profiles (cpu: OpenVINO fp32, bf16, NNCF int8 beside ONNX Runtime; arm64:
OpenVINO int8 weights); the profile and CPU-feature rules use
tests/fixtures/tiny_openvino.toml without building, and int4 weights run
through the stage directly.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recipes.errors import ProfileError
from recipes.formats.openvino_ir import sample_indices
from recipes.wiring.profile import load_profile
from runtime import cpu_features
from tiny_model import REPO

FIXTURE = (REPO / "tests" / "fixtures" / "tiny_openvino.toml").read_text()
XEON = frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"})
AVX2_ONLY = frozenset({"avx2", "fma", "avx"})
TEXTS = ["a great movie", "the worst film", "i loved it !", "not very good"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


# -- profile rules ---------------------------------------------------------------

@pytest.mark.parametrize("edit, message", [
    (lambda t: t.replace('"avx512_bf16", ', "").replace(', "amx_bf16"', ""),
     "artifacts[3].precision = 'bf16' needs a device with amx_bf16 or avx512_bf16"),
    (lambda t: t.replace('"avx2", ', '"avx3", '), "device.cpu_features[0] = 'avx3' is not a x86_64 feature edgesmith knows"),
    (lambda t: t.replace('mode = "int4_sym"', 'mode = "int8_asym"'),
     "artifacts[5].quantize.mode = 'int8_asym' does not make precision 'int4'"),
    (lambda t: t.replace("[gates]\nmin_agreement = 0.5\n", ""),
     "artifacts[4].quantize.accuracy_control = true holds the model to min_agreement, which is not set"),
    (lambda t: t.replace('fallback = ["ov_bf16", "int8_dynamic"]', 'fallback = ["ov_fp16"]'),
     "bundle.fallback[0] = 'ov_fp16' is not an artifact in the bundle"),
    (lambda t: t.replace('"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16"',
                         '"asimd", "asimddp"').replace('arch = "x86_64"', 'arch = "arm64"'),
     "artifacts[3].precision = 'bf16': OpenVINO runs bf16 on x86-64 CPUs with AMX or avx512_bf16 only"),
    (lambda t: t.replace("calibration_samples = 8,", "calibration_samples = 0,"),
     "artifacts[4].quantize.calibration_samples = 0"),
])
def test_openvino_profile_mistakes_are_one_line(tmp_path, edit, message):
    path = write(tmp_path, edit(FIXTURE))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert str(e.value).startswith(str(path)) and message in str(e.value) and "\n" not in str(e.value)


def test_calibration_and_validation_examples_never_overlap():
    calib, valid = sample_indices(100, 30, 50)
    assert len(calib) == 30 and len(valid) == 50 and not set(calib) & set(valid)
    calib, valid = sample_indices(10, 10, 5)  # a small split is shared: calibration gets half
    assert len(calib) == 5 and len(valid) == 5 and not set(calib) & set(valid)
    calib, valid = sample_indices(10, 10, 0)
    assert len(calib) == 10 and valid == []


# -- CPU features ------------------------------------------------------------------

def test_cpu_features_come_from_the_os_names():
    x86 = "processor\t: 0\nflags\t\t: fpu avx2 fma avx512_vnni amx_int8\nmodel name\t: Xeon\ncpu MHz\t\t: 2100.000\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\nCPU part\t: 0xd0c\n"
    assert cpu_features.parse_cpuinfo(x86) >= {"avx2", "avx512_vnni", "amx_int8"}
    assert cpu_features.parse_cpuinfo(arm) >= {"asimddp", "i8mm"}
    assert cpu_features.lacking(("amx_int8", "avx512_vnni"), cpu_features.parse_cpuinfo(x86)) is None
    assert "needs a CPU with amx_bf16 or avx512_bf16" in cpu_features.lacking(("amx_bf16", "avx512_bf16"), AVX2_ONLY)
    assert "cannot be read" in cpu_features.lacking(("amx_bf16",), None)
    assert cpu_features.lacking((), None) is None
    assert cpu_features.normalized_arch("aarch64") == "arm64" and cpu_features.normalized_arch("AMD64") == "x86_64"


# -- the int4 weight path, straight through the stage ------------------------------

def test_int4_weight_compression_builds_and_stays_close(tmp_path, exported_classifier):
    """The stage's own build(): int4 weights (NNCF), verified against the ONNX it came from."""
    from recipes.formats.openvino_ir import OpenVinoArgs, build
    from recipes.formats.openvino_params import WeightCompression

    model = exported_classifier(5, tmp_path) / "m"  # with tmp_path/fp32.onnx, its verified export
    names = ("input_ids", "attention_mask", "token_type_ids")
    out = tmp_path / "ov"
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    args = OpenVinoArgs(source="onnx", src=tmp_path / "fp32.onnx", model_xml=out / "model.xml", config=out / "ov_config.json",
                        record=out / "openvino.json", precision="int4", inference_precision="f32", requires_cpu_any=(),
                        requires_why="", params=WeightCompression(method="weight_compression", mode="int4_sym", group_size=16),
                        input_names=names, vocab_size=vocab)
    record = build(args)
    assert {p.name for p in out.iterdir()} >= {"model.xml", "model.bin", "ov_config.json", "openvino.json"}
    assert record["quantization"] == {"method": "weight_compression", "mode": "int4_sym", "group_size": 16, "ratio": 1.0}
    worst = max(c["artifact_max_abs_diff_f32"] for c in record["checks"])
    assert record["checks"][0]["fp32_ir_max_abs_diff"] <= 1e-4 and 0 < worst < 0.5
    assert json.loads((out / "ov_config.json").read_text())["inference_precision"] == "f32"


# -- the shipped profiles, built once per session (shared with test_targets_build) ----

def _bundle(project: Path, target: str = "cpu"):
    sys.path.insert(0, str(project))
    from runtime import load_bundle

    return load_bundle(project / "build" / target / "bundle")


def _manifest(project: Path, target: str) -> dict:
    return json.loads((project / "build" / target / "bundle" / "manifest.json").read_text())


@pytest.mark.slow
def test_manifest_records_runtime_version_and_cpu_needs(all_targets_built):
    project = all_targets_built[0]
    manifest = _manifest(project, "cpu")
    arts = {a["name"]: a for a in manifest["artifacts"]}
    assert arts["ov_int8"]["runtime"] == "openvino" and arts["ov_int8"]["runtime_version"].startswith("2026.")
    assert arts["ov_int8"]["requires_cpu_any"] == ["amx_int8", "avx512_vnni", "avx_vnni"]
    assert arts["ov_bf16"]["requires_cpu_any"] == ["amx_bf16", "avx512_bf16"] and arts["ov_bf16"]["inference_precision"] == "bf16"
    assert arts["ov_fp32"]["requires_cpu_any"] == [] and arts["ov_fp32"]["inference_precision"] == "f32"
    assert arts["int8_dynamic"]["requires_cpu_any"] == []
    assert manifest["default_artifact"] == "ov_int8" and manifest["fallback"] == ["int8_dynamic", "ov_fp32"]
    assert manifest["device"]["cpu_features"] and "amx_int8" in manifest["device"]["cpu_features"]
    assert manifest["measured_on"]["arch"] in ("x86_64", "arm64") and manifest["measured_on"]["cpu"]
    paths = {f["path"] for f in manifest["files"]}
    assert {"models/ov_int8/model.xml", "models/ov_int8/model.bin", "models/ov_int8/ov_config.json"} <= paths
    record = json.loads((project / "build" / "cpu" / "bundle" / "models" / "ov_int8" / "openvino.json").read_text())
    q = record["quantization"]
    assert q["method"] == "nncf_ptq" and q["accuracy_control"] and q["validation_agreement"] >= 1 - q["max_drop"]
    assert record["checks"][0]["fp32_ir_max_abs_diff"] <= 1e-4
    arm = {a["name"]: a for a in _manifest(project, "arm64")["artifacts"]}
    assert arm["ov_int8_weights"]["requires_cpu_any"] == ["asimddp"] and arm["int8_dynamic"]["requires_cpu_any"] == []


@pytest.mark.slow
def test_bf16_is_reported_unmeasured_on_a_host_without_bf16(all_targets_built):
    report = json.loads((all_targets_built[0] / "build" / "cpu" / "report.json").read_text())
    row = next(r for r in report["artifacts"] if r["name"] == "ov_bf16")
    host = cpu_features.host_features() or frozenset()
    if host & {"amx_bf16", "avx512_bf16"}:
        assert row.get("accuracy") is not None
    else:
        assert row["accuracy"] is None and "amx_bf16 or avx512_bf16" in row["note"]
        assert row["gate_status"].startswith("unchecked (") and "min_agreement" in row["gate_status"]
        assert row["latency_ms"] == {}


@pytest.mark.slow
def test_openvino_fp32_gives_the_onnx_logits_and_compressed_weights_stay_close(all_targets_built):
    project = all_targets_built[0]
    with _bundle(project) as bundle:
        ov = bundle.classifier("ov_fp32", threads=1).logits(TEXTS)
        ort = bundle.classifier("fp32", threads=1).logits(TEXTS)
    assert ov.dtype == np.float32 and ov.shape == ort.shape
    assert np.abs(ov - ort).max() <= 1e-4
    # arm64's int8 weights need the dot product to run fast, but run anywhere: open the IR directly.
    from runtime.openvino_classifier import OpenVinoClassifier

    arm = project / "build" / "arm64" / "bundle"
    weights = OpenVinoClassifier(arm / "models" / "ov_int8_weights" / "model.xml", arm / "tokenizer" / "tokenizer.json",
                                 bundle.labels, max_length=32, threads=1).logits(TEXTS)
    fp32 = OpenVinoClassifier(arm / "models" / "ov_fp32" / "model.xml", arm / "tokenizer" / "tokenizer.json",
                              bundle.labels, max_length=32, threads=1).logits(TEXTS)
    assert 0 < np.abs(weights - fp32).max() < 0.1


@pytest.mark.slow
def test_default_falls_back_with_one_note_and_explicit_choice_is_refused(all_targets_built, monkeypatch):
    notes = []
    with _bundle(all_targets_built[0]) as bundle:
        import runtime.bundle as rb
        from runtime import BundleError

        monkeypatch.setattr(rb, "host_features", lambda: AVX2_ONLY)
        assert bundle.runnable_artifact(None, notes.append)["name"] == "int8_dynamic"
        assert len(notes) == 1 and "'ov_int8' needs a CPU with amx_int8 or avx512_vnni or avx_vnni" in notes[0]
        assert "running 'int8_dynamic' instead" in notes[0]
        with pytest.raises(BundleError, match=r"artifact 'ov_int8' needs a CPU with .*; run --artifact int8_dynamic instead"):
            bundle.runnable_artifact("ov_int8", notes.append)
        with pytest.raises(BundleError, match=r"artifact 'ov_bf16' needs a CPU with amx_bf16 or avx512_bf16"):
            bundle.runnable_artifact("ov_bf16", notes.append)
        monkeypatch.setattr(rb, "host_features", lambda: XEON)
        assert bundle.runnable_artifact(None, notes.append)["name"] == "ov_int8" and len(notes) == 1


@pytest.mark.slow
def test_openvino_never_silently_runs_bf16_as_fp32(all_targets_built, monkeypatch):
    """Claim bf16 units this host does not have: OpenVINO then compiles fp32, and the runtime refuses."""
    host = cpu_features.host_features() or frozenset()
    if host & {"amx_bf16", "avx512_bf16"}:
        pytest.skip("this host runs bf16: OpenVINO compiles it as asked")
    with _bundle(all_targets_built[0]) as bundle:
        import runtime.bundle as rb
        from runtime import BundleError

        monkeypatch.setattr(rb, "host_features", lambda: XEON)
        with pytest.raises(BundleError, match="OpenVINO compiled the model for f32, not the bf16 it was built and measured for"):
            bundle.classifier("ov_bf16")


@pytest.mark.slow
def test_run_py_uses_the_fallback_and_prints_the_note_once(all_targets_built):
    bundle = all_targets_built[0] / "build" / "cpu" / "bundle"
    proc = subprocess.run([sys.executable, str(bundle / "run.py"), *TEXTS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == len(TEXTS)
    host = cpu_features.host_features() or frozenset()
    if host & {"amx_int8", "avx512_vnni", "avx_vnni"}:
        assert "note:" not in proc.stderr
    else:
        assert proc.stderr.count("note: artifact 'ov_int8'") == 1
    proc = subprocess.run([sys.executable, "-m", "runtime", str(bundle), "--artifact", "ov_fp32", "good film"],
                          cwd=bundle, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and json.loads(proc.stdout)["label"], proc.stderr
