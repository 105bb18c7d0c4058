"""Teacher logits, distillation and pruning on a tiny model: shapes, reload
round trips, determinism and the teacher-logit pairing."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import dataclasses

from recipes.errors import ModelError, StageError
from recipes.inputs.data import DataParams, load_split, prepare
from recipes.models import distill as distill_stage
from recipes.models import prune as prune_stage
from recipes.models import teacher_logits as logits_stage
from recipes.models.distill import paired_batches
from recipes.models.teacher_logits import TeacherLogits
from recipes.wiring.profile import DistillParams, FfnPrune, HeadPrune, MagnitudePrune, TrainParams
from tiny_model import make_checkpoint

NAMES = ("input_ids", "attention_mask", "token_type_ids")
FAST = dict(epochs=1, batch_size=8, max_length=32, threads=1)


# The stages' typed entry points, called the way these tests read best.
def compute(model_dir, data, dst, names, max_length, threads):
    return logits_stage.build(logits_stage.TeacherLogitsArgs(model_dir, data, dst, tuple(names), max_length, threads,
                                                             logits_stage.BATCH))


def distill(base, teacher, logits, data, dst, params, names, select_layers):
    train = params.training() if isinstance(params, DistillParams) else params
    student = params.student() if select_layers else None
    return distill_stage.build(distill_stage.DistillArgs(base, teacher, logits, data, dst, train, student, tuple(names)))


def prune(base, data, dst, params, names, max_length, threads):
    if not isinstance(params, MagnitudePrune):
        params = dataclasses.replace(params, max_length=max_length)
    params = dataclasses.replace(params, threads=threads)
    return prune_stage.build(prune_stage.PruneArgs(base, data, dst, params, tuple(names)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_rows, tiny_data):
    root = tmp_path_factory.mktemp("compress")
    teacher = make_checkpoint(root / "teacher", [r["text"] for r in tiny_rows], with_head=True, seed=3)
    data = root / "data"
    prepare(tiny_data, None, data, DataParams())
    logits = root / "logits"
    compute(teacher, data, logits, NAMES, 32, 1)
    return root, teacher, data, logits


def logits_of(model_dir: Path, data: Path, n: int = 8) -> np.ndarray:
    import torch

    from recipes.models.hf import load_classifier
    from recipes.textenc import Encoder

    model = load_classifier(model_dir)
    texts = [e.text for e in load_split(data / "eval.jsonl")[:n]]
    feeds = Encoder(model_dir / "tokenizer.json", 32).encode(texts, NAMES)
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def test_teacher_logits_are_stored_per_example_id(setup):
    _, teacher, data, logits = setup
    table = TeacherLogits.load(logits)
    train = load_split(data / "train.jsonl")
    assert len(table.rows) == len(train)
    # Each example's stored row is what the teacher says about that example alone.
    import torch

    from recipes.models.hf import load_classifier
    from recipes.textenc import Encoder

    model = load_classifier(teacher)
    enc = Encoder(teacher / "tokenizer.json", 32)
    for e in train[::7]:
        feeds = enc.encode([e.text], NAMES)
        with torch.inference_mode():
            alone = model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()[0]
        np.testing.assert_allclose(table.lookup([e.id])[0], alone, atol=1e-5)


def test_shuffled_batches_pair_each_example_with_its_own_teacher_logits(setup):
    _, _, data, logits = setup
    train = load_split(data / "train.jsonl")
    # A table whose row for an example is a fingerprint of that example's id.
    ids = [e.id for e in reversed(train)]  # stored in a different order on purpose
    marks = np.array([[hash(i) % 1000, len(i)] for i in ids], dtype=np.float32)
    table = TeacherLogits(ids, marks, Path("t"))
    rng = np.random.default_rng(0)
    for _ in range(3):
        order = rng.permutation(len(train)).tolist()
        seen = 0
        for batch, rows in paired_batches(train, table, order, 5):
            expect = np.array([[hash(e.id) % 1000, len(e.id)] for e in batch], dtype=np.float32)
            np.testing.assert_array_equal(rows, expect)
            seen += len(batch)
        assert seen == len(train)


def test_missing_teacher_logits_is_one_clear_error(setup):
    table = TeacherLogits(["a", "b"], np.zeros((2, 2), np.float32), Path("logits"))
    with pytest.raises(StageError, match="no teacher logits for example id 'zz'"):
        table.lookup(["a", "zz"])


@pytest.fixture(scope="module")
def student(setup):
    root, teacher, data, logits = setup
    params = DistillParams(layers=1, temperature=2.0, alpha=0.7, **FAST)
    out = root / "student"
    summary = distill(teacher, teacher, logits, data, out, params, NAMES, select_layers=True)
    return out, summary


def test_student_has_the_chosen_layers_and_reloads(setup, student):
    out, summary = student
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 1 and summary["layer_ids"] == [0]
    assert logits_of(out, setup[2]).shape == (8, 2)
    assert (out / "tokenizer.json").is_file() and summary["history"][0]["kl"] > 0


def test_distillation_is_byte_deterministic(setup, student, tmp_path):
    root, teacher, data, logits = setup
    again = tmp_path / "again"
    distill(teacher, teacher, logits, data, again, DistillParams(layers=1, temperature=2.0, alpha=0.7, **FAST), NAMES,
            select_layers=True)
    assert (again / "model.safetensors").read_bytes() == (student[0] / "model.safetensors").read_bytes()


def test_student_is_initialised_from_the_chosen_teacher_layer(setup):
    import torch

    from recipes.models.archs import arch_for
    from recipes.models.hf import load_classifier
    from recipes.models.slim import default_layer_ids, student_from_layers

    teacher = load_classifier(setup[1])
    s = student_from_layers(teacher, arch_for("bert"), [1])
    torch.testing.assert_close(s.bert.encoder.layer[0].output.dense.weight, teacher.bert.encoder.layer[1].output.dense.weight)
    assert default_layer_ids(6, 3) == [0, 2, 4] and default_layer_ids(12, 0) == list(range(0, 12, 2))
    assert default_layer_ids(6, 2) == [0, 3]
    with pytest.raises(ModelError, match="layer 5 does not exist"):
        student_from_layers(teacher, arch_for("bert"), [5])


def test_hidden_state_loss_trains(setup, tmp_path):
    root, teacher, data, logits = setup
    summary = distill(teacher, teacher, logits, data, tmp_path / "h",
                      DistillParams(layers=1, hidden_loss=1.0, **FAST), NAMES, select_layers=True)
    assert summary["history"][0]["hidden"] > 0


def test_magnitude_pruning_is_permanent_and_reports_sparsity(setup, tmp_path):
    root, teacher, data, _ = setup
    out = tmp_path / "sparse"
    info = prune(teacher, data, out, MagnitudePrune(method="magnitude", sparsity=0.6), NAMES, 32, 1)
    assert abs(info["encoder_linear_sparsity"] - 0.6) < 0.01
    from safetensors.numpy import load_file

    weights = load_file(str(out / "model.safetensors"))
    w = weights["bert.encoder.layer.0.intermediate.dense.weight"]
    assert 0.3 < (w == 0).mean() < 0.9
    assert logits_of(out, data).shape == (8, 2)


def test_per_layer_magnitude_pruning_hits_the_target_in_every_layer(setup, tmp_path):
    info = prune(setup[1], setup[2], tmp_path / "s", MagnitudePrune(method="magnitude", sparsity=0.5, scope="layer"),
                 NAMES, 32, 1)
    assert all(abs(v - 0.5) < 0.01 for v in info["per_module_sparsity"].values())


def test_ffn_pruning_gives_a_plain_transformers_checkpoint(setup, tmp_path):
    root, teacher, data, _ = setup
    out = tmp_path / "ffn"
    info = prune(teacher, data, out, FfnPrune(method="ffn", keep_ratio=0.5, samples=16), NAMES, 32, 1)
    assert info["intermediate_size_after"] == 32
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    assert plain.bert.encoder.layer[1].intermediate.dense.out_features == 32
    assert logits_of(out, data).shape == (8, 2)


def test_head_pruning_round_trip(setup, tmp_path):
    root, teacher, data, _ = setup
    out = tmp_path / "heads"
    info = prune(teacher, data, out, HeadPrune(method="heads", fraction=0.5, samples=16), NAMES, 32, 1)
    assert info["heads_removed"] == 2 and info["heads_per_layer"] == [1, 1]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["edgesmith_attention_heads"] == [1, 1]
    # The reloaded model computes exactly what the pruned one did before saving.
    from recipes.models.hf import load_classifier

    model = load_classifier(out)
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 16
    a, b = logits_of(out, data), logits_of(out, data)
    np.testing.assert_array_equal(a, b)
    # Removing a head with the mask-equivalent gives the same logits as removing it physically.
    import torch

    from recipes.models.slim import keep_heads
    from recipes.models.archs import arch_for

    full = load_classifier(teacher)
    keep = {int(i): [h for h in range(2) if h not in v] for i, v in info["removed"].items()}
    keep_heads(full, arch_for("bert"), keep)
    full_out = full(**{k: torch.from_numpy(v) for k, v in _feeds(teacher, data).items()}).logits.detach().numpy()
    np.testing.assert_allclose(full_out, logits_of(out, data), atol=1e-5)


def _feeds(model_dir, data):
    from recipes.textenc import Encoder

    texts = [e.text for e in load_split(data / "eval.jsonl")[:8]]
    return Encoder(model_dir / "tokenizer.json", 32).encode(texts, NAMES)


def test_recovery_distils_a_pruned_model_in_place(setup, tmp_path):
    root, teacher, data, logits = setup
    pruned = tmp_path / "heads"
    prune(teacher, data, pruned, HeadPrune(method="heads", fraction=0.5, samples=16), NAMES, 32, 1)
    out = tmp_path / "recovered"
    summary = distill(pruned, teacher, logits, data, out, TrainParams(**FAST), NAMES, select_layers=False)
    assert summary["layer_ids"] == [0, 1]
    assert json.loads((out / "config.json").read_text())["edgesmith_attention_heads"] == [1, 1]
    assert logits_of(out, data).shape == (8, 2)
