"""Movement pruning on a tiny model: the sparsity it promises, permanent zeros,
physically smaller structured checkpoints, the teacher's logits really used,
byte-determinism, and profile validation."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from recipes.errors import ProfileError, StageError
from recipes.inputs.data import DataParams, load_split, prepare
from recipes.models import prune as prune_stage
from recipes.models import teacher_logits as logits_stage
from recipes.models.movement import MovementPrune, heads_mask, pruned_share, topk_mask
from recipes.wiring.profile import load_profile
from tiny_model import make_checkpoint

NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Tiny and quick: 2 epochs of ~8 steps; high rates so 16 steps move the scores and the weights.
FAST = dict(epochs=2, batch_size=8, max_length=32, threads=1, learning_rate=1e-3, score_learning_rate=5e-2)
REPO = Path(__file__).resolve().parent.parent


def movement(base: Path, data: Path, logits: Path | None, dst: Path, **fields) -> dict:
    params = MovementPrune(method="movement", **{**FAST, **fields})
    return prune_stage.build(prune_stage.PruneArgs(base, data, dst, params, NAMES, logits))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_rows, tiny_data):
    root = tmp_path_factory.mktemp("movement")
    teacher = make_checkpoint(root / "teacher", [r["text"] for r in tiny_rows], with_head=True, seed=3)
    data = root / "data"
    prepare(tiny_data, None, data, DataParams())
    logits = root / "logits"
    logits_stage.build(logits_stage.TeacherLogitsArgs(teacher, data, logits, NAMES, 32, 1, logits_stage.BATCH))
    return root, teacher, data, logits


@pytest.fixture(scope="module")
def unstructured(setup):
    root, teacher, data, logits = setup
    out = root / "unstructured"
    return out, movement(teacher, data, logits, out, structure="unstructured", sparsity=0.7)


@pytest.fixture(scope="module")
def structured(setup):
    root, teacher, data, logits = setup
    out = root / "structured"
    return out, movement(teacher, data, logits, out, structure="structured", ffn_keep_ratio=0.25, heads_fraction=0.5)


def logits_of(model_dir: Path, data: Path, n: int = 8) -> np.ndarray:
    import torch

    from recipes.models.hf import load_classifier
    from recipes.textenc import Encoder

    model = load_classifier(model_dir)
    texts = [e.text for e in load_split(data / "eval.jsonl")[:n]]
    feeds = Encoder(model_dir / "tokenizer.json", 32).encode(texts, NAMES)
    with torch.inference_mode():
        return model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()


def encoder_weights(model_dir: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for k, v in load_file(str(model_dir / "model.safetensors")).items()
            if k.startswith("bert.encoder.layer.") and k.endswith(".weight") and v.ndim == 2}


def test_schedule_is_cubic_between_its_start_and_end():
    assert pruned_share(0, 100, 0.1, 0.8) == 0.0 and pruned_share(9, 100, 0.1, 0.8) == 0.0
    assert pruned_share(80, 100, 0.1, 0.8) == 1.0 and pruned_share(99, 100, 0.1, 0.8) == 1.0
    mid = pruned_share(45, 100, 0.1, 0.8)  # halfway through the ramp: 1 - 0.5^3
    assert mid == pytest.approx(0.875)
    shares = [pruned_share(s, 100, 0.1, 0.8) for s in range(100)]
    assert shares == sorted(shares)
    assert pruned_share(30, 100, 0.3, 0.2) == 1.0 and pruned_share(29, 100, 0.3, 0.2) == 0.0  # end <= start: at once


def test_topk_and_head_masks():
    import torch

    m = topk_mask(torch.tensor([[0.5, -1.0], [2.0, 0.5]]), 2)
    assert m.tolist() == [[1.0, 0.0], [1.0, 0.0]]  # the tie at 0.5 goes to the lower index
    # Two heads kept of four: layer 1's best head stays although layer 0 holds the two highest scores.
    masks = heads_mask([torch.tensor([3.0, 2.0]), torch.tensor([-1.0, -2.0])], 2)
    assert [x.tolist() for x in masks] == [[1.0, 0.0], [1.0, 0.0]]
    masks = heads_mask([torch.tensor([3.0, 2.0]), torch.tensor([-1.0, -2.0])], 3)
    assert [x.tolist() for x in masks] == [[1.0, 1.0], [1.0, 0.0]]


def test_scores_get_the_straight_through_movement_gradient():
    """dL/dS = dL/d(W * M) * W for every weight, kept or masked; masked weights get no gradient."""
    import torch

    from recipes.models.movement import unstructured_masks

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3)
    masks = unstructured_masks([("l", layer)], sparsity=0.5)
    with torch.no_grad():
        masks.scores["l"].copy_(torch.randn(3, 4))
    masks.update(1.0)
    hard = masks.hard["l"]
    assert int(hard.sum()) == 6
    x = torch.randn(5, 4)
    (layer(x) ** 2).sum().backward()
    w = layer.parametrizations.weight.original
    # The gradient of the loss with respect to the effective (masked) weight, computed by hand.
    effective = (w * hard).detach().requires_grad_(True)
    (torch.nn.functional.linear(x, effective, layer.bias) ** 2).sum().backward()
    torch.testing.assert_close(masks.scores["l"].grad, effective.grad * w.detach())
    torch.testing.assert_close(w.grad, effective.grad * hard)
    assert (w.grad[hard == 0] == 0).all() and (masks.scores["l"].grad[hard == 0] != 0).all()


def test_unstructured_reaches_the_sparsity_and_the_zeros_are_permanent(setup, unstructured):
    out, info = unstructured
    record = json.loads((out / "pruning.json").read_text())
    assert record["method"] == "movement" and record["structure"] == "unstructured"
    assert record["speeds_up_dense_kernels"] is False and "do not run faster" in record["note"]
    assert abs(info["encoder_linear_sparsity"] - 0.7) < 0.01
    assert all(abs(v - 0.7) < 0.01 for v in info["per_module_sparsity"].values())
    weights = encoder_weights(out)
    assert len(weights) == 12  # Q, K, V, attention output, FFN in and out, two layers
    for name, w in weights.items():
        assert abs((w == 0).mean() - 0.7) < 0.01, name
    # Dense shapes, plain zeros (not -0.0, which compresses worse), and the record matches the file.
    assert weights["bert.encoder.layer.0.intermediate.dense.weight"].shape == (64, 32)
    assert not np.signbit(weights["bert.encoder.layer.0.intermediate.dense.weight"][
        weights["bert.encoder.layer.0.intermediate.dense.weight"] == 0]).any()
    assert record["parameters_after"] == record["parameters_before"]
    assert logits_of(out, setup[2]).shape == (8, 2)
    assert record["masked_vs_saved_max_abs_diff"] <= 1e-4


def test_unstructured_is_not_magnitude_pruning(setup, unstructured):
    """Movement chooses what to keep from how weights moved: not simply the largest of the start."""
    _, teacher, _, _ = setup
    before = encoder_weights(teacher)
    after = encoder_weights(unstructured[0])
    w0, w1 = before["bert.encoder.layer.1.output.dense.weight"], after["bert.encoder.layer.1.output.dense.weight"]
    kept = w1 != 0
    largest = np.abs(w0) >= np.quantile(np.abs(w0), 0.7)
    assert 0 < (kept != largest).mean()
    assert not np.array_equal(w1[kept], w0[kept])  # the kept weights trained too


def test_structured_gives_a_smaller_plain_checkpoint_that_trained(setup, structured):
    out, info = structured
    root, teacher, data, _ = setup
    record = json.loads((out / "pruning.json").read_text())
    assert record["speeds_up_dense_kernels"] is True and record["structure"] == "structured"
    assert info["intermediate_size_before"] == 64 and info["intermediate_size_after"] == 16
    assert info["heads_total"] == 4 and info["heads_removed"] == 2 and info["heads_per_layer"] == [1, 1]
    assert record["parameters_after"] < record["parameters_before"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["intermediate_size"] == 16 and cfg["edgesmith_attention_heads"] == [1, 1]
    # The smaller shapes are in the file, and edgesmith's loader (heads re-applied) reads it strictly.
    weights = encoder_weights(out)
    assert weights["bert.encoder.layer.1.intermediate.dense.weight"].shape == (16, 32)
    assert weights["bert.encoder.layer.0.attention.self.query.weight"].shape == (16, 32)
    assert weights["bert.encoder.layer.0.attention.output.dense.weight"].shape == (32, 16)
    pruned, base = logits_of(out, data), logits_of(teacher, data)
    assert pruned.shape == base.shape and np.abs(pruned - base).max() > 1e-3
    assert record["masked_vs_saved_max_abs_diff"] <= 1e-4
    # The schedule reached the targets while training, and the history says so.
    last = record["history"][-1]
    assert last["ffn_kept"] < 1.0 and last["heads_kept"] < 1.0 and record["history"][0]["kl"] > 0


def test_structured_ffn_only_loads_with_plain_transformers(setup, tmp_path):
    root, teacher, data, logits = setup
    out = tmp_path / "ffn"
    info = movement(teacher, data, logits, out, structure="structured", ffn_keep_ratio=0.5, heads_fraction=0.0, epochs=1)
    assert info["heads_removed"] == 0 and info["intermediate_size_after"] == 32
    from transformers import AutoModelForSequenceClassification

    plain = AutoModelForSequenceClassification.from_pretrained(out, local_files_only=True)
    assert plain.bert.encoder.layer[0].intermediate.dense.out_features == 32
    assert "edgesmith_attention_heads" not in json.loads((out / "config.json").read_text())


def test_movement_pruning_is_byte_deterministic(setup, structured, tmp_path):
    root, teacher, data, logits = setup
    again = tmp_path / "again"
    movement(teacher, data, logits, again, structure="structured", ffn_keep_ratio=0.25, heads_fraction=0.5)
    assert (again / "model.safetensors").read_bytes() == (structured[0] / "model.safetensors").read_bytes()
    assert (again / "pruning.json").read_bytes() == (structured[0] / "pruning.json").read_bytes()


def test_it_trains_against_the_teachers_logits(setup, tmp_path):
    """Pure distillation (alpha = 1) against two different logits tables gives two different models."""
    root, teacher, data, logits = setup
    flipped = tmp_path / "flipped"
    flipped.mkdir()
    (flipped / "ids.json").write_bytes((logits / "ids.json").read_bytes())
    np.save(flipped / "logits.npy", -np.load(logits / "logits.npy"))
    a = movement(teacher, data, logits, tmp_path / "a", structure="unstructured", sparsity=0.5, alpha=1.0, epochs=1)
    b = movement(teacher, data, flipped, tmp_path / "b", structure="unstructured", sparsity=0.5, alpha=1.0, epochs=1)
    assert a["history"][0]["kl"] > 0 and a["history"][0]["kl"] != b["history"][0]["kl"]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != (tmp_path / "b" / "model.safetensors").read_bytes()


def test_missing_teacher_logits_are_one_clear_error(setup, tmp_path):
    root, teacher, data, logits = setup
    with pytest.raises(StageError, match="trains against the teacher's logits, but no logits_dir was given"):
        movement(teacher, data, None, tmp_path / "x", structure="unstructured")
    # A table computed for other data: the first example it lacks is named.
    partial = tmp_path / "partial"
    partial.mkdir()
    ids = json.loads((logits / "ids.json").read_text())
    (partial / "ids.json").write_text(json.dumps(ids[1:]))
    np.save(partial / "logits.npy", np.load(logits / "logits.npy")[1:])
    with pytest.raises(StageError, match=f"no teacher logits for example id '{ids[0]}'") as e:
        movement(teacher, data, partial, tmp_path / "y", structure="unstructured", epochs=1)
    assert "\n" not in str(e.value)


TINY = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()


@pytest.mark.parametrize("table, key, message", [
    ('{ method = "movement", structure = "unstructured", sparsity = 1.0 }', "models[0].prune.sparsity = 1.0",
     "need 0 < sparsity < 1"),
    ('{ method = "movement", structure = "structured", heads_fraction = 1.0 }', "models[0].prune.heads_fraction = 1.0",
     "need 0 <= heads_fraction < 1"),
    ('{ method = "movement", structure = "structured", score_learning_rate = 0 }',
     "models[0].prune.score_learning_rate = 0", "need 0 < score_learning_rate <= 1"),
    ('{ method = "movement", structure = "blocks" }', "models[0].prune.structure = 'blocks'",
     "is not allowed; use one of 'unstructured', 'structured'"),
    ('{ method = "movement" }', "missing key models[0].prune.structure", ""),
    ('{ method = "movement", structure = "structured", max_length = 64 }', "models[0].prune.max_length = 64",
     "exceeds shapes.sequence.max = 32"),
])
def test_bad_values_are_one_line_at_profile_load(tmp_path, table, key, message):
    path = tmp_path / "p.toml"
    path.write_text(TINY + f'\n[[models]]\nname = "m"\nprune = {table}\n')
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    text = str(e.value)
    assert text.startswith(str(path)) and key in text and message in text and "\n" not in text, text


def test_max_length_follows_the_finetune_length(tmp_path):
    p = load_profile(REPO / "tests" / "fixtures" / "tiny_compress.toml")
    moving = [m.prune for m in p.models if isinstance(m.prune, MovementPrune)]
    assert moving and all(pr.max_length == p.stages.finetune.max_length for pr in moving)
    assert dataclasses.replace(moving[0], max_length=None).max_length is None


def test_a_structured_run_that_removes_nothing_is_refused():
    from recipes.models.movement import check

    nothing = MovementPrune(method="movement", structure="structured", ffn_keep_ratio=1.0, heads_fraction=0.0)
    with pytest.raises(ProfileError, match=r"^p\.toml: models\[2\]\.prune\.ffn_keep_ratio = 1 and models\[2\]\.prune\."
                                           r"heads_fraction = 0: structured movement pruning would remove nothing"):
        check(nothing, "p.toml", "models[2].prune")
    check(dataclasses.replace(nothing, heads_fraction=0.5), "p.toml")  # heads only
    check(dataclasses.replace(nothing, structure="unstructured"), "p.toml")  # sparsity applies instead
