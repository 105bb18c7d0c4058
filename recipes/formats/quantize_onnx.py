"""ONNX quantization: ORT dynamic int8, static QDQ int8 calibrated on the
train split, int4 weight-only (MatMulNBits) and fp16.

Thin, typed wrappers around onnxruntime.quantization and ORT's float16
converter; what they add is the calibration reader over our own train split
and the mapping of profile knobs onto their arguments. Static int8 adds three
graph edits ORT's quantizer has no option for (bench/results/static_int8.md
measures why): fused Attention split into quantizable MatMuls and, after
quantization, folded into QAttention; and the readers of a quantized tensor
other than its MatMuls (the residual Adds) put back on the float tensor.
"""
from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from recipes.formats.accuracy_aware import Agreement, Candidate, hold_to_agreement, holdout_ids, measure_ranking
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.fsutil import atomic_path, write_json
from recipes.inputs.data import load_split
from recipes.params import MAX_SAMPLES, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import Stage, tagged

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph

@dataclass(frozen=True)
class StaticInt8:
    method: Literal["static"]
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    calibration_samples: int = bounded(128, min=1, max=MAX_SAMPLES)
    # Calibration examples per batch; the histogram calibrators need equal batches.
    calibration_batch: int = bounded(8, min=1, max=4096)
    # Per output column of each weight: per-tensor scales cost agreement (95.9% against 98.2% on SST-2 dev).
    per_channel: bool = True
    op_types: tuple[str, ...] = ("MatMul",)
    # uint8 (asymmetric) for ONNX Runtime on x86: int8 activations agreed less (97.5%) and ran 1.8-2.2x (batch 1)
    # the dynamic model's latency on AVX2 without VNNI. int8 (symmetric, zero points 0) is what TensorRT takes.
    activation_type: Literal["uint8", "int8"] = "uint8"
    # The embedding tables are weight-only int8 in the QDQ model too.
    quantize_embeddings: bool = True
    # Where the QuantizeLinear/DequantizeLinear pairs go (numbers: bench/results/static_int8.md, MiniLM teacher,
    # SST-2 dev, 2 AVX2 cores without VNNI, latency as a ratio to the fused dynamic int8 model).
    # "weight_inputs": only on the two inputs of MatMuls whose B is a constant weight. ORT's CPU EP fuses
    #   each DQ,DQ -> MatMul into MatMulIntegerToFloat (uint8 x int8 GEMM, float out); the attention
    #   score/context MatMuls (activation x activation), the MatMul outputs and the other readers of a
    #   quantized tensor (the residual Adds) stay float. Same unfused graph: agreement with fp32 94.4% -> 98.2%.
    # "all_matmuls": ORT's default QDQ placement: inputs and outputs of every MatMul in op_types, attention's
    #   two included, and every reader takes the dequantized tensor. ORT runs it as QLinearMatMul, and every
    #   bias Add, Softmax, GELU and residual between them needs a DQ before and a Q after: 1.2-1.3x (batch 1) and
    #   1.4x (batch 32) the dynamic model's latency, and the least faithful (softmax probabilities in uint8).
    #   TensorRT's explicit quantization is built on it (a strongly typed engine runs whatever is not QDQ'd
    #   in fp32), so the TensorRT profiles keep it.
    # "auto": "all_matmuls" for int8 activations (the TensorRT profiles' symmetric QDQ), "weight_inputs" for
    #   uint8 (ONNX Runtime). A profile running ORT with int8 activations (arm64) should say "weight_inputs".
    placement: Literal["auto", "weight_inputs", "all_matmuls"] = "auto"
    # What becomes of a fused graph's com.microsoft Attention nodes (the artifact's `fuse = true`; no effect
    # on an unfused graph). QDQ cannot reach the packed QKV weight inside Attention, so left alone
    # ("float") the QKV projections stay fp32: about 1.1x the dynamic model's latency at batch 1, and
    # 31.5 MB against 23.5 (over the cpu profile's 30 MB gate).
    # "split": Q/K/V projection MatMuls, quantized like the others, and a MultiHeadAttention over their
    #   float outputs; same arithmetic (checked on a calibration batch), pure QDQ. MultiHeadAttention adds
    #   the bias and transposes Q, K and V to heads-first in passes of its own: 1.01-1.06x.
    # "qattention": then, with the "weight_inputs" placement and uint8 activations (ORT's CPU QAttention has no
    #   int8-input kernel; otherwise it stays split), each split attention is folded into ORT's int8
    #   QAttention (the dynamic model's attention kernel): input quantized by the calibrated QuantizeLinear
    #   the projections shared, weights the projections' per-channel int8 concatenated; outputs checked
    #   identical to the split model's on a calibration batch (else the split model is kept and the report
    #   says so). One GEMM writes Q/K/V heads-first: 0.96-0.99x the dynamic model, same agreement (98.2%).
    attention: Literal["qattention", "split", "float"] = "qattention"
    # Accuracy-aware static int8 (recipes/formats/accuracy_aware.py). The least agreement with the float
    # model (same argmax of the logits, ONNX Runtime CPU, at the calibration length) the quantized model
    # must reach on held-out train examples. When full quantization falls short, the quantized nodes whose
    # quantization measured noisiest (lowest SQNR) stay float, as few as reach it; quantize.json records
    # which and why. None: off (one quantization, the same bytes as before the option existed).
    min_agreement: float | None = bounded(None, min=0.0, max=1.0)
    # The most quantized nodes (MatMul, Gather) that may stay float before the stage fails rather than ship a
    # slower model: each costs an fp32 weight (size) and GEMM (speed); a float projection also keeps its
    # attention out of QAttention.
    max_float_nodes: int = bounded(12, min=0, max=100_000)
    # Train examples agreement is measured on, none of them calibration examples (so the ranges were not
    # fitted to them); 256 resolve agreement to 0.4%. A smaller split gives what is left after calibration.
    holdout_samples: int = bounded(256, min=1, max=MAX_SAMPLES)

    def resolved_placement(self) -> str:
        if self.placement != "auto":
            return self.placement
        return "all_matmuls" if self.activation_type == "int8" else "weight_inputs"


@dataclass(frozen=True)
class WeightOnlyInt4:
    method: Literal["weight_only"]
    # MatMulNBits packs blocks of a power of two, at least 16 weights.
    block_size: int = bounded(32, min=16, max=256)
    symmetric: bool = True
    # ONNX Runtime's accuracy levels: 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 compute.
    accuracy_level: int = bounded(4, min=0, max=4)
    quantize_embeddings: bool = False


@dataclass(frozen=True)
class Fp16:
    method: Literal["fp16"]
    keep_io_types: bool = True


OnnxQuantSpec = DynamicInt8 | StaticInt8 | WeightOnlyInt4 | Fp16
ONNX_QUANTIZERS = tagged(DynamicInt8, StaticInt8, WeightOnlyInt4, Fp16)


def _preprocess(src: Path, dst: Path) -> None:
    """ORT's recommended pre-pass: shape inference and graph cleanup."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # Symbolic shape inference does not understand every op the dynamo
    # exporter emits; ONNX shape inference is enough for quantization.
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)


def quantize_dynamic(src: Path, dst: Path, params: DynamicInt8) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic as ort_quantize_dynamic

    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        pre = Path(work) / "pre.onnx"
        _preprocess(src, pre)
        ort_quantize_dynamic(
            str(pre),
            str(tmp),
            weight_type=QuantType.QInt8,
            per_channel=params.per_channel,
            reduce_range=params.reduce_range,
            op_types_to_quantize=list(params.op_types),
        )
    return {"method": "dynamic", "op_types": list(params.op_types), "per_channel": params.per_channel}


class _TrainSplitReader:
    """Feeds tokenized train examples, padded to one fixed length.

    Fixed length because ORT's Percentile and Entropy calibrators stack
    activations across batches and need identical shapes.
    """

    def __init__(self, texts: list[str], encoder: Encoder, input_names: tuple[str, ...], length: int, batch_size: int):
        # Equal batches too: the histogram calibrators also stack along the
        # batch axis, so a short last batch is dropped (when there are others).
        if len(texts) > batch_size:
            texts = texts[: len(texts) - len(texts) % batch_size]
        self.samples = len(texts)
        self.batches = [
            encoder.encode(texts[i:i + batch_size], input_names, pad_to=length) for i in range(0, len(texts), batch_size)
        ]
        self._iter = iter(self.batches)

    def get_next(self):
        return next(self._iter, None)

    def rewind(self):
        self._iter = iter(self.batches)


CALIBRATORS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}
ATTENTION_ATTRIBUTES = {"num_heads", "scale", "mask_filter_value"}  # what MultiHeadAttention means the same way
SAME_FP32 = 1e-4  # max logit change allowed for a rewrite that keeps fp32 arithmetic (the export's atol)
SAME_INT8 = 1e-3  # ... and for one that only moves integer arithmetic into another kernel


def split_attention(model) -> list[str]:
    """Replace each com.microsoft Attention (constant packed QKV weight and bias) by three projection
    MatMuls and a MultiHeadAttention that adds the bias, applies the mask and attends.

    Attention hides its projection weight inside the op, where QDQ cannot reach it; as plain MatMuls
    the projections are quantized like every other weight. Nodes with inputs or attributes that
    MultiHeadAttention does not take the same way (past state, attention bias, unidirectional, unequal
    q/k/v sizes) are left as they are.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    nodes, changed = [], []
    for node in model.graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        inputs = list(node.input) + [""] * max(0, 6 - len(node.input))
        weight = inits.get(inputs[1])
        if (node.op_type != "Attention" or node.domain != "com.microsoft" or weight is None or inputs[2] not in inits
                or any(inputs[4:]) or len(node.output) > 1 or set(attrs) - ATTENTION_ATTRIBUTES
                or len(weight.dims) != 2 or weight.dims[1] % 3):
            nodes.append(node)
            continue
        w = numpy_helper.to_array(weight)
        width = w.shape[1] // 3
        base = node.name or node.output[0]
        projected = []
        for i, part in enumerate("qkv"):
            name = f"{base}/{part}_weight"
            part_weight = np.ascontiguousarray(w[:, i * width:(i + 1) * width])
            model.graph.initializer.append(numpy_helper.from_array(part_weight, name))
            projected.append(f"{base}/{part}")
            nodes.append(helper.make_node("MatMul", [inputs[0], name], [projected[-1]], name=f"{base}/{part}_proj"))
        mha_inputs = projected + [inputs[2]] + ([inputs[3]] if inputs[3] else [])
        nodes.append(helper.make_node("MultiHeadAttention", mha_inputs, [node.output[0]], name=f"{base}/mha",
                                      domain="com.microsoft", **attrs))
        changed.append(nodes[-1].name)
    if changed:
        used = {name for n in nodes for name in n.input}
        kept = [i for i in model.graph.initializer if i.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
        del model.graph.node[:]
        model.graph.node.extend(nodes)
    return changed


def activation_matmuls(model) -> list[str]:
    """Names of MatMuls whose B is not a constant (attention's Q.K^T and probs.V); names any unnamed node."""
    inits = {i.name for i in model.graph.initializer}
    names = {n.name for n in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{i}"
            while node.name in names:
                node.name += "_"
            names.add(node.name)
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] not in inits]


def float_to_other_readers(model, quantized_ops: tuple[str, ...] = ("MatMul",)) -> int:
    """Where a tensor x was quantized for a MatMul (x -> Q -> DQ -> MatMul), its other readers (the
    residual Add, LayerNorm) get x itself instead of DQ(Q(x)), as in the dynamic model.

    ORT's QDQ quantizer hands one DQ output to every reader; the residual stream then loses precision
    and pays a DequantizeLinear per layer that no kernel fuses. Pairs not made for a MatMul (the
    embedding Gathers' own Q/DQ, which ORT folds into an int8 Gather) are left alone.
    """
    producer = {out: n for n in model.graph.node for out in n.output}
    readers: dict[str, list] = {}
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            readers.setdefault(name, []).append((n, i))
    changed = 0
    for dq in model.graph.node:
        q = producer.get(dq.input[0]) if dq.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear":
            continue
        users = readers.get(dq.output[0], [])
        if not any(n.op_type in quantized_ops for n, _ in users):
            continue
        for n, i in users:
            if n.op_type not in quantized_ops:
                n.input[i] = q.input[0]
                changed += 1
    return changed


def fuse_qattention(model, attentions: list[str]) -> int:
    """Fold each split attention (MultiHeadAttention named in `attentions`, fed by three MatMuls of one
    statically quantized input and per-channel int8 weights) into one com.microsoft QAttention.

    The calibrated QuantizeLinear the three projections share becomes QAttention's input (its scale and
    zero point the input's); the three int8 weights, scales and zero points are concatenated Q|K|V, the
    layout Attention packs them in. Anything not matching that pattern is left split.
    """
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    producer = {out: n for n in graph.node for out in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for name in n.input:
            readers.setdefault(name, []).append(n)

    def made_by(name: str, op_type: str):
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    fused: dict[str, Any] = {}
    dropped: set[int] = set()
    for mha in graph.node:
        if mha.op_type != "MultiHeadAttention" or mha.name not in attentions or len(mha.input) not in (4, 5):
            continue
        projections = [made_by(name, "MatMul") for name in mha.input[:3]]
        if any(m is None or len(readers[m.output[0]]) != 1 for m in projections):
            continue
        acts = [made_by(m.input[0], "DequantizeLinear") for m in projections]
        weights = [made_by(m.input[1], "DequantizeLinear") for m in projections]
        if any(d is None for d in acts + weights) or len({tuple(d.input) for d in acts}) != 1:
            continue
        quant = made_by(acts[0].input[0], "QuantizeLinear")
        if quant is None or len(quant.input) < 3 or any(d.input[0] not in inits or len(d.input) < 3 for d in weights):
            continue
        # ORT's CPU QAttention takes uint8 input only (int8 activations stay split).
        if quant.input[2] not in inits or inits[quant.input[2]].data_type != onnx.TensorProto.UINT8:
            continue
        w = [numpy_helper.to_array(inits[d.input[0]]) for d in weights]
        if len({x.dtype for x in w}) != 1 or any(x.ndim != 2 for x in w):
            continue
        scale = [np.broadcast_to(numpy_helper.to_array(inits[d.input[1]]), (x.shape[1],)) for d, x in zip(weights, w)]
        zero = [np.broadcast_to(numpy_helper.to_array(inits[d.input[2]]), (x.shape[1],)) for d, x in zip(weights, w)]
        base = mha.name.rsplit("/", 1)[0]
        names = [f"{base}/qkv_weight_quantized", f"{base}/qkv_weight_scale", f"{base}/qkv_weight_zero_point"]
        graph.initializer.extend([
            numpy_helper.from_array(np.concatenate(w, axis=1), names[0]),
            numpy_helper.from_array(np.concatenate(scale).astype(np.float32), names[1]),
            numpy_helper.from_array(np.concatenate(zero).astype(w[0].dtype), names[2])])
        mask = mha.input[4] if len(mha.input) > 4 else ""
        inputs = [quant.output[0], names[0], mha.input[3], quant.input[1], names[1], mask, quant.input[2], names[2]]
        attrs = {a.name: helper.get_attribute_value(a) for a in mha.attribute}
        fused[mha.name] = helper.make_node("QAttention", inputs, list(mha.output), name=f"{base}/qattention",
                                           domain="com.microsoft", **attrs)
        dropped.update(id(n) for n in projections + weights)
    if not fused:
        return 0
    nodes = [fused.get(n.name, n) if n.op_type == "MultiHeadAttention" else n for n in graph.node if id(n) not in dropped]
    # The projections' input DequantizeLinear has no reader left.
    used = {name for n in nodes for name in n.input} | {o.name for o in graph.output}
    nodes = [n for n in nodes if not (n.op_type == "DequantizeLinear" and n.output[0] not in used)]
    used = {name for n in nodes for name in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.node[:]
    graph.node.extend(nodes)
    return len(fused)


def _max_output_diff(reference: Path, candidate: Path, feeds: dict) -> float:
    import numpy as np
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    outs = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            for p in (reference, candidate)]
    return float(np.abs(outs[0] - outs[1]).max())


def keep_float(model, names: set[str]) -> int:
    """Readers named in `names` (nodes kept float) take x itself where ORT handed them DQ(Q(x)).

    ORT's quantizer leaves an excluded node's own inputs alone, but where a tensor is also quantized for
    another reader it rewires every reader to the one DequantizeLinear: the kept-float node would still
    see int8 noise (and, under "weight_inputs", a DQ -> MatMul that is no longer fused). A Q/DQ pair left
    with no reader is removed."""
    producer = {out: n for n in model.graph.node for out in n.output}
    changed = 0
    for node in model.graph.node:
        if node.name not in names:
            continue
        for i, name in enumerate(node.input):
            dq = producer.get(name)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is not None and q.op_type == "QuantizeLinear":
                node.input[i] = q.input[0]
                changed += 1
    while True:
        used = {name for n in model.graph.node for name in n.input} | {o.name for o in model.graph.output}
        dead = [n for n in model.graph.node
                if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    used = {name for n in model.graph.node for name in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]
    if len(kept) != len(model.graph.initializer):
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return changed


def _candidate(pre: Path, out: Path, reader, params: StaticInt8, placement: str, op_types: list[str],
               extra: dict[str, Any], excluded: list[str], attentions: list[str], check: dict,
               float_nodes: list[str], calibration_cache: Path | None) -> Candidate:
    """One static QDQ model of `pre`, with `float_nodes` (beyond the placement's own exclusions) kept float."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static as ort_quantize_static

    out.mkdir()
    info: dict[str, Any] = {}
    quantized = out / "quantized.onnx"
    ort_quantize_static(
        str(pre),
        str(quantized),
        reader,
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=op_types,
        per_channel=params.per_channel,
        activation_type=QuantType.QUInt8 if params.activation_type == "uint8" else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        nodes_to_exclude=excluded + float_nodes,
        calibrate_method=getattr(CalibrationMethod, CALIBRATORS[params.calibration]),
        extra_options=extra,
        # Accuracy-aware tries only: the first try calibrates and saves the ranges, the others load them.
        # Ranges are per tensor of the float model, whichever nodes are excluded, so one calibration serves all.
        calibration_cache_path=calibration_cache,
    )
    model = onnx.load(str(quantized))
    if placement == "weight_inputs":
        info["float_readers"] = float_to_other_readers(model)
    if float_nodes:
        info["float_nodes_rewired"] = keep_float(model, set(float_nodes))
    if placement == "weight_inputs" or float_nodes:
        onnx.save(model, str(quantized))
    final = quantized
    if params.attention == "qattention" and attentions:
        # Only attentions whose three projections are all quantized fold (fuse_qattention's pattern needs
        # a DQ on each projection's input and weight); one with a projection kept float stays split.
        info["qattention"] = fuse_qattention(model, attentions)
        if info["qattention"]:
            onnx.save(model, str(out / "qattention.onnx"))
            # The same integer arithmetic in another kernel: the logits should not move at all.
            try:
                diff = _max_output_diff(quantized, out / "qattention.onnx", check)
            except Exception as e:  # onnxruntime's own errors (no kernel for these types) have no common base
                diff, info["qattention_error"] = None, str(e).splitlines()[0][:300]
            info["qattention_max_abs_diff"] = diff
            if diff is not None and diff <= SAME_INT8:
                final = out / "qattention.onnx"
            else:
                info["qattention"] = 0  # kept split; the report's diff (or error) says why
    del model
    return Candidate(qdq=quantized, final=final, info=info)


def quantize_static(src: Path, dst: Path, train_jsonl: Path, tokenizer_json: Path, params: StaticInt8,
                    input_names: tuple[str, ...], length: int) -> dict[str, Any]:
    import onnx

    from recipes.errors import StageError

    examples = load_split(train_jsonl)
    # Spread the calibration sample across the (id-sorted) split deterministically.
    step = max(1, len(examples) // params.calibration_samples)
    calibration_ids = list(range(len(examples)))[::step][: params.calibration_samples]
    encoder = Encoder(tokenizer_json, length)
    reader = _TrainSplitReader([examples[i].text for i in calibration_ids], encoder, input_names, length,
                               params.calibration_batch)
    holdout = []
    if params.min_agreement is not None:  # fail before any work when the split leaves nothing to measure on
        ids = holdout_ids(len(examples), calibration_ids, params.holdout_samples, params.calibration_samples)
        texts = [examples[i].text for i in ids]
        holdout = [encoder.encode(texts[i:i + params.calibration_batch], input_names, pad_to=length)
                   for i in range(0, len(texts), params.calibration_batch)]
    op_types = list(params.op_types) + (["Gather"] if params.quantize_embeddings and "Gather" not in params.op_types else [])
    placement = params.resolved_placement()
    symmetric = params.activation_type == "int8"
    # Symmetric int8 is what TensorRT takes (zero points must be 0). CalibTensorRangeSymmetric centres the
    # calibrated ranges; ActivationSymmetric also covers what QDQ quantizes "as an activation" without
    # calibrating it: the embedding tables under their Gathers, which otherwise get a non-zero zero point.
    extra: dict[str, Any] = {"CalibTensorRangeSymmetric": symmetric, "ActivationSymmetric": symmetric}
    info: dict[str, Any] = {"method": "static", "calibration": params.calibration, "samples": reader.samples,
                            "op_types": op_types, "per_channel": params.per_channel,
                            "activation_type": params.activation_type, "placement": placement,
                            "attention": params.attention}
    check = reader.batches[0]
    reference = src  # the float model agreement is measured against: the stage's input, as it came
    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        work = Path(work)
        attentions: list[str] = []
        if params.attention != "float":
            model = onnx.load(str(src))
            attentions = split_attention(model)
            if attentions:
                onnx.save(model, str(work / "split.onnx"))
                diff = _max_output_diff(src, work / "split.onnx", check)
                if not diff <= SAME_FP32:
                    raise StageError(f"quantize: splitting Attention changed the fp32 logits by {diff:.3g} "
                                     f"(> {SAME_FP32}) on a calibration batch; set quantize.attention = 'float'")
                src = work / "split.onnx"
            del model
        info["attention_split"] = len(attentions)
        pre = work / "pre.onnx"
        _preprocess(src, pre)
        excluded: list[str] = []
        if placement == "weight_inputs":
            model = onnx.load(str(pre))
            excluded = activation_matmuls(model)
            onnx.save(model, str(pre))
            del model
            # No Q on MatMul outputs: DQ -> MatMul -> (float) is what ORT fuses into MatMulIntegerToFloat.
            extra["OpTypesToExcludeOutputQuantization"] = ["MatMul"]
        info["float_matmuls"] = len(excluded)
        if params.min_agreement is None:
            candidate = _candidate(pre, work / "quantized", reader, params, placement, op_types, extra, excluded,
                                   attentions, check, [], None)
        else:
            tries = itertools.count(1)

            def build(float_nodes: list[str]) -> Candidate:
                return _candidate(pre, work / f"try{next(tries)}", reader, params, placement, op_types, extra,
                                  excluded, attentions, check, float_nodes, work / "calibration.json")

            def rank(all_quantized: Candidate):
                return measure_ranking(pre, all_quantized.qdq, holdout, tuple(op_types), work)

            agreement = Agreement(reference, holdout)
            candidate, info["accuracy_aware"] = hold_to_agreement(
                build, agreement, agreement.samples, rank, params.min_agreement, params.max_float_nodes)
        info.update(candidate.info)
        shutil.copyfile(candidate.final, tmp)
    return info


def quantize_int4(src: Path, dst: Path, params: WeightOnlyInt4) -> dict[str, Any]:
    """4-bit block-wise weights: MatMul -> MatMulNBits; optionally the
    embedding tables too (Gather -> GatherBlockQuantized), which are about
    half of a small BERT and otherwise stay fp32."""
    import logging

    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.ERROR)
    op_types = ("MatMul", "Gather") if params.quantize_embeddings else ("MatMul",)
    quantizer = MatMulNBitsQuantizer(
        str(src), bits=4, block_size=params.block_size, is_symmetric=params.symmetric,
        accuracy_level=params.accuracy_level, op_types_to_quantize=op_types,
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    quantizer.process()
    with atomic_path(dst) as tmp:
        quantizer.model.save_model_to_file(str(tmp), use_external_data_format=False)
    return {"method": "weight_only", "bits": 4, "block_size": params.block_size, "symmetric": params.symmetric,
            "accuracy_level": params.accuracy_level, "op_types": list(op_types)}


def convert_fp16(src: Path, dst: Path, params: Fp16) -> dict[str, Any]:
    """fp16 weights and compute; with keep_io_types the graph still takes int64
    ids and returns fp32 logits, so callers need no change."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=params.keep_io_types)
    with atomic_path(dst) as tmp:
        onnx.save(model, str(tmp))
    return {"method": "fp16", "keep_io_types": params.keep_io_types}


@dataclass(frozen=True)
class QuantizeArgs:
    src: Path
    dst: Path
    report: Path
    params: OnnxQuantSpec = field(metadata=ONNX_QUANTIZERS)
    input_names: tuple[str, ...] = ()
    # Static calibration only: the train split, the tokenizer and the padded length.
    train_jsonl: Path | None = None
    tokenizer_json: Path | None = None
    length: int | None = None


def _static(args: QuantizeArgs) -> dict[str, Any]:
    return quantize_static(args.src, args.dst, args.train_jsonl, args.tokenizer_json, args.params, args.input_names, args.length)


METHODS: dict[type, Callable[[QuantizeArgs], dict[str, Any]]] = {
    DynamicInt8: lambda a: quantize_dynamic(a.src, a.dst, a.params),
    StaticInt8: _static,
    WeightOnlyInt4: lambda a: quantize_int4(a.src, a.dst, a.params),
    Fp16: lambda a: convert_fp16(a.src, a.dst, a.params),
}


def build(args: QuantizeArgs) -> dict[str, Any]:
    info = METHODS[type(args.params)](args)
    write_json(args.report, info)
    return info


STAGE = Stage("quantize", QuantizeArgs, build, modules=("formats.quantize_onnx", "formats.accuracy_aware", "formats.dynamic_int8", "textenc", "inputs.data", "params", "runtime.tokenize"),
              packages=("onnx", "onnxruntime"))


def declare(g: "Graph", src: Path, params: OnnxQuantSpec, precision: str, data_dir: Path, tokenizer_json: Path,
            length: int) -> Path:
    """`src` quantized or converted by `params`. Only static calibration reads data: a dynamic
    model must not depend on the profile's shapes, or targets could not share it."""
    static = isinstance(params, StaticInt8)
    calibration = {"train_jsonl": data_dir / "train.jsonl", "tokenizer_json": tokenizer_json, "length": length} if static else {}
    sources = [src] + ([data_dir / "train.jsonl", tokenizer_json] if static else [])
    identity = {"src": src, "params": params, "input_names": g.input_names, "train_jsonl": None, "tokenizer_json": None,
                "length": None, **calibration}
    out = g.stage_dir(f"onnx-{precision}-{params.method}", identity)
    args = QuantizeArgs(src=src, dst=out / "model.onnx", report=out / "quantize.json", params=params,
                        input_names=g.input_names, **calibration)
    g.stage(STAGE, [args.dst, args.report], sources, args)
    return args.dst
