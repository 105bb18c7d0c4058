"""Accuracy-aware static int8: hold a static QDQ model to a minimum agreement with the float model.

The quantize stage (recipes/formats/quantize_onnx.py) quantizes once with every eligible node; when the
agreement with the float model on held-out train examples falls short of `quantize.min_agreement`, the
quantized nodes are ranked by how much quantization noise they take on (measured, see `rank_nodes`) and
the noisiest are kept float, as few as reach the bound (at most `quantize.max_float_nodes`).

What this module does not do is quantize: `hold_to_agreement` takes the stage's own quantizer as a
callback (float node names -> finished candidate model), so a kept-float model is built by exactly
the code that builds the plain one, graph edits and QAttention check included.

Standard library only at import time: SCons imports the quantize stage, and with it this module,
while reading the build files.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from recipes.errors import StageError

UNIT = "dB SQNR"
# Held-out examples the sensitivity is measured on (the first of the held-out set). SQNR is an average
# over every element of a tensor: 64 sequences are tens of thousands of token vectors, plenty, while each
# augmented run keeps every Q input and DQ output of a batch in memory.
SENSITIVITY_SAMPLES = 64
DB_CEILING = 200.0  # a noise-free tensor (a Gather's requantized output) measures +inf; JSON has no inf


def holdout_ids(total: int, calibration: list[int], count: int, calibration_samples: int) -> list[int]:
    """`count` train ids the calibration did not take, spread over the (id-sorted) split like the calibration.

    Disjoint from calibration so that agreement is measured on examples the ranges were not fitted to."""
    taken = set(calibration)
    pool = [i for i in range(total) if i not in taken]
    if not pool:
        raise StageError(f"quantize: the train split has {total} example(s) and calibration takes all of them "
                         f"(quantize.calibration_samples = {calibration_samples}), leaving none to measure "
                         f"quantize.min_agreement on; set calibration_samples below {total}, add train data, "
                         "or unset min_agreement")
    step = max(1, len(pool) // count)
    return pool[::step][:count]


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Agreement:
    """Share of held-out examples whose argmax of the logits a model keeps from the float model.

    Both on ONNX Runtime's CPU provider, with the batches padded to the calibration length."""

    def __init__(self, reference: Path, batches: list[dict]):
        self.batches = batches
        self.reference = self._labels(reference)
        self.samples = sum(len(r) for r in self.reference)

    def _labels(self, path: Path) -> list:
        session = _session(path)
        return [session.run(None, feeds)[0].argmax(-1) for feeds in self.batches]

    def __call__(self, path: Path) -> float:
        hits = sum(int((got == want).sum()) for got, want in zip(self._labels(path), self.reference))
        return hits / self.samples


def _pct(share: float) -> str:
    """A share as a percentage, rounded down: 99.96% must not read "100.0%" in a message saying it fell short."""
    return f"{math.floor(share * 1000 + 1e-9) / 10:.1f}%"


def _db(signal: float, noise: float) -> float:
    """The library's SQNR (compute_signal_to_quantization_noice_ratio), from summed squares."""
    eps = sys.float_info.epsilon  # numpy.finfo("float").eps, the library's floor
    ratio = max(math.sqrt(signal), eps) / max(math.sqrt(noise), eps)
    return min(20 * math.log10(ratio), DB_CEILING)


def activation_sqnr(qdq_model: Path, batches: list[dict], work: Path) -> dict[str, float]:
    """SQNR (dB) of every quantized activation: the tensor entering its QuantizeLinear against what its
    DequantizeLinear gives back, in the QDQ model, on `batches`.

    ORT's qdq_loss_debug does the measuring: it adds the Q inputs and DQ outputs as model outputs
    (modify_model_output_intermediate_tensors), runs them (collect_activations) and pairs them by name
    (create_activation_matching). Its compute_activation_error wants every batch of every tensor in memory
    at once (gigabytes at MiniLM sizes), so the batches run one at a time and the squares are summed here;
    the result is the same number, 20 log10(|x| / |x - x^|) over all batches.

    This is the noise a tensor's own Q/DQ adds (the library's "qdq_err"), not the library's float-model
    comparison ("xmodel_err"): that one also carries everything quantized upstream and so would rank
    nodes by depth rather than by their own quantization.
    """
    import numpy as np
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations, create_activation_matching, modify_model_output_intermediate_tensors)

    augmented = work / "sensitivity.onnx"
    modify_model_output_intermediate_tensors(str(qdq_model), str(augmented), ["QuantizeLinear", "DequantizeLinear"])
    energy: dict[str, list[float]] = {}
    for feeds in batches:
        matched = create_activation_matching(collect_activations(str(augmented), [feeds]))
        for name, pair in matched.items():
            (pre,), (post,) = pair["pre_qdq"], pair["post_qdq"]
            pre = pre.astype(np.float64)
            sums = energy.setdefault(name, [0.0, 0.0])
            sums[0] += float(np.square(pre).sum())
            sums[1] += float(np.square(pre - post).sum())
    augmented.unlink()
    return {name: _db(*sums) for name, sums in energy.items()}


def weight_sqnr(float_model: Path, qdq_model: Path) -> dict[str, float]:
    """SQNR (dB) of every quantized constant (weights, embedding tables), by its float name.

    The comparison is the library's (compute_weight_error), the matching is done here: ORT's
    create_weight_matching dequantizes in the stored dtype, so a uint8 constant with a zero point (the
    embedding tables, quantized like activations under uint8) wraps around in `q - zero_point` and
    measures below 0 dB; it also concatenates per-channel weights one column at a time (quadratic).
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from onnxruntime.quantization.qdq_loss_debug import compute_weight_error

    floats = {i.name: i for i in onnx.load(str(float_model)).graph.initializer}
    graph = onnx.load(str(qdq_model)).graph
    inits = {i.name: i for i in graph.initializer}
    matched = {}
    for node in graph.node:
        name = node.input[0].removesuffix("_quantized") if node.op_type == "DequantizeLinear" else ""
        if node.input[0] not in inits or name not in floats:
            continue
        q = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zero = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float64)
                if len(node.input) > 2 and node.input[2] else np.zeros_like(scale))
        if scale.size > 1:  # per axis: one scale per slice along `axis` (DequantizeLinear's default 1)
            axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        matched[name] = {"float": numpy_helper.to_array(floats[name]).astype(np.float64), "dequantized": (q - zero) * scale}
    return {name: min(db, DB_CEILING) for name, db in compute_weight_error(matched).items()}


@dataclass(frozen=True)
class Ranked:
    node: str
    op_type: str
    sqnr_db: float      # of the node's quantization, all its Q/DQ noise together; lower = noisier


def rank_nodes(model: Any, activations: dict[str, float], weights: dict[str, float],
               op_types: tuple[str, ...]) -> list[Ranked]:
    """The quantized nodes of `model` (a loaded QDQ ModelProto), noisiest first.

    A node's quantization is every Q/DQ it reads through (its activation and weight inputs) and every Q
    on its outputs (the all-MatMul placement): exactly what keeping it float removes. Independent noises
    add as powers, so its SQNR is -10 log10(sum of 10^(-SQNR_i/10)) over those tensors.
    """
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)

    def db(table: dict[str, float], key: str, node) -> float:
        if key not in table:  # never ranked by a guess: a noise that was not measured stops the stage
            raise StageError(f"quantize: the quantization noise of {key!r} (read by {node.name}) was not measured, "
                             "so the quantized nodes cannot be ranked; unset quantize.min_agreement")
        return table[key]

    ranked = []
    for node in graph.node:
        if node.op_type not in op_types:
            continue
        measured = []
        for name in node.input:
            dq = producer.get(name)
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            if dq.input[0] in inits:
                measured.append(db(weights, dq.input[0].removesuffix("_quantized"), node))
            else:
                q = producer.get(dq.input[0])
                if q is not None and q.op_type == "QuantizeLinear":
                    measured.append(db(activations, q.input[0], node))
        measured += [db(activations, out, node) for out in node.output
                     if any(r.op_type == "QuantizeLinear" for r in readers.get(out, []))]
        if measured:
            noise = sum(10 ** (-each / 10) for each in measured)
            ranked.append(Ranked(node.name, node.op_type, min(-10 * math.log10(noise), DB_CEILING)))
    # Stable: ties keep graph order, so the ranking (and the model built from it) is reproducible.
    return sorted(ranked, key=lambda r: r.sqnr_db)


def measure_ranking(float_model: Path, qdq_model: Path, batches: list[dict], op_types: tuple[str, ...],
                    work: Path) -> tuple[list[Ranked], int]:
    """`rank_nodes` of the QDQ model, measured on the first held-out batches; and how many examples that was."""
    import onnx

    sample = batches[:max(1, SENSITIVITY_SAMPLES // len(batches[0]["input_ids"]))]
    ranking = rank_nodes(onnx.load(str(qdq_model)), activation_sqnr(qdq_model, sample, work),
                         weight_sqnr(float_model, qdq_model), op_types)
    return ranking, sum(len(b["input_ids"]) for b in sample)


@dataclass(frozen=True)
class Candidate:
    qdq: Path           # the QDQ model as quantized (MatMuls visible), what the sensitivity is measured on
    final: Path         # what would ship (QAttention folded in where it checked out)
    info: dict[str, Any]


def hold_to_agreement(build: Callable[[list[str]], Candidate], agreement: Callable[[Path], float], samples: int,
                      rank: Callable[[Candidate], tuple[list[Ranked], int]], min_agreement: float,
                      max_float_nodes: int) -> tuple[Candidate, dict[str, Any]]:
    """The candidate with the fewest float nodes (the noisiest first) whose measured agreement with the
    float model reaches `min_agreement`, and the record of how it was chosen.

    `build(names)` quantizes with the nodes `names` kept float; `agreement(path)` measures a model on
    `samples` held-out examples; `rank(candidate)` ranks the quantized nodes of the all-quantized candidate.
    Fewer float nodes cannot be assumed to agree less (a tiny model on the edge of its decision boundary
    does not, tests/test_accuracy_aware.py), so monotonicity only chooses what to try next: the search
    measures every try, ships a candidate whose own measurement reached the bound, and when none does, the
    error names the best one measured.
    """
    tries: dict[int, tuple[Candidate, float]] = {}
    order: list[int] = []
    ranking: list[Ranked] = []

    def measure(k: int) -> bool:
        if k not in tries:
            candidate = build([r.node for r in ranking[:k]])
            tries[k] = (candidate, agreement(candidate.final))
            order.append(k)
        return tries[k][1] >= min_agreement

    chosen = 0 if measure(0) else None
    record: dict[str, Any] = {"min_agreement": min_agreement, "max_float_nodes": max_float_nodes,
                              "holdout_samples": samples, "agreement_all_quantized": tries[0][1]}
    if chosen is None:
        ranking, record["sensitivity_samples"] = rank(tries[0][0])
        record["ranking"] = [{"node": r.node, "op_type": r.op_type, "sqnr_db": round(r.sqnr_db, 3)} for r in ranking]
        top = min(max_float_nodes, len(ranking))
        # The most float nodes allowed first: if even they fall short, no bisection is needed to say so.
        if top and measure(top):
            low, high = 1, top  # smallest passing k in [low, high]; `high` always holds a measured pass
            while low < high:
                mid = (low + high) // 2
                if measure(mid):
                    high = mid
                else:
                    low = mid + 1
            chosen = high
    record["tries"] = [{"float_nodes": k, "agreement": tries[k][1]} for k in order]
    if chosen is None:
        best = max(order, key=lambda k: (tries[k][1], -k))
        raise StageError(
            f"quantize: static int8 reached {_pct(tries[best][1])} agreement with the float model on {samples} "
            f"held-out train examples (best of {len(order)} tr{'y' if len(order) == 1 else 'ies'}, {best} of "
            f"{len(ranking)} quantized nodes kept float; quantize.max_float_nodes = {max_float_nodes}) but "
            f"quantize.min_agreement = {min_agreement:g}; raise max_float_nodes, lower min_agreement, "
            "or use method = \"dynamic\"")
    candidate, reached = tries[chosen]
    record["agreement"] = reached
    below = tries.get(chosen - 1)  # measured whenever chosen > 0: bisection only stops next to a failure
    record["float_nodes"] = [{
        "node": r.node, "op_type": r.op_type, "sensitivity": {"value": round(r.sqnr_db, 3), "unit": UNIT},
        "why": (f"kept float: ranked {i} of {len(ranking)} by measured SQNR (noisiest first); needed to reach "
                f"min_agreement {min_agreement:g}: {chosen} float node(s) gave {_pct(reached)}"
                + (f", {chosen - 1} gave {_pct(below[1])}" if below else ""))} for i, r in enumerate(ranking[:chosen], 1)]
    return candidate, record
