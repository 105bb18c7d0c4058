"""runtime.nf4, the one nf4 loader: what the bundle serves with and the build host measures with.

Loading a real checkpoint is covered by tests/test_nf4.py (the host's runner
and serve.py's torch backend both go through runtime.nf4); these are the
checks that need no model.
"""
from __future__ import annotations

import importlib.util

import pytest

from recipes.errors import StageError
from recipes.measure import nf4_runner
from runtime import nf4
from runtime.errors import BundleError


def hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(nf4.importlib.util, "find_spec", lambda name, *a: None if name in names else real(name, *a))


def test_the_host_measures_with_the_runtime_loader():
    assert nf4_runner.linear_layers is nf4.linear_layers
    assert nf4_runner.set_compute_dtype is nf4.set_compute_dtype
    assert nf4_runner.DEVICES == nf4.DEVICES


def test_a_missing_package_is_one_line(monkeypatch: pytest.MonkeyPatch):
    hide(monkeypatch, "bitsandbytes")
    with pytest.raises(BundleError) as err:
        nf4.require_packages()
    assert str(err.value) == ("nf4: the 'bitsandbytes' package is not installed (it holds the nf4 kernels); "
                              "install it with: pip install bitsandbytes")


def test_several_missing_packages_are_named_together(monkeypatch: pytest.MonkeyPatch):
    hide(monkeypatch, "accelerate", "bitsandbytes")
    with pytest.raises(BundleError, match=r"'bitsandbytes', 'accelerate' are not installed; "
                                          r"install them with: pip install bitsandbytes accelerate$"):
        nf4.require_packages()


def test_the_host_gets_stage_errors(monkeypatch: pytest.MonkeyPatch, tmp_path):
    hide(monkeypatch, "accelerate")
    with pytest.raises(StageError, match="^nf4: the 'accelerate' package is not installed"):
        nf4_runner.require_packages()
    with pytest.raises(StageError, match="^nf4: the 'accelerate' package is not installed"):
        nf4_runner.load_nf4(tmp_path)


def test_unknown_device():
    with pytest.raises(BundleError, match="device 'gpu' is not one of auto, cuda, cpu"):
        nf4.pick_device("gpu")
    with pytest.raises(StageError, match="device 'gpu' is not one of auto, cuda, cpu"):
        nf4_runner.pick_device("gpu")


@pytest.mark.skipif(not (importlib.util.find_spec("bitsandbytes") and importlib.util.find_spec("accelerate")),
                    reason="needs bitsandbytes and accelerate")
def test_an_incomplete_checkpoint_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(BundleError) as err:
        nf4.load_nf4(tmp_path, "cpu")
    assert str(err.value).startswith(f"nf4: transformers cannot load {tmp_path} (") and "\n" not in str(err.value)
