"""Quantization-aware training: the stage's int8 programs, their checks, and the profile rules around them.

The end-to-end build of one QAT model in three formats (ONNX Runtime, TensorRT's ONNX, ExecuTorch) and
their parity in the report is tests/test_qat_build.py.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from recipes.errors import ProfileError
from recipes.formats.model_io import verification_inputs
from recipes.formats.qat_files import PROGRAM, QDQ_ONNX, RECORD
from recipes.inputs.data import DataParams, prepare
from recipes.measure.parity import format_parity, parity_failures
from recipes.models import qat as qat_stage
from recipes.models import teacher_logits as logits_stage
from recipes.models.qat import QatParams
from recipes.wiring.profile import load_profile
from tiny_model import REPO, make_checkpoint

NAMES = ("input_ids", "attention_mask", "token_type_ids")
FAST = dict(epochs=1, batch_size=8, max_length=32, threads=1, calibration_samples=16, learning_rate=1e-4)


def run_qat(root: Path, teacher: Path, data: Path, logits: Path, name: str, **fields) -> tuple[Path, dict]:
    dst = root / name
    params = QatParams(**{**FAST, **fields})
    record = qat_stage.build(qat_stage.QatArgs(teacher, logits, data, dst, params, NAMES, 64, 64, 18))
    return dst, record


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_rows, tiny_data):
    root = tmp_path_factory.mktemp("qat")
    teacher = make_checkpoint(root / "teacher", [r["text"] for r in tiny_rows], with_head=True, seed=3)
    data = root / "data"
    prepare(tiny_data, None, data, DataParams())
    logits = root / "logits"
    logits_stage.build(logits_stage.TeacherLogitsArgs(teacher, data, logits, NAMES, 32, 1, logits_stage.BATCH))
    out, record = run_qat(root, teacher, data, logits, "qat")
    return root, teacher, data, logits, out, record


def test_qat_writes_a_checkpoint_and_one_int8_program_in_two_forms(trained):
    *_, out, record = trained
    for name in ("config.json", "model.safetensors", "tokenizer.json", RECORD, QDQ_ONNX, PROGRAM, "manifest.json"):
        assert (out / name).is_file(), name
    listed = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert {QDQ_ONNX, PROGRAM, RECORD} <= listed
    # Every Linear of the 2-layer model (Q, K, V, attention output, FFN in/out per layer, pooler, classifier).
    assert record["quantized_linears"] == 14 and record["placement"] == "linear_io"
    assert record["steps"] > 0 and record["history"][0]["kl"] >= 0
    assert 0 < record["observers_frozen_at_step"] < record["steps"]
    assert all(s > 0 for s in record["activation_scales"].values())


def test_qdq_onnx_is_symmetric_int8_with_per_channel_weights(trained):
    *_, out, _ = trained
    model = onnx.load(str(out / QDQ_ONNX))
    ops = Counter(n.op_type for n in model.graph.node)
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"]
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        for n in node.attribute:
            if n.name == "value" and node.op_type == "Constant":
                consts[node.output[0]] = onnx.numpy_helper.to_array(n.t)
    zero_points = [consts[n.input[2]] for n in model.graph.node
                   if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in consts]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # what TensorRT takes
    weights = [consts[n.input[0]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts
               and consts[n.input[0]].ndim == 2]
    assert len(weights) == 14 and all(w.dtype == np.int8 for w in weights)
    scales = [consts[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in consts
              and consts[n.input[0]].ndim == 2]
    assert all(s.ndim == 1 and s.size > 1 for s in scales)  # one scale per output channel


def test_onnx_runtime_and_the_program_compute_the_same_int8_model(trained):
    import torch

    *_, out, record = trained
    export = record["onnx_checks"]["export"]
    assert export["sentences"] == FAST["calibration_samples"] and export["within_atol"] >= QatParams().export_within
    assert export["max_abs_diff"] <= QatParams().export_atol  # the tiny model has no rounding-boundary flips
    assert {"max_abs_diff", "argmax_agreement", "within_atol"} <= record["onnx_checks"]["integer"].keys()
    shapes = record["onnx_checks"]["shapes"]  # growing real batches, the last padded to max_length
    assert [b for b, _ in shapes] == [1, 3, 8, 4] and shapes[-1][1] == FAST["max_length"]
    feeds = verification_inputs(400, NAMES, 3, 20, seed=5)
    session = ort.InferenceSession(str(out / QDQ_ONNX), providers=["CPUExecutionProvider"])
    program = torch.export.load(str(out / PROGRAM)).module()
    with torch.no_grad():
        ref = program(*[torch.from_numpy(feeds[n]) for n in NAMES]).numpy()
    got = session.run(None, feeds)[0]
    assert got.shape == ref.shape and np.abs(got - ref).max() <= QatParams().export_atol


def test_an_export_with_a_wrong_scale_is_refused_in_one_line(trained, tiny_rows, tmp_path):
    import torch

    from recipes.errors import StageError
    from recipes.textenc import Encoder

    _, teacher, *_rest, out, _ = trained
    model = onnx.load(str(out / QDQ_ONNX))
    consts = {i.name: i for i in model.graph.initializer}
    # The last weight's scale: the classifier's, which every logit depends on.
    scale = [consts[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"
             and n.input[0] in consts and len(consts[n.input[0]].dims) == 2][-1]
    scale.CopyFrom(onnx.numpy_helper.from_array(onnx.numpy_helper.to_array(scale) * 3, scale.name))
    broken = tmp_path / "broken.onnx"
    onnx.save(model, str(broken))
    encoder = Encoder(teacher / "tokenizer.json", 32)
    batches = qat_stage.verification_batches([r["text"] for r in tiny_rows[:16]],
                                             lambda t, pad: encoder.encode(t, NAMES, pad_to=pad), 32)
    program = torch.export.load(str(out / PROGRAM)).module()
    # The random tiny model's logits span about 1e-2, so the bound is scaled to it; the right export passes.
    atol = 1e-3
    assert qat_stage.check_onnx(out / QDQ_ONNX, program, batches, NAMES, atol, 1.0)["export"]["within_atol"] == 1.0
    with pytest.raises(StageError, match=r"^qat: broken.onnx with its QDQ ops kept differs from the QAT program: .*"
                                         r"the export is wrong, do not ship it$"):
        qat_stage.check_onnx(broken, program, batches, NAMES, atol, QatParams().export_within)


def test_qat_is_byte_deterministic(trained):
    root, teacher, data, logits, out, record = trained
    again, _ = run_qat(root, teacher, data, logits, "again")
    assert (again / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()
    assert json.loads((again / RECORD).read_text())["activation_scales"] == record["activation_scales"]


def test_qat_trains_the_weights_the_checkpoint_holds(trained):
    from safetensors.numpy import load_file

    _, teacher, *_rest, out, _ = trained
    before, after = load_file(teacher / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = [k for k in before if not np.array_equal(before[k], after[k])]
    assert any("attention" in k for k in changed)


def test_inputs_only_placement_leaves_linear_outputs_float(trained):
    root, teacher, data, logits, *_ = trained
    out, record = run_qat(root, teacher, data, logits, "inputs", placement="linear_inputs", epochs=1)
    ops = Counter(n.op_type for n in onnx.load(str(out / QDQ_ONNX)).graph.node)
    linear_io = Counter(n.op_type for n in onnx.load(str(trained[4] / QDQ_ONNX)).graph.node)
    assert 0 < ops["QuantizeLinear"] < linear_io["QuantizeLinear"]
    assert record["placement"] == "linear_inputs"


def test_parity_compares_every_pair_and_gates_the_worst(tmp_path):
    def member(name, logits, measured=True):
        d = tmp_path / name
        d.mkdir()
        np.save(d / "logits.npy", np.asarray(logits, dtype=np.float32))
        (d / "metrics.json").write_text(json.dumps({"measured": measured}))
        return {"name": name, "format": "onnx", "metrics": d / "metrics.json", "note": ""}

    same = [[2, 1], [0, 3], [1, 0], [5, 4]]
    flipped = [[2, 1], [0, 3], [0, 1], [4, 5]]
    parity = format_parity({"qat": [member("a", same), member("b", same), member("c", flipped),
                                    member("d", same, measured=False)]})
    pairs = {(p["a"], p["b"]): p["agreement"] for p in parity["qat"]["pairs"]}
    assert pairs == {("a", "b"): 1.0, ("a", "c"): 0.5, ("b", "c"): 0.5}
    assert parity["qat"]["unmeasured"] == ["d"]
    failures = parity_failures(parity, {"a": 0.98, "b": 0.98, "c": 0.98, "d": 0.98})
    assert len(failures) == 3 and failures[2].startswith("c: agreement with a") and "0.500 < min_format_agreement 0.98" in failures[2]


QAT_PROFILE = (REPO / "tests" / "fixtures" / "tiny_qat.toml").read_text()


@pytest.mark.parametrize("edit,message", [
    (lambda t: t.replace('quantize = { method = "dynamic" }', 'quantize = { method = "qat" }'),
     "artifacts[0].quantize.method = 'qat': model 'teacher' was not trained with QAT"),
    (lambda t: t.replace('model = "qat"\nformat = "onnx"\nprecision = "int8"\nquantize = { method = "qat" }',
                         'model = "qat"\nformat = "onnx"\nprecision = "int8"\nquantize = { method = "dynamic" }'),
     "artifacts[1].quantize: model 'qat' is quantization-aware trained; its artifacts ship its int8 program"),
    (lambda t: t.replace('calibration_samples = 16 }\n\n[[artifacts]]', 'calibration_samples = 16, placement = "linear_inputs" }\n\n[[artifacts]]', 1),
     "artifacts[3].format = 'pte': model 'qat' has qat.placement = 'linear_inputs', which XNNPACK cannot lower"),
    (lambda t: t.replace('model = "qat"\nformat = "onnx"', 'model = "qat"\nfuse = true\nformat = "onnx"'),
     "artifacts[1].fuse = true: a QAT graph is already quantized"),
    (lambda t: t.replace('threads = 1, calibration_samples = 16 }', 'threads = 1, calibration_samples = 16 }\n\n[[models]]\nname = "after"\nbase = "qat"\nprune = { method = "magnitude" }'),
     "models[1].base = 'qat' is a quantization-aware-trained model; QAT is the last step"),
    (lambda t: t.replace('calibration_samples = 16 }', 'calibration_samples = 16, freeze_observers = 1.5 }'),
     "models[0].qat.freeze_observers = 1.5"),
    (lambda t: t.replace('qat = { epochs = 1', 'qat = { epochs = 1, max_length = 64', 1).replace('max_length = 32, threads = 1, calibration', 'threads = 1, calibration'),
     "models[0].qat.max_length = 64 exceeds shapes.sequence.max = 32"),
])
def test_qat_profile_mistakes_are_one_line(tmp_path, edit, message):
    text = edit(QAT_PROFILE)
    assert text != QAT_PROFILE
    path = tmp_path / "p.toml"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    assert message in str(e.value) and "\n" not in str(e.value) and str(e.value).startswith(str(path))


def test_a_qat_pte_needs_a_sibling_or_an_agreement_gate(tmp_path):
    alone = QAT_PROFILE
    for name, fmt in (("qat_onnx", "onnx"), ("qat_engine", "tensorrt")):
        block = f'[[artifacts]]\nname = "{name}"\nmodel = "qat"\nformat = "{fmt}"\nprecision = "int8"\nquantize = {{ method = "qat" }}\n\n'
        assert block in alone
        alone = alone.replace(block, "")
    alone = alone.replace('default_artifact = "qat_onnx"', 'default_artifact = "qat_pte"')
    path = tmp_path / "p.toml"
    path.write_text(alone)
    with pytest.raises(ProfileError, match=r"artifacts\[1\].format = 'pte': a QAT .pte is judged on the eval set against "
                                           r"its sibling formats .* add its ONNX artifact, or set gates.min_agreement$"):
        load_profile(path)
    path.write_text(alone.replace("[gates]\n", "[gates]\nmin_agreement = 0.95\n"))
    assert load_profile(path).artifact("qat_pte").model == "qat"


def test_the_fixture_profile_loads():
    p = load_profile(REPO / "tests" / "fixtures" / "tiny_qat.toml", REPO / "templates")
    assert p.model("qat").qat.epochs == 1 and [a.quantize.method for a in p.artifacts] == ["dynamic", "qat", "qat", "qat"]
