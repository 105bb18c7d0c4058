"""Every parameter is validated once, at profile load, with its range.

The walker below visits every parameter dataclass a profile can hold (tagged
variants included) and fails on a numeric field that declares neither a
range (`recipes.params.bounded`) nor an explicit `unbounded(...)` reason.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path

import pytest

from recipes.errors import ProfileError
from recipes.wiring.profile import Profile, load_profile

REPO = Path(__file__).resolve().parent.parent
TINY = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()
COMPRESS = (REPO / "tests" / "fixtures" / "tiny_compress.toml").read_text()
NUMERIC = (int, float)


def parameter_classes(cls: type, seen: dict[type, None] | None = None) -> dict[type, None]:
    """`cls` and every dataclass reachable from its fields, tagged-union variants included."""
    seen = {} if seen is None else seen
    if cls in seen:
        return seen
    seen[cls] = None
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        for variant in f.metadata.get("variants", {}).values():
            parameter_classes(variant, seen)
        for tp in _leaves(hints[f.name]):
            if dataclasses.is_dataclass(tp):
                parameter_classes(tp, seen)
    return seen


def _leaves(tp) -> list:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType, tuple):
        return [leaf for a in typing.get_args(tp) if a is not type(None) and a is not Ellipsis for leaf in _leaves(a)]
    return [tp]


def test_walker_sees_every_stage_parameter_class():
    names = {c.__name__ for c in parameter_classes(Profile)}
    assert {"FinetuneParams", "ExportParams", "StaticInt8", "WeightOnlyInt4", "Nf4", "Int8DynActInt4Weight", "HeadPrune",
            "FfnPrune", "MagnitudePrune", "DistillParams", "TrainParams", "EngineParams", "EvaluateParams", "Gates"} <= names


@pytest.mark.parametrize("cls", list(parameter_classes(Profile)), ids=lambda c: c.__name__)
def test_every_numeric_field_has_a_range_or_says_why_not(cls):
    hints = typing.get_type_hints(cls)
    unbounded = [f.name for f in dataclasses.fields(cls)
                 if any(leaf in NUMERIC for leaf in _leaves(hints[f.name]))
                 and "bounds" not in f.metadata and "unbounded" not in f.metadata]
    assert not unbounded, f"{cls.__name__}: numeric fields with no range: {unbounded}"


def _load(tmp_path, text: str):
    path = tmp_path / "p.toml"
    path.write_text(text)
    return load_profile(path)


def one_line_error(tmp_path, text: str) -> str:
    with pytest.raises(ProfileError) as e:
        _load(tmp_path, text)
    message = str(e.value)
    assert "\n" not in message and message.startswith(str(tmp_path / "p.toml"))
    return message


@pytest.mark.parametrize("edit, key, allowed", [
    # the stages issue's examples
    (('calibration_samples = 16', 'calibration_samples = 0'), "artifacts[2].quantize.calibration_samples = 0",
     "need 1 <= calibration_samples"),
    (('precision = "int8"\nquantize = { method = "dynamic" }', 'precision = "int4"\nquantize = { method = "weight_only", block_size = 3 }'),
     "artifacts[1].quantize.block_size = 3", "need 16 <= block_size <= 256"),
    (('precision = "int8"\nquantize = { method = "dynamic" }', 'precision = "int4"\nquantize = { method = "weight_only", accuracy_level = 9 }'),
     "artifacts[1].quantize.accuracy_level = 9", "need 0 <= accuracy_level <= 4"),
    # training values that cannot train (the trust issue)
    (('epochs = 2', 'epochs = 0'), "stages.finetune.epochs = 0", "need 1 <= epochs <= 1000"),
    (('epochs = 2', 'epochs = 99999999999999999999'), "stages.finetune.epochs = 99999999999999999999", "need 1 <= epochs"),
    (('learning_rate = 1e-3', 'learning_rate = -1'), "stages.finetune.learning_rate = -1.0", "need 0 < learning_rate <= 1"),
    (('max_length = 32', 'max_length = 0'), "stages.finetune.max_length = 0", "need 1 <= max_length"),
    (('seed = 7', 'seed = 7\nwarmup_ratio = 5'), "stages.finetune.warmup_ratio = 5.0", "need 0 <= warmup_ratio <= 1"),
    (('seed = 7', 'seed = -1'), "stages.finetune.seed = -1", "need 0 <= seed"),
    (('[stages.export]', '[stages.export]\nopset = 5'), "stages.export.opset = 5", "need 18 <= opset <= 23"),
    (('atol = 1e-4', 'atol = nan'), "stages.export.atol = nan", "need 0 < atol <= 1"),
    (('repeats = 3', 'repeats = 0'), "evaluate.repeats = 0", "need 1 <= repeats"),
    (('threads = 1\n\n[stubs]', 'threads = -2\n\n[stubs]'), "evaluate.threads = -2", "need 0 <= threads"),
    (('batch = { min = 1, opt = 1, max = 8 }', 'batch = { min = 1, opt = 1, max = 100000 }'), "shapes.batch.max = 100000",
     "need 1 <= max <= 65536"),
])
def test_out_of_range_values_are_one_line_at_load(tmp_path, edit, key, allowed):
    old, new = edit
    assert old in TINY
    message = one_line_error(tmp_path, TINY.replace(old, new, 1))
    assert key in message and allowed in message, message


def test_engine_workspace_must_be_positive(tmp_path):
    text = (REPO / "tests" / "fixtures" / "profiles" / "jetson.toml").read_text()
    assert "[engine]" in text
    message = one_line_error(tmp_path, re.sub(r"(?m)^workspace_mb = .*$", "workspace_mb = -1", text))
    assert "engine.workspace_mb = -1: need 1 <= workspace_mb" in message


@pytest.mark.parametrize("old, new, fragment", [
    ('samples = 16 }', 'samples = 0 }', "prune.samples = 0: need 1 <= samples"),
    ('temperature = 2.0, alpha = 0.5 }', 'temperature = 0.0, alpha = 0.5 }', "models[0].distill: need 0 <= alpha <= 1, temperature > 0"),
    ('recover = { epochs = 1,', 'recover = { epochs = 0,', "models[1].recover.epochs = 0: need 1 <= epochs"),
])
def test_model_parameters_are_bounded(tmp_path, old, new, fragment):
    assert old in COMPRESS
    assert fragment in one_line_error(tmp_path, COMPRESS.replace(old, new, 1))


def test_defaults_that_follow_other_keys_are_resolved_at_load(tmp_path):
    """Pruning scores at the fine-tune length unless told otherwise; the stage gets the number, not a rule."""
    p = _load(tmp_path, COMPRESS)
    pruned = [m.prune for m in p.models if m.prune is not None and hasattr(m.prune, "max_length")]
    assert pruned and all(pr.max_length == p.stages.finetune.max_length for pr in pruned)
