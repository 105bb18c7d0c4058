"""Peak memory (recipes/measure/memory.py): measured in a fresh process over the runtime's own baseline,
and gated like latency and size."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from recipes.measure.memory import probe_in_fresh_process
from recipes.measure.report import check_gates, gate_status

NAMES = ("input_ids", "attention_mask", "token_type_ids")
BATCH, SEQ = 4, 32


def graph_with_weight(path, columns: int) -> int:
    """input_ids [batch, 32] -> float -> MatMul by a [32, columns] weight; the other inputs are declared and
    unused, as in an exported classifier. Returns the weight's bytes."""
    weight = np.random.default_rng(0).standard_normal((SEQ, columns)).astype(np.float32)
    nodes = [helper.make_node("Cast", ["input_ids"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["logits"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", SEQ]) for n in NAMES]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", columns])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, [out], [numpy_helper.from_array(weight, "w")]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return weight.nbytes


def feeds() -> dict[str, np.ndarray]:
    ids = np.ones((BATCH, SEQ), dtype=np.int64)
    return {"input_ids": ids, "attention_mask": ids, "token_type_ids": np.zeros_like(ids)}


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    root = tmp_path_factory.mktemp("memory")
    small_bytes = graph_with_weight(root / "small.onnx", 256)
    big_bytes = graph_with_weight(root / "big.onnx", 400_000)  # 51 MB of weights
    got = {name: probe_in_fresh_process("onnx", root / f"{name}.onnx", NAMES, 1, feeds(), name)
           for name in ("small", "big")}
    return got, small_bytes, big_bytes


def test_a_bigger_model_costs_its_weights_and_the_baseline_is_the_runtime(probes):
    got, small_bytes, big_bytes = probes
    mib = 1024 * 1024
    grown = got["big"]["peak_mb"] - got["small"]["peak_mb"]
    # ONNX Runtime holds the weights once (the initializer) and the output batch; it may keep a second copy
    # while it prepacks, so the growth lies between one and three times the weights.
    assert big_bytes / mib * 0.9 <= grown <= big_bytes / mib * 3, got
    assert 0 <= got["small"]["peak_mb"] < 30, got  # a 32 KB model adds little over the imported runtime
    # The baseline is a process with onnxruntime and numpy imported (tens of MiB), not counted in peak_mb.
    assert got["small"]["baseline_mb"] > 20 and abs(got["small"]["baseline_mb"] - got["big"]["baseline_mb"]) < 10, got
    assert got["big"]["method"] == "VmHWM reset after imports"


def test_an_unloadable_artifact_fails_the_stage_in_one_line(tmp_path):
    from recipes.errors import StageError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx model")
    with pytest.raises(Exception) as info:
        probe_in_fresh_process("onnx", bad, NAMES, 1, feeds(), "bad")
    # The child raised (not died): the parent sees the pipe close and names the artifact in one line.
    assert isinstance(info.value, StageError) and "bad" in str(info.value) and "\n" not in str(info.value)


def test_memory_gate_fails_with_value_and_limit_and_says_when_unchecked():
    row = {"accuracy": 0.9, "agreement": 1.0, "size_bytes": 1_000_000, "latency_ms": {}, "peak_memory_mb": 123.4}
    assert check_gates(row, {"max_peak_memory_mb": 100.0}, 0.9, "8") == ["peak memory 123.4 MiB > max_peak_memory_mb 100.0"]
    assert check_gates(row, {"max_peak_memory_mb": 200.0}, 0.9, "8") == []
    unmeasured = dict(row, peak_memory_mb=None, gates=[])
    assert check_gates(unmeasured, {"max_peak_memory_mb": 1.0}, 0.9, "8") == []
    assert "max_peak_memory_mb unchecked" in gate_status(unmeasured, {"max_peak_memory_mb": 1.0})
