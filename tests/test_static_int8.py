"""Static QDQ int8: where the Q/DQ pairs go, what ONNX Runtime makes of them, and how close the logits stay.

The speed and agreement numbers behind the defaults are in bench/results/static_int8.md (bench/static_int8.py);
these tests hold the graph to the placement those numbers came from.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from recipes.errors import ProfileError
from recipes.formats.model_io import verification_inputs
from recipes.formats.quantize_onnx import StaticInt8, quantize_static, split_attention
from recipes.wiring.profile import load_profile
from tiny_model import REPO

NAMES = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 400
LAYERS = 2
LENGTH = 32


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny_rows, exported_classifier):
    """A tiny BERT classifier exported (fp32) and fused for ORT, its tokenizer and a train split to calibrate on."""
    root = exported_classifier(3, tmp_path_factory.mktemp("static_int8"), fused=True)
    model = root / "m"
    assert json.loads((model / "config.json").read_text())["vocab_size"] == VOCAB
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"t{i:03d}", "text": r["text"], "label": r["label"]}) + "\n"
                             for i, r in enumerate(tiny_rows)))
    return root, model / "tokenizer.json", train


def quantize(graphs, src: str, name: str, **fields) -> tuple[Path, dict]:
    root, tokenizer, train = graphs
    dst = root / f"{name}.onnx"
    info = quantize_static(root / src, dst, train, tokenizer, StaticInt8("static", calibration_samples=32, **fields),
                           NAMES, LENGTH)
    return dst, info


def parts(path: Path):
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)
    return graph, producer, readers, {i.name for i in graph.initializer}


def weight_matmuls(graph, producer, inits):
    """MatMuls whose B is a (dequantized) constant, and those multiplying two activations."""
    def constant(name):
        node = producer.get(name)
        return name in inits or (node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits)
    matmuls = [n for n in graph.node if n.op_type == "MatMul"]
    return [n for n in matmuls if constant(n.input[1])], [n for n in matmuls if not constant(n.input[1])]


def ort_ops(path: Path) -> Counter:
    """The kernels ORT runs the model with (its graph after the session's optimizations)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(path.with_suffix(".ort_optimized.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def logits(path: Path, seed: int = 9) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, verification_inputs(VOCAB, NAMES, 4, LENGTH, seed=seed + i))[0]
                           for i in range(4)])


@pytest.fixture(scope="module")
def default_fused(graphs):
    return quantize(graphs, "fused.onnx", "default_fused")


def test_default_placement_follows_activation_type():
    assert StaticInt8("static").resolved_placement() == "weight_inputs"
    # TensorRT's symmetric int8 QDQ keeps ORT's full placement (strongly typed engines run un-QDQ'd ops in fp32).
    assert StaticInt8("static", activation_type="int8").resolved_placement() == "all_matmuls"
    assert StaticInt8("static", activation_type="int8", placement="weight_inputs").resolved_placement() == "weight_inputs"


def test_fused_attention_becomes_static_qattention(graphs, default_fused):
    path, info = default_fused
    assert info["placement"] == "weight_inputs" and info["attention"] == "qattention"
    assert info["attention_split"] == info["qattention"] == LAYERS and info["qattention_max_abs_diff"] <= 1e-3
    graph, producer, readers, inits = parts(path)
    ops = Counter(n.op_type for n in graph.node)
    assert ops["Attention"] == ops["MultiHeadAttention"] == 0 and ops["QAttention"] == LAYERS
    for node in (n for n in graph.node if n.op_type == "QAttention"):
        quant = producer[node.input[0]]
        # Static: the input comes quantized by a calibrated QuantizeLinear with constant scale and zero point
        # (no DynamicQuantizeLinear), the weight is one int8 initializer, per-channel over Q|K|V.
        assert quant.op_type == "QuantizeLinear" and {quant.input[1], quant.input[2]} <= inits
        assert node.input[3] == quant.input[1] and node.input[6] == quant.input[2]
        weight = next(i for i in graph.initializer if i.name == node.input[1])
        scale = next(i for i in graph.initializer if i.name == node.input[4])
        assert weight.data_type == onnx.TensorProto.INT8 and list(scale.dims) == [weight.dims[1]] == [3 * 32]
        assert node.input[5] == "attention_mask_int32"
    assert "DynamicQuantizeLinear" not in ops
    weighted, activation = weight_matmuls(graph, producer, inits)
    # Attention output and the two FFN MatMuls per layer; no bare Q.K^T in a fused graph.
    assert len(weighted) == 3 * LAYERS and not activation
    for node in weighted:
        a, b = (producer.get(name) for name in node.input)
        assert a.op_type == b.op_type == "DequantizeLinear", node.name
        assert producer[a.input[0]].op_type == "QuantizeLinear"
        # Per-channel weights: one scale per output column.
        assert len(next(i for i in graph.initializer if i.name == b.input[1]).dims) == 1
        # Float out: nothing requantizes the MatMul's result.
        assert all(r.op_type != "QuantizeLinear" for r in readers.get(node.output[0], []))


def test_split_attention_keeps_qdq_projections(graphs, default_fused):
    path, info = quantize(graphs, "fused.onnx", "split", attention="split")
    assert info["attention_split"] == LAYERS and "qattention" not in info
    graph, producer, readers, inits = parts(path)
    ops = Counter(n.op_type for n in graph.node)
    assert ops["Attention"] == ops["QAttention"] == 0 and ops["MultiHeadAttention"] == LAYERS
    weighted, activation = weight_matmuls(graph, producer, inits)
    assert len(weighted) == 6 * LAYERS and not activation
    # MultiHeadAttention reads the projections' float outputs, no Q/DQ in between.
    for node in (n for n in graph.node if n.op_type == "MultiHeadAttention"):
        assert all(producer[name].op_type == "MatMul" for name in node.input[:3])
        assert all(producer[producer[name].input[1]].op_type == "DequantizeLinear" for name in node.input[:3])
    assert ort_ops(path)["MatMulIntegerToFloat"] == 6 * LAYERS
    # QAttention is the same integer arithmetic in one kernel.
    np.testing.assert_allclose(logits(path), logits(default_fused[0]), atol=1e-4)


def test_only_matmuls_read_dequantized_activations(default_fused):
    path, info = default_fused
    graph, producer, readers, inits = parts(path)
    assert info["float_readers"] > 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] in inits:
            continue
        q = producer.get(node.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # an embedding Gather's output, which ORT folds into an int8 Gather
        users = {r.op_type for r in readers[node.output[0]]}
        if "MatMul" in users:
            # The residual Add / LayerNorm read the float tensor, not DQ(Q(x)).
            assert users == {"MatMul"}, (node.name, users)


def test_onnx_runtime_runs_every_weight_matmul_as_matmul_integer_to_float(default_fused):
    ops = ort_ops(default_fused[0])
    assert ops["MatMulIntegerToFloat"] == 3 * LAYERS and ops["QAttention"] == LAYERS
    assert ops["QLinearMatMul"] == 0 and ops["MatMul"] == 0


def test_unfused_graph_keeps_attention_matmuls_float(graphs):
    path, info = quantize(graphs, "fp32.onnx", "default_unfused")
    assert info["placement"] == "weight_inputs" and info["attention_split"] == 0 and "qattention" not in info
    graph, producer, readers, inits = parts(path)
    weighted, activation = weight_matmuls(graph, producer, inits)
    assert len(weighted) == 6 * LAYERS and len(activation) == 2 * LAYERS == info["float_matmuls"]
    for node in activation:
        assert all(producer[name].op_type != "DequantizeLinear" for name in node.input if name in producer), node.name
        assert all(r.op_type != "QuantizeLinear" for r in readers[node.output[0]])
    ops = ort_ops(path)
    assert ops["MatMulIntegerToFloat"] == 6 * LAYERS and ops["QLinearMatMul"] == 0


def test_tensorrt_placement_is_unchanged(graphs):
    """int8 activations (the TensorRT profiles): symmetric Q/DQ on the inputs and outputs of every MatMul."""
    path, info = quantize(graphs, "fp32.onnx", "tensorrt", activation_type="int8")
    assert info["placement"] == "all_matmuls" and "float_readers" not in info and info["attention_split"] == 0
    graph, producer, readers, inits = parts(path)
    weighted, activation = weight_matmuls(graph, producer, inits)
    assert len(weighted) == 6 * LAYERS and len(activation) == 2 * LAYERS
    for node in weighted + activation:
        assert all(producer[name].op_type == "DequantizeLinear" for name in node.input), node.name
        assert {r.op_type for r in readers[node.output[0]]} == {"QuantizeLinear"}, node.name
    zero_points = {i.name: i for i in graph.initializer}
    for node in graph.node:
        if node.op_type == "QuantizeLinear":
            zp = zero_points[node.input[2]]
            assert zp.data_type == onnx.TensorProto.INT8 and not onnx.numpy_helper.to_array(zp).any()


def test_split_attention_is_the_same_arithmetic(graphs, tmp_path):
    root, _, _ = graphs
    model = onnx.load(str(root / "fused.onnx"))
    assert len(split_attention(model)) == LAYERS
    onnx.save(model, str(tmp_path / "split.onnx"))
    np.testing.assert_allclose(logits(tmp_path / "split.onnx"), logits(root / "fused.onnx"), atol=1e-5)


def test_int8_activations_keep_attention_split(graphs):
    """ORT's CPU QAttention takes uint8 input only: with int8 activations the attention stays split, and runs."""
    path, info = quantize(graphs, "fused.onnx", "int8_act", activation_type="int8", placement="weight_inputs")
    assert info["attention_split"] == LAYERS and info["qattention"] == 0
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert ops["QAttention"] == 0 and ops["MultiHeadAttention"] == LAYERS
    assert logits(path).shape == (16, 2)


def test_attention_left_float_stays_fp32(graphs):
    path, info = quantize(graphs, "fused.onnx", "whole", attention="float")
    ops = Counter(n.op_type for n in onnx.load(str(path)).graph.node)
    assert info["attention_split"] == 0 and ops["Attention"] == LAYERS and ops["MultiHeadAttention"] == 0
    assert ops["QAttention"] == 0


def test_logits_stay_closer_to_fp32_than_with_the_old_placement(graphs, default_fused):
    root, _, _ = graphs
    reference = logits(root / "fp32.onnx")
    new = np.abs(logits(default_fused[0]) - reference)
    old_path, _ = quantize(graphs, "fp32.onnx", "old", placement="all_matmuls")
    old = np.abs(logits(old_path) - reference)
    spread = np.abs(reference).max()
    assert new.max() < 0.2 * spread and new.mean() <= old.mean()


def test_profiles_choose_the_placement(tmp_path):
    cpu = load_profile(REPO / "targets" / "cpu.toml").artifact("int8_static")
    assert cpu.fuse and cpu.quantize.resolved_placement() == "weight_inputs" and cpu.quantize.attention == "qattention"
    jetson = load_profile(REPO / "targets" / "jetson.toml").artifact("engine_int8")
    assert not jetson.fuse and jetson.quantize.resolved_placement() == "all_matmuls"
    text = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()
    text = text.replace('quantize = { method = "static", calibration_samples = 16 }',
                        'quantize = { method = "static", calibration_samples = 16, placement = "everywhere" }')
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(ProfileError, match=r"placement = 'everywhere' is not allowed; use one of 'auto', 'weight_inputs', 'all_matmuls'"):
        load_profile(tmp_path / "p.toml")
