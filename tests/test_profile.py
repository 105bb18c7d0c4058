"""Profile schema: every profile kind loads; mistakes are one precise line."""
from __future__ import annotations

from pathlib import Path

import pytest

from recipes.errors import ProfileError
from recipes.profile import DynamicInt8, StaticInt8, load_profile

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "profiles"


def test_cpu_profile_is_complete():
    p = load_profile(REPO / "targets" / "cpu.toml", REPO / "templates")
    assert p.name == "cpu" and p.device.accelerator == "none"
    assert [a.name for a in p.artifacts] == ["fp32", "int8_dynamic", "int8_static"]
    assert isinstance(p.artifact("int8_dynamic").quantize, DynamicInt8)
    assert isinstance(p.artifact("int8_static").quantize, StaticInt8)
    assert p.bundle.default_artifact == "int8_dynamic"
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
