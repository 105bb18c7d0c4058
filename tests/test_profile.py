"""Profile schema: every profile kind loads; mistakes are one precise line."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipes.errors import ProfileError
from recipes.wiring.profile import DynamicInt8, StaticInt8, load_profile

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "profiles"


def test_cpu_profile_is_complete():
    p = load_profile(REPO / "targets" / "cpu.toml", REPO / "templates")
    assert p.name == "cpu" and p.device.accelerator == "none"
    assert [a.name for a in p.artifacts] == ["fp32", "int8_dynamic", "int8_static", "ov_fp32", "ov_bf16", "ov_int8"]
    assert isinstance(p.artifact("int8_dynamic").quantize, DynamicInt8)
    assert isinstance(p.artifact("int8_static").quantize, StaticInt8)
    # OpenVINO int8 by default; a CPU without VNNI/AMX runs the fused ONNX Runtime int8.
    assert p.bundle.default_artifact == "ov_int8" and p.bundle.fallback[0] == "int8_dynamic"
    assert {"amx_int8", "amx_bf16", "avx512_vnni"} <= set(p.device.cpu_features)
    gates = p.gates_for(p.artifact("int8_dynamic"))
    # The artifact's own gates override the profile-wide ones, key by key.
    assert gates.max_size_mb == 30 and gates.min_agreement == 0.97
    assert gates.min_accuracy_ratio == p.gates.min_accuracy_ratio


@pytest.mark.parametrize("name", ["jetson", "gpu_server", "android"])
def test_every_profile_kind_loads(name):
    p = load_profile(FIXTURES / f"{name}.toml")
    assert p.artifacts and p.device.description


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(text)
    return path


BASE = (FIXTURES / "android.toml").read_text()


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('arch = "arm64"', 'arch = "mips"'), "device.arch = 'mips' is not allowed; use one of 'x86_64', 'arm64'"),
    (lambda t: t.replace('group_size = 32', 'group_size = 32.5'), "artifacts[1].quantize.group_size = 32.5: expected an integer"),
    (lambda t: t.replace('[mobile]', '[mobil]'), "unknown key mobil; allowed keys in top level:"),
    (lambda t: t.replace('name = "android-arm64"\n', ''), "missing key device.name (a string)"),
    (lambda t: t.replace('quantize = { method = "dynamic" }', ''), "artifacts[0].quantize.method = None: ptl int8 needs quantize.method 'dynamic'"),
    (lambda t: t.replace('runtimes = ["pytorch_lite", "executorch"]', 'runtimes = ["executorch"]'), "artifacts[0].format = 'ptl' needs runtime 'pytorch_lite'"),
    (lambda t: t.replace('name = "pte_8da4w"', 'name = "ptl_int8"'), "artifacts[1].name = 'ptl_int8' is used twice"),
    (lambda t: t.replace('optimize_for_mobile = "auto"', 'optimize_for_mobile = true'), "mobile.optimize_for_mobile = true is not allowed"),
])
def test_profile_errors_name_file_key_value_and_fix(tmp_path, edit, message):
    path = write(tmp_path, edit(BASE))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    text = str(e.value)
    assert text.startswith(str(path)) and message in text and "\n" not in text


def test_gpu_precision_on_cpu_device_is_impossible(tmp_path):
    text = (FIXTURES / "gpu_server.toml").read_text().replace('accelerator = "cuda"', 'accelerator = "none"')
    with pytest.raises(ProfileError, match="needs a GPU"):
        load_profile(write(tmp_path, text))


CPU = (REPO / "targets" / "cpu.toml").read_text()


@pytest.mark.parametrize("extra, message", [
    ('[[models]]\nname = "s"\n', r"models\[0\] \(s\): give a distill, a prune or a qat table"),
    ('[[models]]\nname = "s"\nbase = "nope"\ndistill = {}\n', r"models\[0\]\.base = 'nope' is not defined above this model"),
    ('[[models]]\nname = "s"\ndistill = { alpha = 1.5 }\n', r"models\[0\]\.distill: need 0 <= alpha <= 1"),
    ('[[models]]\nname = "s"\ndistill = { layer_ids = [2, 0] }\n', r"layer_ids = \[2, 0\]: need distinct, increasing"),
    ('[[models]]\nname = "s"\ndistill = {}\nrecover = {}\n', r"recover: recovery training follows pruning"),
    ('[[models]]\nname = "p"\nprune = { method = "ffn", keep_ratio = 1.5 }\n', r"prune\.keep_ratio = 1\.5: need 0 < keep_ratio < 1"),
    ('[[models]]\nname = "p"\nprune = { method = "channels" }\n', r"prune\.method = 'channels' is not allowed; use one of 'magnitude', 'heads', 'ffn'"),
    ('[[models]]\nname = "teacher"\ndistill = {}\n', r"models\[0\]\.name = 'teacher'"),
])
def test_model_mistakes_are_one_line(tmp_path, extra, message):
    with pytest.raises(ProfileError, match=message):
        load_profile(write(tmp_path, CPU + "\n" + extra))


def test_artifact_must_name_a_model(tmp_path):
    text = CPU.replace('name = "fp32"\nformat = "onnx"', 'name = "fp32"\nmodel = "student"\nformat = "onnx"')
    with pytest.raises(ProfileError, match=r"artifacts\[0\]\.model = 'student' is not a model; use one of 'teacher'"):
        load_profile(write(tmp_path, text))


def test_fuse_is_for_onnx_only_and_tensorrt_int8_needs_int8_activations(tmp_path):
    jetson = (REPO / "targets" / "jetson.toml").read_text()
    with pytest.raises(ProfileError, match=r"artifacts\[0\]\.fuse = true: fusion makes ONNX Runtime graphs"):
        load_profile(write(tmp_path, jetson.replace('name = "engine_fp16"\n', 'name = "engine_fp16"\nfuse = true\n')))
    with pytest.raises(ProfileError, match=r"activation_type = 'uint8': TensorRT takes symmetric int8"):
        load_profile(write(tmp_path, jetson.replace('activation_type = "int8"', 'activation_type = "uint8"')))


def test_bundle_artifacts_must_exist_and_hold_the_default(tmp_path):
    with pytest.raises(ProfileError, match=r"bundle\.artifacts\[0\] = 'nope' is not an artifact"):
        load_profile(write(tmp_path, CPU.replace('default_artifact = "ov_int8"', 'artifacts = ["nope"]')))
    with pytest.raises(ProfileError, match=r"bundle\.default_artifact = 'int8_dynamic' is not an artifact in the bundle"):
        load_profile(write(tmp_path, CPU.replace('default_artifact = "ov_int8"', 'artifacts = ["fp32"]\ndefault_artifact = "int8_dynamic"')))


@pytest.mark.parametrize("name", ["cpu", "arm64", "jetson", "gpu_server", "android"])
def test_shipped_profiles_load(name):
    assert load_profile(REPO / "targets" / f"{name}.toml", REPO / "templates").artifacts


def test_bench_profile_loads_with_every_technique():
    p = load_profile(REPO / "bench" / "sst2.toml", REPO / "templates")
    assert {m.name for m in p.models} >= {"student3", "ffn_half", "heads_quarter", "sparse50", "student3_ffn"}
    assert {(a.format, a.precision) for a in p.artifacts} >= {("onnx", "int8"), ("onnx", "int4"), ("onnx", "fp16"), ("torch", "fp32")}
