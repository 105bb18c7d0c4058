"""TensorRT bundles: the rendered stubs, build_engine.sh's flag logic, and the engine stage.

TensorRT itself is not installed here. build_engine.sh runs against a fake
`trtexec` that prints the real banner format and records its arguments (this
tests OUR script's choices per TensorRT version and precision), run_engine.py
runs end to end with --backend onnxruntime, and the engine stage's host/auto/
device decisions run against this machine and against stated host facts.
Tests that need real TensorRT and a GPU carry @pytest.mark.tensorrt.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jinja2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from golden import check
from recipes.formats import tensorrt_engine as te
from recipes.errors import ProfileError, StageError
from recipes.package.stubs import render, render_to
from runtime import load_bundle
from tiny_bundle import make_onnx_classifier, refresh_files, write_bundle

BASH = shutil.which("bash")

CONTEXT = {
    "target": "jetson",
    "description": "Jetson Orin: TensorRT engine built on the device from precision-explicit ONNX",
    "labels": ["negative", "positive"],
    "default_artifact": "engine_int8",
    "artifacts": [
        {"name": "fp16", "format": "onnx", "precision": "fp16", "runtime": "onnxruntime",
         "path": "models/fp16.onnx", "quantization": "fp16"},
        {"name": "engine_int8", "format": "tensorrt", "precision": "int8", "runtime": "tensorrt",
         "path": "models/engine_int8.onnx", "quantization": "static"},
    ],
    "max_length": 128,
    "runtime_version": "0.1.0",
    "shapes": {"batch": {"min": 1, "opt": 4, "max": 16}, "sequence": {"min": 8, "opt": 128, "max": 256}},
    "input_names": ["input_ids", "attention_mask"],
    "engine": {"build": "device", "workspace_mb": 2048, "timing_cache": True},
    "engines": [
        {"name": "engine_int8", "onnx": "models/engine_int8.onnx", "engine": "engines/engine_int8.engine", "shipped": None,
         "precision": "int8", "strongly_typed": True},
        {"name": "engine_fp16", "onnx": "models/fp32.onnx", "engine": "engines/engine_fp16.engine", "shipped": None,
         "precision": "fp16", "strongly_typed": False},
    ],
}
TEMPLATES = ["run_engine.py", "build_engine.sh", "README.md"]


# -- rendering -------------------------------------------------------------------

@pytest.mark.parametrize("name", TEMPLATES)
def test_golden(name):
    check(f"tensorrt_{name}", render(f"tensorrt/{name}", CONTEXT))


@pytest.mark.parametrize("name, key", [(name, key) for name in TEMPLATES
                                       for key in ["engines", "shapes", "input_names", "engine", "labels", "target"]
                                       if (name, key) != ("build_engine.sh", "labels")])
def test_missing_value_is_an_error(name, key):
    with pytest.raises(jinja2.UndefinedError):
        render(f"tensorrt/{name}", {k: v for k, v in CONTEXT.items() if k != key})


NASTY = "x'; touch /tmp/pwned #\"$(id)`"


def nasty_context():
    engines = [dict(CONTEXT["engines"][0], name=NASTY, onnx=f"models/{NASTY}.onnx", engine=f"engines/{NASTY}.engine")]
    return dict(CONTEXT, target=NASTY, default_artifact=NASTY, engines=engines, input_names=["input_ids", NASTY])


def test_values_enter_python_as_literals():
    code = render("tensorrt/run_engine.py", nasty_context())
    compile(code, "run_engine.py", "exec")
    assert f"TARGET = {NASTY!r}" in code


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_values_enter_shell_quoted(tmp_path):
    script = tmp_path / "build_engine.sh"
    render_to("tensorrt/build_engine.sh", nasty_context(), script)
    assert subprocess.run([BASH, "-n", str(script)]).returncode == 0
    # Source only the assignments and print them back: every value survives unchanged.
    head = script.read_text().split("\ndie() {")[0]
    probe = tmp_path / "probe.sh"
    probe.write_text(head + '\nprintf "%s\\n" "$TARGET" "${ENGINE_NAMES[0]}" "${ENGINE_FILES[0]}" "$MIN_SHAPES"\n')
    out = subprocess.run([BASH, str(probe)], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[:3] == [NASTY, NASTY, f"engines/{NASTY}.engine"]
    assert out[3] == f"input_ids:1x8,{NASTY}:1x8"
    assert not Path("/tmp/pwned").exists()


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_build_script_is_valid_bash(tmp_path):
    script = tmp_path / "build_engine.sh"
    render_to("tensorrt/build_engine.sh", CONTEXT, script)
    proc = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# -- build_engine.sh against a fake trtexec -----------------------------------------

FAKE_TRTEXEC = """#!/usr/bin/env bash
# Prints trtexec's banner for --help; for a build, records its arguments and writes the engine file.
if [[ "$1" == "--help" ]]; then
    echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{code}] [b18] # trtexec --help"
    echo "=== Model Options ==="
    exit 0
fi
printf '%s\\n' "$@" > "$FAKE_LOG.$(date +%s%N)"
for arg in "$@"; do
    case "$arg" in --saveEngine=*) printf 'engine' > "${{arg#--saveEngine=}}" ;; esac
done
exit {status}
"""


def make_bundle_dir(tmp_path: Path, context: dict) -> Path:
    root = tmp_path / "bundle"
    for e in context["engines"]:
        (root / e["onnx"]).parent.mkdir(parents=True, exist_ok=True)
        (root / e["onnx"]).write_bytes(b"onnx")
    render_to("tensorrt/build_engine.sh", context, root / "build_engine.sh")
    return root


def fake_trtexec(tmp_path: Path, code: int, status: int = 0) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / "trtexec"
    exe.write_text(FAKE_TRTEXEC.format(code=code, status=status))
    exe.chmod(0o755)
    return bin_dir


def run_script(root: Path, bin_dir: Path | None, *args: str, env_extra: dict | None = None):
    log = root.parent / "calls"
    env = {"PATH": (f"{bin_dir}:" if bin_dir else "") + "/usr/bin:/bin", "FAKE_LOG": str(log), "HOME": str(root.parent)}
    env.update(env_extra or {})
    proc = subprocess.run([BASH, str(root / "build_engine.sh"), *args], capture_output=True, text=True, env=env)
    calls = [p.read_text().splitlines() for p in sorted(root.parent.glob("calls.*"))]
    for p in root.parent.glob("calls.*"):
        p.unlink()
    return proc, calls


def flags_of(call: list[str]) -> set[str]:
    return {a for a in call if a in ("--fp16", "--int8", "--stronglyTyped", "--best", "--bf16")}


pytestmark_bash = pytest.mark.skipif(BASH is None, reason="needs bash")


@pytestmark_bash
@pytest.mark.parametrize("code, major", [(100300, 10), (101611, 10)])
def test_trtexec_10_flags_per_precision(tmp_path, code, major):
    root = make_bundle_dir(tmp_path, CONTEXT)
    proc, calls = run_script(root, fake_trtexec(tmp_path, code))
    assert proc.returncode == 0, proc.stderr
    assert len(calls) == 2
    int8, fp16 = calls
    # QDQ int8 ONNX: strongly typed, no weak-typing precision flags.
    assert flags_of(int8) == {"--stronglyTyped"}
    # fp32 ONNX asked for fp16 (not strongly typed): TensorRT 10's --fp16.
    assert flags_of(fp16) == {"--fp16"}
    for call, e in zip(calls, CONTEXT["engines"]):
        assert f"--onnx={root / e['onnx']}" in call
        assert any(a.startswith(f"--saveEngine={root / e['engine']}.tmp.") for a in call)
        assert "--minShapes=input_ids:1x8,attention_mask:1x8" in call
        assert "--optShapes=input_ids:4x128,attention_mask:4x128" in call
        assert "--maxShapes=input_ids:16x256,attention_mask:16x256" in call
        assert "--memPoolSize=workspace:2048M" in call  # M = MiB in trtexec 10's size syntax
        assert f"--timingCacheFile={root}/engines/timing.cache" in call
        assert "--skipInference" in call
        assert (root / e["engine"]).read_bytes() == b"engine"
    assert f"TensorRT {major}" in proc.stderr
    assert not list(root.glob("engines/*.tmp.*"))


@pytestmark_bash
def test_trtexec_10_weak_int8(tmp_path):
    ctx = dict(CONTEXT, engines=[dict(CONTEXT["engines"][0], strongly_typed=False)])
    proc, calls = run_script(make_bundle_dir(tmp_path, ctx), fake_trtexec(tmp_path, 101000))
    assert proc.returncode == 0, proc.stderr
    assert flags_of(calls[0]) == {"--int8", "--fp16"}


@pytestmark_bash
def test_trtexec_11_has_no_precision_flags(tmp_path):
    ctx = dict(CONTEXT, engines=[CONTEXT["engines"][0]])
    proc, calls = run_script(make_bundle_dir(tmp_path, ctx), fake_trtexec(tmp_path, 110400))
    assert proc.returncode == 0, proc.stderr
    # TensorRT 11 removed --fp16/--int8; strong typing is always on, so no flag at all.
    assert flags_of(calls[0]) == set()
    assert "--memPoolSize=workspace:2048M" in calls[0]


@pytestmark_bash
def test_trtexec_11_refuses_an_onnx_without_precision(tmp_path):
    ctx = dict(CONTEXT, engines=[CONTEXT["engines"][1]])
    proc, calls = run_script(make_bundle_dir(tmp_path, ctx), fake_trtexec(tmp_path, 110400))
    assert proc.returncode == 2 and calls == []
    assert proc.stderr.strip().count("\n") == 0
    assert "engine_fp16: TensorRT 11 builds only strongly typed networks" in proc.stderr


@pytestmark_bash
def test_old_tensorrt_is_refused(tmp_path):
    proc, calls = run_script(make_bundle_dir(tmp_path, CONTEXT), fake_trtexec(tmp_path, 8601))
    assert proc.returncode == 2 and calls == []
    assert "TensorRT 8 is too old" in proc.stderr


@pytestmark_bash
def test_help_lists_the_engines(tmp_path):
    proc, calls = run_script(make_bundle_dir(tmp_path, CONTEXT), None, "--help")
    assert proc.returncode == 0 and calls == []
    assert "--force" in proc.stdout and "engines in this bundle (jetson): engine_int8 engine_fp16" in proc.stdout
    assert "set -euo" not in proc.stdout


@pytestmark_bash
def test_existing_engine_is_kept_unless_forced(tmp_path):
    root = make_bundle_dir(tmp_path, CONTEXT)
    bin_dir = fake_trtexec(tmp_path, 101000)
    (root / "engines").mkdir()
    (root / "engines/engine_int8.engine").write_bytes(b"old")
    proc, calls = run_script(root, bin_dir, "engine_int8")
    assert proc.returncode == 0 and calls == [] and "exists" in proc.stderr
    proc, calls = run_script(root, bin_dir, "--force", "engine_int8")
    assert proc.returncode == 0 and len(calls) == 1
    assert (root / "engines/engine_int8.engine").read_bytes() == b"engine"


@pytestmark_bash
def test_shipped_engine_is_never_overwritten(tmp_path):
    ctx = dict(CONTEXT, engines=[dict(CONTEXT["engines"][0], shipped="engines/engine_int8.host.engine")])
    root = make_bundle_dir(tmp_path, ctx)
    bin_dir = fake_trtexec(tmp_path, 101000)
    (root / "engines").mkdir()
    (root / "engines/engine_int8.host.engine").write_bytes(b"from the build host")
    proc, calls = run_script(root, bin_dir)
    assert proc.returncode == 0 and calls == [] and "ships engines/engine_int8.host.engine" in proc.stderr
    proc, calls = run_script(root, bin_dir, "--force")
    assert proc.returncode == 0 and len(calls) == 1
    assert (root / "engines/engine_int8.engine").read_bytes() == b"engine"
    assert (root / "engines/engine_int8.host.engine").read_bytes() == b"from the build host"


@pytestmark_bash
def test_print_builds_nothing(tmp_path):
    root = make_bundle_dir(tmp_path, CONTEXT)
    proc, calls = run_script(root, fake_trtexec(tmp_path, 101000), "--print")
    assert proc.returncode == 0 and calls == []
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and "--stronglyTyped" in lines[0] and "--fp16" in lines[1]
    assert not (root / "engines").exists()


@pytestmark_bash
def test_failed_build_leaves_no_engine(tmp_path):
    root = make_bundle_dir(tmp_path, CONTEXT)
    proc, calls = run_script(root, fake_trtexec(tmp_path, 101000, status=1), "engine_int8")
    assert proc.returncode == 2 and len(calls) == 1
    assert "engine engine_int8: trtexec failed (exit status 1)" in proc.stderr
    assert not list(root.rglob("*.engine*"))


@pytestmark_bash
def test_unknown_engine_name_lists_known(tmp_path):
    proc, _ = run_script(make_bundle_dir(tmp_path, CONTEXT), fake_trtexec(tmp_path, 101000), "engine_in8")
    assert proc.returncode == 2
    assert "no engine named engine_in8 in this bundle; engines: engine_int8 engine_fp16" in proc.stderr


@pytestmark_bash
def test_trtexec_from_environment_and_no_timing_cache(tmp_path):
    ctx = dict(CONTEXT, engine=dict(CONTEXT["engine"], timing_cache=False))
    root = make_bundle_dir(tmp_path, ctx)
    bin_dir = fake_trtexec(tmp_path, 100300)
    proc, calls = run_script(root, None, env_extra={"TRTEXEC": str(bin_dir / "trtexec")})
    assert proc.returncode == 0, proc.stderr
    assert calls and not any(a.startswith("--timingCacheFile") for a in calls[0])


@pytestmark_bash
def test_version_from_environment_when_banner_is_missing(tmp_path):
    root = make_bundle_dir(tmp_path, dict(CONTEXT, engines=[CONTEXT["engines"][0]]))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "trtexec").write_text('#!/bin/sh\n[ "$1" = --help ] && exit 0\nprintf "%s\\n" "$@" > "$FAKE_LOG.1"\n'
                                     'for a; do case "$a" in --saveEngine=*) echo e > "${a#--saveEngine=}";; esac; done\n')
    (bin_dir / "trtexec").chmod(0o755)
    proc, _ = run_script(root, bin_dir)
    if proc.returncode != 0:  # no banner: dpkg/python3 may still know; else one clear line
        assert "set TRT_MAJOR=10 or TRT_MAJOR=11" in proc.stderr
    proc, calls = run_script(root, bin_dir, "--force", env_extra={"TRT_MAJOR": "11"})
    assert proc.returncode == 0, proc.stderr
    assert flags_of(calls[0]) == set()


@pytestmark_bash
@pytest.mark.skipif(Path("/usr/src/tensorrt/bin/trtexec").exists(), reason="this machine has JetPack's trtexec")
def test_missing_trtexec_is_one_line(tmp_path):
    proc, _ = run_script(make_bundle_dir(tmp_path, CONTEXT), None)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "trtexec not found" in proc.stderr and "TRTEXEC=" in proc.stderr


# -- the engine stage ---------------------------------------------------------------

NO_TRT_NO_GPU = {
    "tensorrt_version": None, "tensorrt_location": None, "tensorrt_error": "the tensorrt Python package is not installed",
    "cuda_version": None, "cuda_source": None, "cuda_driver_version": None, "gpu_name": None, "compute_capability": None,
    "driver_version": None, "gpu_count": 0, "gpu_probe": None, "gpu_error": "nvidia-smi not found; libcuda.so.1 not found",
    "can_build": False,
}
BUILD_HOST = dict(NO_TRT_NO_GPU, tensorrt_version="10.16.1.11", tensorrt_error=None, cuda_version="12.9.79",
                  gpu_name="NVIDIA L4", compute_capability="8.9", gpu_count=1, gpu_probe="nvidia-smi", gpu_error=None,
                  can_build=True)


def qdq_onnx(path: Path) -> Path:
    """A small QDQ graph: enough for the stage's precision detection."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    inits = [numpy_helper.from_array(np.array(0.1, dtype=np.float32), "s"),
             numpy_helper.from_array(np.array(0, dtype=np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    model = helper.make_model(helper.make_graph(nodes, "qdq", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return path


@pytest.fixture
def fp32_onnx(tmp_path) -> Path:
    return make_onnx_classifier(tmp_path / "fp32.onnx", 10)


def engine_stage(**args) -> dict:
    """The engine stage's typed entry point, called with the plain arguments these tests read best."""
    paths = {k: Path(v) for k, v in args.items() if k in ("onnx", "engine", "record", "timing_cache_path") and v is not None}
    return te.build(te.EngineArgs(**{**args, **paths, "input_names": tuple(args["input_names"])}))


def stage_args(tmp_path: Path, onnx_path: Path, **over) -> dict:
    args = dict(onnx=str(onnx_path), engine=str(tmp_path / "out" / "engine.engine"),
                record=str(tmp_path / "out" / "engine.json"), name="engine_fp16", precision="fp16",
                input_names=["input_ids", "attention_mask", "token_type_ids"], shapes=CONTEXT["shapes"],
                build="auto", workspace_mb=1024, timing_cache_path=None, compute_capability="8.7",
                profile="targets/jetson.toml")
    args.update(over)
    return args


def test_host_mode_on_this_machine_fails_with_one_line(tmp_path, fp32_onnx):
    status = te.host_tensorrt_status(import_tensorrt=True)
    if status["can_build"]:
        pytest.skip("this machine has TensorRT and a GPU")
    with pytest.raises(ProfileError) as err:
        engine_stage(**stage_args(tmp_path, fp32_onnx, build="host"))
    message = str(err.value)
    assert message == ("targets/jetson.toml: engine.build = 'host' needs TensorRT and an NVIDIA GPU on the build host; "
                       f"found {te.describe_host(status)}; use engine.build = 'device' to build on the device")
    assert "\n" not in message
    assert not (tmp_path / "out").exists()


def test_host_mode_message_names_what_is_missing(tmp_path, fp32_onnx, monkeypatch):
    monkeypatch.setattr(te, "host_tensorrt_status", lambda import_tensorrt=False: dict(NO_TRT_NO_GPU))
    with pytest.raises(ProfileError) as err:
        engine_stage(**stage_args(tmp_path, fp32_onnx, build="host"))
    assert str(err.value) == (
        "targets/jetson.toml: engine.build = 'host' needs TensorRT and an NVIDIA GPU on the build host; "
        "found the tensorrt Python package is not installed, no NVIDIA GPU (nvidia-smi not found; libcuda.so.1 not "
        "found); use engine.build = 'device' to build on the device")


def test_auto_mode_here_records_device_and_why(tmp_path, fp32_onnx):
    status = te.host_tensorrt_status(import_tensorrt=True)
    if status["can_build"]:
        pytest.skip("this machine has TensorRT and a GPU")
    engine_stage(**stage_args(tmp_path, fp32_onnx))
    record = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert record["built"] == "device" and record["engine"] is None
    assert record["reason"] == f"engine.build = 'auto' and this host cannot build: {te.describe_host(status)}"
    assert record["strongly_typed"] is False and record["precision"] == "fp16"
    assert not (tmp_path / "out" / "engine.engine").exists()


def test_device_mode_does_not_probe_the_host(tmp_path, fp32_onnx, monkeypatch):
    def boom(**kwargs):
        raise AssertionError("device mode must not probe the build host")

    monkeypatch.setattr(te, "host_tensorrt_status", boom)
    engine_stage(**stage_args(tmp_path, qdq_onnx(tmp_path / "qdq.onnx"), build="device", precision="int8"))
    record = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert record["built"] == "device" and record["strongly_typed"] is True
    assert "build_engine.sh" in record["reason"]


def test_wrong_gpu_architecture(tmp_path, fp32_onnx, monkeypatch):
    monkeypatch.setattr(te, "host_tensorrt_status", lambda import_tensorrt=False: dict(BUILD_HOST))
    with pytest.raises(ProfileError) as err:
        engine_stage(**stage_args(tmp_path, fp32_onnx, build="host"))
    assert str(err.value) == (
        "targets/jetson.toml: engine.build = 'host': the build host's GPU NVIDIA L4 has compute capability 8.9 but "
        "device.compute_capability = '8.7', and an engine only runs on the GPU architecture that built it; "
        "use engine.build = 'device' to build on the device")
    engine_stage(**stage_args(tmp_path, fp32_onnx, build="auto"))
    record = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert record["built"] == "device" and "compute capability 8.9" in record["reason"]


def test_host_build_is_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(te, "host_tensorrt_status", lambda import_tensorrt=False: dict(BUILD_HOST))
    seen = {}

    def fake_build(onnx_path, dst_engine, **kwargs):  # stands in for TensorRT: this tests the stage's wiring
        seen.update(kwargs)
        Path(dst_engine).parent.mkdir(parents=True, exist_ok=True)
        Path(dst_engine).write_bytes(b"plan")
        return {"tensorrt_version": "10.16.1.11", "strongly_typed": kwargs["strongly_typed"], "engine_size": 4}

    monkeypatch.setattr(te, "build_engine", fake_build)
    cache = tmp_path / "timing.cache"
    engine_stage(**stage_args(tmp_path, qdq_onnx(tmp_path / "qdq.onnx"), precision="int8", compute_capability="8.9",
                                 timing_cache_path=str(cache)))
    record = json.loads((tmp_path / "out" / "engine.json").read_text())
    assert record["built"] == "host" and record["engine"] == "engine.engine"
    assert record["tensorrt_version"] == "10.16.1.11" and record["compute_capability"] == "8.9"
    assert record["cuda_version"] == "12.9.79" and record["gpu_name"] == "NVIDIA L4"
    assert seen["strongly_typed"] is True and seen["precision"] == "int8"
    assert seen["timing_cache_path"] == str(cache) and seen["workspace_mb"] == 1024


def test_int8_needs_a_qdq_onnx(tmp_path, fp32_onnx):
    with pytest.raises(StageError, match="precision 'int8' needs a QDQ ONNX"):
        engine_stage(**stage_args(tmp_path, fp32_onnx, precision="int8", build="device"))


def test_strongly_typed_must_match_the_onnx(tmp_path, fp32_onnx):
    with pytest.raises(StageError, match="strongly_typed = True"):
        engine_stage(**stage_args(tmp_path, fp32_onnx, build="device", strongly_typed=True))


def test_onnx_precision_detection(tmp_path, fp32_onnx):
    assert te.onnx_precision(fp32_onnx) == {"qdq": False, "fp16": False}
    assert te.onnx_precision(qdq_onnx(tmp_path / "q.onnx"))["qdq"] is True
    model = onnx.load(str(fp32_onnx))
    model.graph.node.append(helper.make_node("Cast", ["logits"], ["logits16"], to=TensorProto.FLOAT16))
    onnx.save(model, str(tmp_path / "fp16.onnx"))
    assert te.onnx_precision(tmp_path / "fp16.onnx") == {"qdq": False, "fp16": True}


def test_unknown_build_mode():
    with pytest.raises(ProfileError, match="engine.build = 'cloud': use one of 'host', 'device', 'auto'"):
        te.decide_build("cloud", NO_TRT_NO_GPU, "8.7", "targets/x.toml: ")


def test_signature_includes_the_toolchain():
    assert te.engine_signature(BUILD_HOST, "auto") == {"build": "auto", "tensorrt": "10.16.1.11", "cuda": "12.9.79",
                                                      "compute_capability": "8.9"}
    assert te.engine_signature(BUILD_HOST, "device") == {"build": "device"}


def test_status_never_crashes_and_reads_nvidia_smi(tmp_path, monkeypatch):
    te._cached_status.cache_clear()
    status = te.host_tensorrt_status()
    assert set(NO_TRT_NO_GPU) <= set(status)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text('#!/bin/sh\necho "NVIDIA H100 80GB HBM3, 9.0, 550.54.15"\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    te._cached_status.cache_clear()
    try:
        status = te.host_tensorrt_status()
        assert status["compute_capability"] == "9.0" and status["gpu_name"] == "NVIDIA H100 80GB HBM3"
        assert status["gpu_probe"] == "nvidia-smi" and status["driver_version"] == "550.54.15"
    finally:
        te._cached_status.cache_clear()


def test_tensorrt_version_is_read_without_importing(tmp_path, monkeypatch):
    # The pip layout: tensorrt re-exports tensorrt_bindings, whose __init__ holds the version.
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text(
        "raise RuntimeError('imported')\nfrom tensorrt_bindings import __version__\n")
    (tmp_path / "tensorrt_bindings").mkdir()
    (tmp_path / "tensorrt_bindings" / "__init__.py").write_text('__version__ = "10.16.1.11"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    te._cached_status.cache_clear()
    try:
        assert te.host_tensorrt_status()["tensorrt_version"] == "10.16.1.11"
        imported = te.host_tensorrt_status(import_tensorrt=True)
        assert imported["tensorrt_version"] is None and imported["can_build"] is False
        assert imported["tensorrt_error"] == "import tensorrt failed: imported"
    finally:
        te._cached_status.cache_clear()
        sys.modules.pop("tensorrt", None)


# -- run_engine.py end to end with ONNX Runtime --------------------------------------

@pytest.fixture
def trt_bundle(tmp_path) -> Path:
    """A tiny real bundle whose fp32 ONNX stands in as the engine's source model."""
    bundle = write_bundle(tmp_path / "bundle")
    ctx = dict(CONTEXT, default_artifact="engine_fp16", input_names=["input_ids", "attention_mask", "token_type_ids"],
               artifacts=[{k: a[k] for k in ("name", "format", "precision", "runtime", "path")}
                          for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]],
               engines=[{"name": "engine_fp16", "onnx": "models/fp32.onnx", "engine": "engines/engine_fp16.engine",
                         "shipped": None, "precision": "fp16", "strongly_typed": False}])
    render_to("tensorrt/run_engine.py", ctx, bundle / "run_engine.py")
    render_to("tensorrt/build_engine.sh", ctx, bundle / "build_engine.sh")
    refresh_files(bundle)
    return bundle


TEXTS = ["it was fun", "a great movie", "the worst film", "boring and awful !"]


def run_stub(bundle: Path, *args: str, stdin: str | None = None):
    return subprocess.run([sys.executable, str(bundle / "run_engine.py"), *args], capture_output=True, text=True,
                          cwd=bundle.parent, input=stdin)


def test_onnxruntime_backend_matches_the_runtime(trt_bundle, tmp_path):
    (tmp_path / "texts.txt").write_text("\n".join(TEXTS[1:]) + "\n\n")
    out = run_stub(trt_bundle, "--backend", "onnxruntime", "--file", str(tmp_path / "texts.txt"),
                   "--batch-size", "2", TEXTS[0])
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    with load_bundle(trt_bundle) as bundle:
        expected = bundle.classifier("fp32").predict(TEXTS)
    assert [r["text"] for r in rows] == TEXTS
    for row, want in zip(rows, expected):
        assert row["label"] == want["label"]
        assert row["score"] == pytest.approx(want["score"], abs=1e-6)
        assert row["scores"] == pytest.approx(want["scores"], abs=1e-6)
    # This onnxruntime has no GPU providers: auto falls back to the CPU and says so.
    assert "running on CPU" in out.stderr and out.stderr.count("\n") == 1


def test_onnxruntime_backend_runs_other_onnx_artifacts(trt_bundle):
    out = run_stub(trt_bundle, "--backend", "onnxruntime", "--provider", "cpu", "--artifact", "int8_dynamic", *TEXTS)
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # cpu asked for, cpu given: nothing to note
    with load_bundle(trt_bundle) as bundle:
        expected = bundle.classifier("int8_dynamic").predict(TEXTS)
    assert [json.loads(line)["label"] for line in out.stdout.splitlines()] == [e["label"] for e in expected]


def test_requested_gpu_provider_falls_back_with_a_note(trt_bundle):
    out = run_stub(trt_bundle, "--backend", "onnxruntime", "--provider", "cuda", "great movie")
    assert out.returncode == 0, out.stderr
    assert "CUDAExecutionProvider not available" in out.stderr


@pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None, reason="TensorRT is installed")
def test_tensorrt_backend_without_tensorrt_is_one_line(trt_bundle):
    out = run_stub(trt_bundle, "great movie")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "--backend onnxruntime" in out.stderr
    assert not (trt_bundle / "engines").exists(), "nothing is built before TensorRT is known to be there"


def load_stub_module(bundle: Path):
    spec = importlib.util.spec_from_file_location(f"run_engine_{id(bundle)}", bundle / "run_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytestmark_bash
def test_device_rebuild_keeps_a_host_built_bundle_verifiable(trt_bundle, tmp_path, monkeypatch):
    """A bundle shipping a host-built engine: --rebuild on the device builds engines/NAME.engine
    beside it, that one is preferred afterwards, and the bundle still verifies."""
    ctx = dict(CONTEXT, default_artifact="engine_fp16", input_names=["input_ids", "attention_mask", "token_type_ids"],
               artifacts=[{k: a[k] for k in ("name", "format", "precision", "runtime", "path")}
                          for a in json.loads((trt_bundle / "manifest.json").read_text())["artifacts"]],
               engines=[{"name": "engine_fp16", "onnx": "models/fp32.onnx", "engine": "engines/engine_fp16.engine",
                         "shipped": "engines/engine_fp16.host.engine", "precision": "fp16", "strongly_typed": False}])
    render_to("tensorrt/run_engine.py", ctx, trt_bundle / "run_engine.py")
    render_to("tensorrt/build_engine.sh", ctx, trt_bundle / "build_engine.sh")
    (trt_bundle / "engines").mkdir()
    (trt_bundle / "engines/engine_fp16.host.engine").write_bytes(b"from the build host")
    refresh_files(trt_bundle)
    monkeypatch.setenv("PATH", f"{fake_trtexec(tmp_path, 101600)}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "calls"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the stub puts its bundle first on sys.path
    stub = load_stub_module(trt_bundle)
    assert stub.ensure_engine(trt_bundle, "engine_fp16", rebuild=False) == trt_bundle / "engines/engine_fp16.host.engine"
    assert not list(tmp_path.glob("calls.*")), "the shipped engine is used as it is"
    built = stub.ensure_engine(trt_bundle, "engine_fp16", rebuild=True)
    assert built == trt_bundle / "engines/engine_fp16.engine" and built.read_bytes() == b"engine"
    assert (trt_bundle / "engines/engine_fp16.host.engine").read_bytes() == b"from the build host"
    assert stub.ensure_engine(trt_bundle, "engine_fp16", rebuild=False) == built
    with load_bundle(trt_bundle) as bundle:  # raises if a listed file changed
        assert "engines/engine_fp16.host.engine" in {f["path"] for f in bundle.manifest["files"]}


def test_default_artifact_may_be_an_onnx_model(trt_bundle):
    ctx = dict(CONTEXT, default_artifact="int8_dynamic", input_names=["input_ids", "attention_mask", "token_type_ids"],
               artifacts=[{"name": "int8_dynamic", "format": "onnx", "precision": "int8", "runtime": "onnxruntime",
                           "path": "models/int8_dynamic.onnx"}],
               engines=[{"name": "engine_fp16", "onnx": "models/fp32.onnx", "engine": "engines/engine_fp16.engine",
                         "shipped": None, "precision": "fp16", "strongly_typed": False}])
    render_to("tensorrt/run_engine.py", ctx, trt_bundle / "run_engine.py")
    refresh_files(trt_bundle)
    out = run_stub(trt_bundle, "--backend", "onnxruntime", "--provider", "cpu", "great movie")
    assert out.returncode == 0, out.stderr
    with load_bundle(trt_bundle) as bundle:
        assert json.loads(out.stdout)["label"] == bundle.classifier("int8_dynamic").predict(["great movie"])[0]["label"]
    if __import__("importlib").util.find_spec("tensorrt") is None:
        # The tensorrt backend takes the first engine instead of refusing the ONNX default.
        trt = run_stub(trt_bundle, "great movie")
        assert trt.returncode == 2 and "needs the tensorrt and pycuda packages" in trt.stderr


def test_bad_input_is_one_line(trt_bundle, tmp_path):
    empty = run_stub(trt_bundle, "--backend", "onnxruntime")
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1 and "no texts" in empty.stderr
    missing = run_stub(trt_bundle, "--backend", "onnxruntime", "--file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "cannot read --file" in missing.stderr
    onnx_on_trt = run_stub(trt_bundle, "--artifact", "fp32", "x")
    assert onnx_on_trt.returncode == 2 and "run it with --backend onnxruntime" in onnx_on_trt.stderr
    (trt_bundle / "models" / "fp32.onnx").write_bytes(b"tampered")
    tampered = run_stub(trt_bundle, "--backend", "onnxruntime", "x")
    assert tampered.returncode == 2 and tampered.stderr.count("\n") == 1 and "models/fp32.onnx size mismatch" in tampered.stderr


# -- with real TensorRT and a GPU (skipped here) ---------------------------------------

def _has_tensorrt() -> bool:
    return te.host_tensorrt_status(import_tensorrt=True)["can_build"]


@pytest.mark.tensorrt
@pytest.mark.skipif(not _has_tensorrt(), reason="needs TensorRT and an NVIDIA GPU")
def test_real_engine_build_and_run(trt_bundle, tmp_path):
    pytest.importorskip("pycuda.driver")
    facts = te.build_engine(trt_bundle / "models/fp32.onnx", trt_bundle / "engines/engine_fp16.engine",
                            input_names=["input_ids", "attention_mask", "token_type_ids"], shapes=CONTEXT["shapes"],
                            precision="fp16", workspace_mb=256, timing_cache_path=tmp_path / "timing.cache",
                            strongly_typed=False, name="engine_fp16")
    assert facts["inputs"] and (tmp_path / "timing.cache").stat().st_size > 0
    out = run_stub(trt_bundle, *TEXTS)
    assert out.returncode == 0, out.stderr
    with load_bundle(trt_bundle) as bundle:
        expected = bundle.classifier("fp32").predict(TEXTS)
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["label"] for r in rows] == [e["label"] for e in expected]
    for row, want in zip(rows, expected):
        assert row["score"] == pytest.approx(want["score"], abs=2e-2)  # fp16 engine vs fp32 ONNX
