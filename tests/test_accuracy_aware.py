"""Accuracy-aware static int8 (quantize.min_agreement): measured ranking, search, record, and failure.

The tiny random BERT agrees 100% with itself in int8: its logits barely depend on the input. Two edits
make a model where quantization matters, and where the answer is known beforehand:
- "edge": the classifier scaled x1000 with its bias at the median margin, so that examples sit on the
  decision boundary and any quantization noise flips some, while float (no Q/DQ at all) flips none;
- an outlier (30x the largest weight) in one weight, quantized per tensor (per_channel = false): that
  node's int8 weight is far the noisiest, so a measured ranking must put it first.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from recipes.errors import ProfileError, StageError
from recipes.formats import quantize_onnx
from recipes.formats.accuracy_aware import Candidate, Ranked, hold_to_agreement
from recipes.formats.quantize_onnx import StaticInt8, quantize_static
from recipes.inputs.data import load_split
from recipes.textenc import Encoder
from recipes.wiring.profile import load_profile
from tiny_model import REPO

NAMES = ("input_ids", "attention_mask", "token_type_ids")
VOCAB = 400
LAYERS = 2
LENGTH = 32
CALIBRATION = 32


@pytest.fixture(scope="module")
def graphs(tmp_path_factory, tiny_rows, exported_classifier):
    """The tiny BERT classifier exported (fp32) and fused, its tokenizer and an 80-example train split."""
    root = exported_classifier(3, tmp_path_factory.mktemp("accuracy_aware"), fused=True)
    model = root / "m"
    assert json.loads((model / "config.json").read_text())["vocab_size"] == VOCAB
    train = root / "train.jsonl"
    train.write_text("".join(json.dumps({"id": f"t{i:03d}", "text": r["text"], "label": r["label"]}) + "\n"
                             for i, r in enumerate(tiny_rows)))
    return root, model / "tokenizer.json", train


def holdout_feeds(graphs) -> dict:
    """The train examples calibration does not take (every other one of the first 64), encoded here."""
    root, tokenizer, train = graphs
    examples = load_split(train)
    calibration = set(range(len(examples))[:: len(examples) // CALIBRATION][:CALIBRATION])
    texts = [e.text for i, e in enumerate(examples) if i not in calibration]
    assert len(texts) == len(examples) - CALIBRATION
    return Encoder(tokenizer, LENGTH).encode(texts, NAMES, pad_to=LENGTH)


def logits(path: Path, feeds: dict) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def agreement(graphs, reference: Path, path: Path) -> float:
    feeds = holdout_feeds(graphs)
    return float((logits(reference, feeds).argmax(-1) == logits(path, feeds).argmax(-1)).mean())


def edited(graphs, src: str, name: str, outlier: str | None = None, edge: bool = True) -> tuple[Path, str | None]:
    """`src` with an outlier in one weight (`outlier`: "ffn", the first FFN output MatMul, or "q", layer 0's
    packed Attention weight in its Q columns) and, with `edge`, the classifier on its decision boundary.
    Returns the model and the node the outlier is in (as quantize names it)."""
    root, _, train = graphs
    model = onnx.load(str(root / src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}

    def put(name: str, array: np.ndarray) -> None:
        inits[name].CopyFrom(numpy_helper.from_array(array.astype(np.float32), name))

    node = None
    if outlier == "ffn":
        target = next(n for n in graph.node if n.op_type == "MatMul" and n.input[1] in inits
                      and list(inits[n.input[1]].dims) == [64, 32])
        node = target.name
    elif outlier == "q":
        target = next(n for n in graph.node if n.op_type == "Attention")
        node = f"{target.name}/q_proj"
    if outlier:
        w = numpy_helper.to_array(inits[target.input[1]]).copy()
        w[0, 0] = 30 * np.abs(w).max()
        put(target.input[1], w)
    if edge:
        head = next(n for n in graph.node if n.op_type == "Gemm" and "classifier.weight" in n.input)
        put(head.input[1], numpy_helper.to_array(inits[head.input[1]]) * 1000)
        onnx.save(model, str(root / f"{name}.onnx"))
        out = logits(root / f"{name}.onnx", holdout_feeds(graphs))
        bias = np.array([0.0, -np.median(out[:, 1] - out[:, 0])], np.float32)
        graph.initializer.append(numpy_helper.from_array(bias, "edge_bias"))
        head.input.append("edge_bias")
    onnx.save(model, str(root / f"{name}.onnx"))
    return root / f"{name}.onnx", node


def quantize(graphs, src: Path, name: str, **fields) -> tuple[Path, dict]:
    root, tokenizer, train = graphs
    dst = root / "out" / f"{name}.onnx"
    info = quantize_static(src, dst, train, tokenizer, StaticInt8("static", calibration_samples=CALIBRATION, **fields),
                           NAMES, LENGTH)
    return dst, info


def dequantized_inputs(path: Path, node_name: str) -> list[bool]:
    """For each input of `node_name`: is it a DequantizeLinear's output?"""
    graph = onnx.load(str(path)).graph
    producer = {o: n for n in graph.node for o in n.output}
    node = next(n for n in graph.node if n.name == node_name)
    return [name in producer and producer[name].op_type == "DequantizeLinear" for name in node.input]


def per_tensor_int8_sqnr(w: np.ndarray) -> float:
    """Symmetric per-tensor int8 ([-127, 127], ORT's weights), measured independently of the stage."""
    scale = np.abs(w).max() / 127
    q = np.clip(np.round(w / scale), -127, 127) * scale
    return 20 * math.log10(np.linalg.norm(w) / np.linalg.norm(w - q))


@pytest.fixture(scope="module")
def edge_ffn(graphs):
    """The fused graph with the FFN outlier on the edge, quantized plainly (option off)."""
    src, node = edited(graphs, "fused.onnx", "edge_ffn", outlier="ffn")
    dst, info = quantize(graphs, src, "edge_ffn_off", per_channel=False)
    return src, node, dst, info


def test_bound_already_met_is_the_plain_model(graphs):
    root, _, _ = graphs
    plain, plain_info = quantize(graphs, root / "fused.onnx", "plain")
    held, info = quantize(graphs, root / "fused.onnx", "held", min_agreement=0.9)
    record = info.pop("accuracy_aware")
    assert held.read_bytes() == plain.read_bytes() and info == plain_info
    assert record["float_nodes"] == [] and record["tries"] == [{"float_nodes": 0, "agreement": record["agreement"]}]
    assert record["agreement"] == record["agreement_all_quantized"] == agreement(graphs, root / "fused.onnx", plain)
    assert record["agreement"] >= 0.9 and record["holdout_samples"] == 48 and "ranking" not in record


def test_float_nodes_are_the_noisiest_by_measurement(graphs, edge_ffn):
    src, outlier, plain, _ = edge_ffn
    path, info = quantize(graphs, src, "edge_ffn_held", per_channel=False, min_agreement=1.0, max_float_nodes=100)
    record = info["accuracy_aware"]
    # The edge model disagrees once quantized: float nodes were needed.
    assert record["agreement_all_quantized"] == agreement(graphs, src, plain) < 1.0
    ranking = record["ranking"]
    assert [r["sqnr_db"] for r in ranking] == sorted(r["sqnr_db"] for r in ranking)
    assert {r["op_type"] for r in ranking} == {"MatMul", "Gather"} and len(ranking) == 6 * LAYERS + 3
    # The outlier's node ranks first, by a wide margin, at the SQNR its per-tensor int8 weight measures
    # on its own (its input's 8 bits add a little noise on top, never take any away).
    assert ranking[0]["node"] == outlier and ranking[0]["sqnr_db"] < ranking[1]["sqnr_db"] - 10
    weight = next(i for i in onnx.load(str(src)).graph.initializer
                  if i.name == next(n for n in onnx.load(str(src)).graph.node if n.name == outlier).input[1])
    own = per_tensor_int8_sqnr(numpy_helper.to_array(weight).astype(np.float64))
    assert own - 1.0 < ranking[0]["sqnr_db"] <= own + 0.01
    # The float nodes are the top of that ranking, each with its measured number and reason.
    k = len(record["float_nodes"])
    assert k >= 1 and [f["node"] for f in record["float_nodes"]] == [r["node"] for r in ranking[:k]]
    for i, (f, r) in enumerate(zip(record["float_nodes"], ranking), 1):
        assert f["op_type"] == r["op_type"] and f["sensitivity"] == {"value": r["sqnr_db"], "unit": "dB SQNR"}
        assert f["why"].startswith(f"kept float: ranked {i} of {len(ranking)} by measured SQNR")
    # The bound is reached, by the model shipped (measured again here), and one float node fewer did not.
    tries = {t["float_nodes"]: t["agreement"] for t in record["tries"]}
    assert record["agreement"] == tries[k] == agreement(graphs, src, path) == 1.0
    assert tries[k - 1] < 1.0 and list(tries)[0] == 0
    # Kept float means float: no kept node reads a DequantizeLinear.
    for f in record["float_nodes"]:
        if any(n.name == f["node"] for n in onnx.load(str(path)).graph.node):
            assert not any(dequantized_inputs(path, f["node"])), f["node"]


def test_unreachable_bound_fails_in_one_line_naming_the_best(graphs, edge_ffn):
    src, _, plain, _ = edge_ffn
    root, tokenizer, train = graphs
    dst = root / "unreachable" / "model.onnx"
    with pytest.raises(StageError) as e:
        quantize_static(src, dst, train, tokenizer, StaticInt8("static", calibration_samples=CALIBRATION, per_channel=False,
                                                               min_agreement=1.0, max_float_nodes=1), NAMES, LENGTH)
    message = str(e.value)
    assert "\n" not in message, message
    found = re.fullmatch(r"quantize: static int8 reached (\d+\.\d)% agreement with the float model on 48 held-out "
                         r"train examples \(best of 2 tries, ([01]) of 15 quantized nodes kept float; "
                         r"quantize\.max_float_nodes = 1\) but quantize\.min_agreement = 1; raise max_float_nodes, "
                         r"lower min_agreement, or use method = \"dynamic\"", message)
    assert found, message
    # The best of the tries: at least the all-quantized model's agreement, measured here.
    assert math.floor(1000 * agreement(graphs, src, plain) + 1e-9) / 10 <= float(found[1]) < 100
    assert not dst.exists() and list(dst.parent.iterdir()) == []


def test_a_split_with_nothing_left_to_hold_out_fails_in_one_line(graphs):
    root, tokenizer, train = graphs
    dst = root / "small" / "model.onnx"
    with pytest.raises(StageError) as e:
        quantize_static(root / "fused.onnx", dst, train, tokenizer,
                        StaticInt8("static", calibration_samples=80, min_agreement=0.9), NAMES, LENGTH)
    assert "\n" not in str(e.value)
    assert "has 80 example(s) and calibration takes all of them (quantize.calibration_samples = 80)" in str(e.value)
    assert "set calibration_samples below 80" in str(e.value) and not dst.exists()


class FirstTryFails:
    """Agreement stand-in: the all-quantized model (the first measured) fails, every later try passes, so
    the search keeps exactly the top-ranked node float; what is under test is the graph that makes."""

    def __init__(self, reference: Path, batches: list[dict]):
        self.samples, self.calls = sum(len(b["input_ids"]) for b in batches), 0

    def __call__(self, path: Path) -> float:
        self.calls += 1
        return 0.5 if self.calls == 1 else 1.0


def test_a_float_projection_keeps_its_attention_out_of_qattention(graphs, monkeypatch):
    monkeypatch.setattr(quantize_onnx, "Agreement", FirstTryFails)
    src, outlier = edited(graphs, "fused.onnx", "q_outlier", outlier="q", edge=False)
    path, info = quantize(graphs, src, "q_held", per_channel=False, min_agreement=0.9, max_float_nodes=4)
    record = info["accuracy_aware"]
    assert [f["node"] for f in record["float_nodes"]] == [outlier] == [record["ranking"][0]["node"]]
    assert [t["float_nodes"] for t in record["tries"]] == [0, 4, 2, 1]
    graph = onnx.load(str(path)).graph
    ops = Counter(n.op_type for n in graph.node)
    # Layer 0 stays split (its Q projection float, K and V int8); layer 1 still folds, and was checked.
    assert ops["QAttention"] == info["qattention"] == LAYERS - 1 and ops["MultiHeadAttention"] == 1
    assert info["qattention_max_abs_diff"] <= 1e-3
    assert dequantized_inputs(path, outlier) == [False, False]
    for sibling in ("k_proj", "v_proj"):
        assert dequantized_inputs(path, outlier.replace("q_proj", sibling)) == [True, True]
    assert logits(path, holdout_feeds(graphs)).shape == (48, 2)


def test_all_matmuls_placement_keeps_a_float_node_float(graphs, monkeypatch):
    """TensorRT's placement (int8 activations, Q/DQ on every MatMul's inputs and outputs)."""
    monkeypatch.setattr(quantize_onnx, "Agreement", FirstTryFails)
    src, outlier = edited(graphs, "fp32.onnx", "ffn_outlier_unfused", outlier="ffn", edge=False)
    path, info = quantize(graphs, src, "ffn_all_matmuls", activation_type="int8", per_channel=False,
                          min_agreement=0.9, max_float_nodes=1)
    assert info["placement"] == "all_matmuls"
    assert [f["node"] for f in info["accuracy_aware"]["float_nodes"]] == [outlier]
    graph = onnx.load(str(path)).graph
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n.op_type)
    node = next(n for n in graph.node if n.name == outlier)
    assert dequantized_inputs(path, outlier) == [False, False] and "QuantizeLinear" not in readers[node.output[0]]
    others = [n for n in graph.node if n.op_type == "MatMul" and n.name != outlier]
    assert len(others) == 8 * LAYERS - 1 and all(all(dequantized_inputs(path, n.name)) for n in others)
    assert logits(path, holdout_feeds(graphs)).shape == (48, 2)


@pytest.mark.parametrize("src, attention, ops", [
    ("fused.onnx", "split", {"MultiHeadAttention": LAYERS, "QAttention": 0}),
    ("fused.onnx", "float", {"Attention": LAYERS, "MultiHeadAttention": 0}),
    ("fp32.onnx", "qattention", {"Attention": 0, "MultiHeadAttention": 0}),  # unfused: nothing to split
])
def test_every_attention_mode_takes_float_nodes(graphs, monkeypatch, src, attention, ops):
    monkeypatch.setattr(quantize_onnx, "Agreement", FirstTryFails)
    path, outlier = edited(graphs, src, f"ffn_{attention}_{src[:-5]}", outlier="ffn", edge=False)
    out, info = quantize(graphs, path, f"ffn_{attention}_{src[:-5]}_held", per_channel=False, attention=attention,
                         min_agreement=0.9, max_float_nodes=2)
    assert [f["node"] for f in info["accuracy_aware"]["float_nodes"]] == [outlier]
    assert dequantized_inputs(out, outlier) == [False, False]
    graph = onnx.load(str(out)).graph
    count = Counter(n.op_type for n in graph.node)
    assert {op: count[op] for op in ops} == ops
    # The rest stays quantized: every other weight MatMul still reads a dequantized weight.
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    weighted = [n for n in graph.node if n.op_type == "MatMul" and n.name != outlier
                and (n.input[1] in inits or producer.get(n.input[1], n).op_type == "DequantizeLinear")]
    assert weighted and all(dequantized_inputs(out, n.name)[1] for n in weighted)
    assert logits(out, holdout_feeds(graphs)).shape == (48, 2)


def test_search_ships_only_what_it_measured():
    """Agreement need not grow with float nodes (a model on its decision boundary, as above, does not):
    the candidate shipped is a measured pass, the one below it a measured fail, and an unreachable bound
    names the best try."""
    non_monotone = {0: 0.80, 1: 0.85, 2: 0.90, 3: 0.97, 4: 0.93, 5: 0.96, 6: 0.98, 8: 0.99}
    ranking = [Ranked(f"n{i}", "MatMul", 20.0 + i) for i in range(8)]

    def run(bound: float, most: int, measured: dict[int, float] = non_monotone):
        def build(names: list[str]) -> Candidate:
            assert names == [r.node for r in ranking[:len(names)]]  # always the top of the ranking
            return Candidate(Path(f"k{len(names)}"), Path(f"k{len(names)}"), {})

        return hold_to_agreement(build, lambda path: measured[int(path.name[1:])], 100,
                                 lambda all_quantized: (ranking, 100), bound, most)

    # 8 passes, 4 fails (though 3 passes), 6 passes, 5 passes: five float nodes, not three.
    candidate, record = run(0.95, 8)
    assert [t["float_nodes"] for t in record["tries"]] == [0, 8, 4, 6, 5]
    assert candidate.final == Path("k5") and record["agreement"] == 0.96
    assert [f["node"] for f in record["float_nodes"]] == ["n0", "n1", "n2", "n3", "n4"]
    assert record["float_nodes"][4]["why"] == ("kept float: ranked 5 of 8 by measured SQNR (noisiest first); needed "
                                               "to reach min_agreement 0.95: 5 float node(s) gave 96.0%, 4 gave 93.0%")
    # The last try is not what ships: 4 passed, then 2 and 3 failed.
    candidate, record = run(0.95, 8, {0: 0.80, 2: 0.90, 3: 0.94, 4: 0.96, 8: 0.99})
    assert [t["float_nodes"] for t in record["tries"]] == [0, 8, 4, 2, 3]
    assert candidate.final == Path("k4") and record["agreement"] == 0.96 and len(record["float_nodes"]) == 4
    with pytest.raises(StageError, match=r"^quantize: static int8 reached 97\.0% agreement with the float model on 100 "
                                         r"held-out train examples \(best of 2 tries, 3 of 8 quantized nodes kept "
                                         r"float; quantize\.max_float_nodes = 3\) but quantize\.min_agreement = 0\.98;"):
        run(0.98, 3)


@pytest.mark.parametrize("edit, fragment", [
    ("min_agreement = 1.5", "artifacts[2].quantize.min_agreement = 1.5: need 0 <= min_agreement <= 1"),
    ("min_agreement = -0.1", "artifacts[2].quantize.min_agreement = -0.1: need 0 <= min_agreement <= 1"),
    ("min_agreement = 0.97, max_float_nodes = -1", "artifacts[2].quantize.max_float_nodes = -1: need 0 <= max_float_nodes"),
    ("min_agreement = 0.97, holdout_samples = 0", "artifacts[2].quantize.holdout_samples = 0: need 1 <= holdout_samples"),
    ('min_agreement = "high"', "artifacts[2].quantize.min_agreement = 'high': expected a number"),
])
def test_profile_checks_the_new_fields_in_one_line(tmp_path, edit, fragment):
    old = 'quantize = { method = "static", calibration_samples = 16 }'
    text = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()
    assert old in text
    path = tmp_path / "p.toml"
    path.write_text(text.replace(old, old.replace(" }", f", {edit} }}")))
    with pytest.raises(ProfileError) as e:
        load_profile(path)
    message = str(e.value)
    assert message.startswith(str(path)) and "\n" not in message and fragment in message, message


def test_profile_takes_the_new_fields(tmp_path):
    old = 'quantize = { method = "static", calibration_samples = 16 }'
    text = (REPO / "tests" / "fixtures" / "tiny.toml").read_text()
    path = tmp_path / "p.toml"
    path.write_text(text.replace(old, old.replace(" }", ", min_agreement = 0.97, max_float_nodes = 4 }")))
    q = load_profile(path).artifact("int8_static").quantize
    assert (q.min_agreement, q.max_float_nodes, q.holdout_samples) == (0.97, 4, 256)
    assert StaticInt8("static").min_agreement is None
