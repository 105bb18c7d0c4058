"""Multiply-accumulates of one forward pass of a model, counted from its fp32 ONNX graph.

The report divides this count by the measured latency to say how much of the
CPU's arithmetic peak each artifact reaches (recipes/measure/peak.py).
Quantization changes the precision of the arithmetic, not its amount, so the
count is made once per model, on the fp32 graph recipes/formats/onnx_export.py
exports (shared with the artifact builds).

How: the graph's batch and sequence axes are made concrete, shapes are
inferred, and every contraction is summed as (output elements) x (inner
dimension): MatMul, Gemm and Conv. A MatMul with a constant (weight) operand is
a linear layer; one between two activations is attention (Q.K^T and
probabilities.V, whose cost grows with the square of the sequence). Total
operations = 2 x MACs. Everything else (embedding Gathers, LayerNorm, softmax,
GELU, bias adds, residuals) is elementwise: it is not in the MAC count; its
output elements are counted separately, as a rough size of that work.

Shapes come from ONNX Runtime's symbolic shape inference: onnx's own
inference, even with data propagation, loses the batch and head axes of the
torch.export graph (the position ids are a Slice, the mask a Range, ending at
a computed Shape), and a MatMul with an unknown axis cannot be counted. A
contraction whose shape is still unknown fails the stage rather than being
left out silently.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recipes.errors import StageError
from recipes.fsutil import write_json
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph

# Ops that do arithmetic per output element (counted as "elementwise elements",
# never as MACs). Shape bookkeeping (Reshape, Transpose, Shape, Concat, Cast,
# Unsqueeze, Gather of shapes, ...) moves or relabels data and is not counted at all.
ELEMENTWISE = frozenset({
    "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Erf", "Tanh", "Sigmoid",
    "Relu", "Gelu", "FastGelu", "BiasGelu", "Softmax", "LogSoftmax", "LayerNormalization", "SkipLayerNormalization",
    "SimplifiedLayerNormalization", "ReduceMean", "ReduceSum", "ReduceMax", "Where", "Max", "Min", "Clip",
})
# Contractions this counter does not understand: if one appears, the count says so.
UNCOUNTED = frozenset({"Einsum", "ConvTranspose", "Attention", "MultiHeadAttention", "FusedMatMul", "MatMulInteger",
                       "QLinearMatMul", "MatMulNBits", "DynamicQuantizeMatMul", "QGemm", "ConvInteger", "QLinearConv"})


def _dims(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _prod(xs) -> int:
    out = 1
    for x in xs:
        out *= int(x)
    return out


def concrete(model, batch: int, sequence: int):
    """A copy of `model` whose rank-2 inputs are [batch, sequence], with all shapes inferred."""
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for inp in m.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if len(dims) != 2:
            raise StageError(f"ops: input {inp.name} has rank {len(dims)}; expected [batch, sequence]")
        dims[0].Clear()
        dims[0].dim_value = batch
        dims[1].Clear()
        dims[1].dim_value = sequence
    del m.graph.value_info[:]  # the exporter's symbolic shapes would shadow the concrete ones
    try:
        inferred = SymbolicShapeInference.infer_shapes(m, auto_merge=False, guess_output_rank=False)
    except Exception as exc:  # it raises bare Exceptions on graphs it cannot follow
        raise StageError(f"ops: ONNX Runtime's symbolic shape inference failed at batch {batch}, sequence {sequence}: "
                         f"{exc}") from None
    if inferred is None:
        raise StageError("ops: ONNX Runtime's symbolic shape inference could not infer this graph's shapes")
    return inferred


def count_macs(model, batch: int, sequence: int) -> dict[str, Any]:
    """MACs of one forward pass of `model` (an onnx.ModelProto) at [batch, sequence]."""
    m = concrete(model, batch, sequence)
    g = m.graph
    shapes: dict[str, list[int | None]] = {}
    for v in list(g.input) + list(g.value_info) + list(g.output):
        shapes[v.name] = _dims(v)
    constants = set()
    for t in g.initializer:
        shapes[t.name] = list(t.dims)
        constants.add(t.name)
    linear = attention = conv = elementwise = unknown_elementwise = 0
    counted: dict[str, int] = {}
    uncounted: dict[str, int] = {}

    def shape(name: str, node) -> list[int]:
        s = shapes.get(name)
        if s is None or any(d is None for d in s):
            raise StageError(f"ops: the shape of {name!r} ({node.op_type} node {node.name!r}) is unknown at batch {batch}, "
                             f"sequence {sequence}; its MACs cannot be counted")
        return s

    # Nodes are in topological order (an ONNX requirement), so constant-ness propagates in one pass:
    # a weight that the graph transposes or casts before its MatMul is still a weight.
    for node in g.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constants for i in inputs)):
            constants.update(o for o in node.output if o)
            continue
        op = node.op_type
        if op == "MatMul":
            a, out = shape(node.input[0], node), shape(node.output[0], node)
            macs = _prod(out) * a[-1]
            if node.input[0] in constants or node.input[1] in constants:
                linear += macs
            else:
                attention += macs
        elif op == "Gemm":
            a, out = shape(node.input[0], node), shape(node.output[0], node)
            trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
            macs = _prod(out) * (a[0] if trans_a else a[1])
            linear += macs
        elif op == "Conv":
            w, out = shape(node.input[1], node), shape(node.output[0], node)
            macs = _prod(out) * _prod(w[1:])  # (input channels / group) x kernel per output element
            conv += macs
        else:
            if op in ELEMENTWISE:
                s = shapes.get(node.output[0])
                if s is not None and all(d is not None for d in s):
                    elementwise += _prod(s)
                else:
                    unknown_elementwise += 1
            elif op in UNCOUNTED:
                uncounted[op] = uncounted.get(op, 0) + 1
            continue
        counted[op] = counted.get(op, 0) + 1
    macs = linear + attention + conv
    return {"batch": batch, "sequence_length": sequence, "macs": macs, "ops": 2 * macs,
            "linear_macs": linear + conv, "attention_macs": attention, "conv_macs": conv,
            "elementwise_elements": elementwise,
            "elementwise_unknown_shape": unknown_elementwise, "contractions": counted, "uncounted": uncounted}


def count(onnx_path: Path, batch_sizes: tuple[int, ...], sequence: int, dst: Path) -> dict[str, Any]:
    import onnx

    model = onnx.load(str(onnx_path))
    per_batch = {str(b): count_macs(model, b, sequence) for b in batch_sizes}
    first = per_batch[str(batch_sizes[0])]
    out = {
        "sequence_length": sequence,
        "batches": per_batch,
        # Per example, at the first batch size (for the text of the report).
        "per_example": {k: first[k] // first["batch"] for k in ("macs", "ops", "linear_macs", "attention_macs",
                                                                  "elementwise_elements")},
        "method": "MatMul/Gemm/Conv: output elements x inner dimension, on the fp32 ONNX graph with concrete "
                  "[batch, sequence] inputs (ONNX Runtime symbolic shape inference); ops = 2 x MACs. "
                  "Attention = MatMuls between two activations (Q.K^T, probabilities.V); linear = MatMuls and Gemms "
                  "with a weight operand. Elementwise ops (embedding lookups, LayerNorm, softmax, GELU, bias and "
                  "residual adds) are excluded from the MACs; elementwise_elements is their output element count.",
        "uncounted": first["uncounted"],
    }
    write_json(dst, out)
    return out


@dataclass(frozen=True)
class OpsArgs:
    onnx: Path
    batch_sizes: tuple[int, ...]
    sequence_length: int
    dst: Path


def build(args: OpsArgs) -> dict[str, Any]:
    return count(args.onnx, args.batch_sizes, args.sequence_length, args.dst)


STAGE = Stage("ops", OpsArgs, build, modules=("measure.ops",), packages=("onnx", "onnxruntime"))


def declare(g: "Graph", onnx: Path, batch_sizes: tuple[int, ...], sequence_length: int) -> Path:
    """The MAC count of the fp32 ONNX graph `onnx` at each batch size and the sequence length; the JSON's path."""
    identity = {"onnx": onnx, "batch_sizes": tuple(batch_sizes), "sequence_length": sequence_length}
    out = g.stage_dir("ops", identity)
    args = OpsArgs(onnx=onnx, batch_sizes=tuple(batch_sizes), sequence_length=sequence_length, dst=out / "ops.json")
    g.stage(STAGE, [args.dst], [onnx], args)
    return args.dst
