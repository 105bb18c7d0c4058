"""ONNX variants on a tiny exported model: ORT fusion, int4 weight-only and fp16."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from recipes.formats.fuse_onnx import fuse, split_skip_layernorm
from recipes.formats.model_io import verification_inputs
from recipes.wiring.profile import DynamicInt8, Fp16, WeightOnlyInt4
from recipes.formats.quantize_onnx import convert_fp16, quantize_dynamic, quantize_int4
from recipes.measure.runners import OnnxRunner

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def ops(path: Path) -> Counter:
    return Counter(n.op_type for n in onnx.load(str(path)).graph.node)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, exported_classifier):
    root = exported_classifier(5, tmp_path_factory.mktemp("variants"))
    return root, root / "fp32.onnx"


def logits(path: Path, batch: int = 3, seq: int = 20) -> np.ndarray:
    return OnnxRunner(path, threads=1)(verification_inputs(400, NAMES, batch, seq, seed=9))


def test_fusion_gives_ort_kernels_with_identical_logits(exported):
    root, fp32 = exported
    info = fuse(fp32, root / "fused.onnx", root / "fuse.json", NAMES, 400, 1e-4, 64)
    counts = ops(root / "fused.onnx")
    assert counts["Attention"] == 2 and counts["BiasGelu"] == 2
    # Fused to SkipLayerNormalization, then split again into Add + LayerNormalization (the faster kernels).
    assert info["fusions"]["skip_layer_normalization"] == info["skip_layernorm_split"] == 4
    assert "SkipLayerNormalization" not in counts and counts["LayerNormalization"] == 5
    assert info["attention_qkv_attribute_dropped"] == 2
    # The padding mask reaches Attention as mask_index, which QAttention keeps
    # (ORT's quantizer drops an attention_bias input without a word).
    assert info["attention_mask_as_mask_index"] == 2
    np.testing.assert_allclose(logits(root / "fused.onnx"), logits(fp32), atol=1e-5)
    # Dynamic int8 of the fused graph quantizes attention too.
    quantize_dynamic(root / "fused.onnx", root / "fused_int8.onnx", DynamicInt8(method="dynamic"))
    assert ops(root / "fused_int8.onnx")["QAttention"] == 2
    qattention = [n for n in onnx.load(str(root / "fused_int8.onnx")).graph.node if n.op_type == "QAttention"]
    assert all(n.input[5] == "attention_mask_int32" for n in qattention)
    assert logits(root / "fused_int8.onnx").shape == (3, 2)


def test_int4_weight_only_quantizes_matmuls_and_embeddings(exported):
    root, fp32 = exported
    quantize_int4(fp32, root / "int4.onnx", WeightOnlyInt4(method="weight_only", block_size=16, quantize_embeddings=True))
    counts = ops(root / "int4.onnx")
    assert counts["MatMulNBits"] >= 12 and counts["GatherBlockQuantized"] >= 1
    # Tiny matrices carry relatively many scales; MiniLM reaches 0.17x (bench/results/sst2.md).
    assert (root / "int4.onnx").stat().st_size < 0.7 * fp32.stat().st_size
    plain = root / "int4_plain.onnx"
    quantize_int4(fp32, plain, WeightOnlyInt4(method="weight_only", block_size=16))
    assert ops(plain)["GatherBlockQuantized"] == 0 and plain.stat().st_size > (root / "int4.onnx").stat().st_size
    assert np.abs(logits(root / "int4.onnx") - logits(fp32)).max() < 0.5


def test_fp16_keeps_io_types(exported):
    root, fp32 = exported
    convert_fp16(fp32, root / "fp16.onnx", Fp16(method="fp16", keep_io_types=True))
    graph = onnx.load(str(root / "fp16.onnx")).graph
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    np.testing.assert_allclose(logits(root / "fp16.onnx"), logits(fp32), atol=2e-2)


@pytest.mark.parametrize("with_bias, sum_consumed", [(True, True), (False, False), (True, False)])
def test_split_skip_layernorm_computes_what_the_contrib_op_does(tmp_path, with_bias, sum_consumed):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    hidden = 24
    inits = [numpy_helper.from_array(rng.normal(size=hidden).astype(np.float32), n) for n in ("gamma", "beta", "bias")]
    inputs = ["x", "skip", "gamma", "beta"] + (["bias"] if with_bias else [])
    outputs = ["y", "", "", "sum"] if sum_consumed else ["y"]
    nodes = [helper.make_node("SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=1e-5, name="sln")]
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if sum_consumed:
        nodes.append(helper.make_node("Relu", ["sum"], ["relu_sum"]))
        graph_outputs.append(helper.make_tensor_value_info("relu_sum", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, hidden]) for n in ("x", "skip")],
                              graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])
    feeds = {n: rng.normal(size=(2, 5, hidden)).astype(np.float32) for n in ("x", "skip")}
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert split_skip_layernorm(model) == 1
    assert [n.op_type for n in model.graph.node if n.op_type != "Relu"] == ["Add"] * (1 + with_bias) + ["LayerNormalization"]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    for w, g in zip(want, got):
        np.testing.assert_allclose(g, w, atol=1e-5)

