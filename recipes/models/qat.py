"""Quantization-aware training: int8 fake-quantized fine-tuning of a model
(the teacher, a student or a pruned model) distilled from the teacher, and the
one int8 program it yields for every runtime.

Library: torchao's PT2E QAT (`prepare_qat_pt2e`, `convert_pt2e`), chosen over
the two alternatives the issue names:
- torch.ao.quantization's eager/FX QAT is deprecated in torch 2.13 (its
  successor is this PT2E flow, moved to torchao), FX tracing of transformers
  models is brittle, and its ONNX path is the retired TorchScript exporter.
- NVIDIA ModelOpt's TensorQuantizer places QDQ exactly as TensorRT wants and
  trains on a CPU, but its quantizers are its own modules: ExecuTorch cannot
  lower them, so a .pte would need a second, different quantization, and the
  three runtimes would not run the same model.
- PT2E quantizes one exported graph. `convert_pt2e` turns it into standard
  quantize/dequantize ops that torch.onnx exports as QuantizeLinear /
  DequantizeLinear (ONNX Runtime, and TensorRT's explicit quantization) and
  that ExecuTorch lowers to XNNPACK's int8 kernels: the same scales and
  rounding everywhere, which is what makes cross-format parity hold.
The placement is ours (a torchao `Quantizer`, the extension point the library
provides for it): int8 symmetric activations (zero point 0, what TensorRT
takes) and per-output-channel symmetric int8 weights on every nn.Linear.
Attention's two activation matmuls and the embeddings stay float, as in the
static QDQ models (bench/results/static_int8.md).

Training is the shared loop (models/training.py) with the distillation loss
of models/distill.py against the teacher-logits stage, looked up by example
id. Activation ranges are observed (moving-average min/max) from a calibration
pass on held-in train examples, keep moving during the first part of training,
then freeze (`freeze_observers`), as QAT recipes do so the last steps fine-tune
the weights against fixed scales.

The stage writes a normal checkpoint (the trained float weights, so every other
stage can still read the model: the report's MAC count exports it) plus:
  qat.qdq.onnx  the converted program as QDQ ONNX, checked on ONNX Runtime
                against the converted PyTorch program on real sentences (check_onnx);
  qat.pt2       the converted program (torch.export), which the .pte format lowers;
  qat.json      the record: placement, quantized layers, learned scales, history.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from recipes.errors import StageError
from recipes.formats.onnx_paths import strip_host_paths
from recipes.formats.qat_files import PROGRAM, QDQ_ONNX, RECORD
from recipes.inputs.data import load_labels, load_split
from recipes.models import teacher_logits
from recipes.models.distill import distillation_loss
from recipes.inputs.checkpoint import TOKENIZER_FILES
from recipes.models.teacher_logits import TeacherLogits
from recipes.models.training import TrainParams, deterministic_torch, train
from recipes.params import MAX_EPOCHS, MAX_SAMPLES, bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import ModelStep, Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph, Model

# The export's trace example, as the fp32 export's (torch.export specialises sizes 0 and 1).
TRACE = (2, 16)
# The programs' batch bound: formats/onnx_export.py's EXPORT_BATCH, so one program serves every
# profile (not imported: an edit to the exporter must not retrain QAT models).
EXPORT_BATCH = 1024


@dataclass(frozen=True)
class QatParams(TrainParams):
    """The [[models]] `qat` table: fake-quantized fine-tuning, distilled from the teacher."""
    # A fine-tuned model only needs to adapt to the int8 grid: a short run at a low rate,
    # mostly the teacher's soft targets (agreement with the teacher is what int8 must keep).
    epochs: int = bounded(2, min=1, max=MAX_EPOCHS)
    learning_rate: float = bounded(2e-5, min=0.0, min_exclusive=True, max=1.0)
    alpha: float = bounded(0.9, min=0.0, max=1.0)
    # Where the int8 QDQ pairs go:
    # "linear_io": inputs, weights and outputs of every Linear (XNNPACK's static int8 linear, so the
    #   same model lowers to ExecuTorch; TensorRT and ONNX Runtime take it too).
    # "linear_inputs": inputs and weights only, outputs float (TensorRT's and ModelOpt's placement, and
    #   the one ONNX Runtime's CPU kernels run fastest); ExecuTorch/XNNPACK cannot lower it (no .pte).
    placement: Literal["linear_io", "linear_inputs"] = "linear_io"
    # Train examples run through the model (no gradient) to initialise the activation ranges before
    # training; without it the first batch alone sets them.
    calibration_samples: int = bounded(128, min=1, max=MAX_SAMPLES)
    # Weight of each new batch in the moving-average min/max (torch.ao's default).
    averaging_constant: float = bounded(0.01, min=0.0, min_exclusive=True, max=1.0)
    # Share of the training steps after which the activation ranges stop moving.
    freeze_observers: float = bounded(0.5, min=0.0, max=1.0)
    # Max |logit difference| per sentence between the exported QDQ ONNX, run by ONNX Runtime with its
    # QuantizeLinear/DequantizeLinear ops kept, and the converted PyTorch program (also the bound between
    # the fake-quantized model and the converted program). Both compute the same quantized arithmetic; a
    # value on a rounding boundary may land one int8 step apart, and a deep model amplifies that step.
    export_atol: float = bounded(0.05, min=0.0, min_exclusive=True, max=10.0)
    # Share of the verification sentences that must be within export_atol, and whose label must match,
    # for the export to count as right. A wrong export (a lost scale, a transposed weight) moves nearly
    # every sentence; a rounding-boundary flip moves a few: on the 6-layer SST-2 MiniLM, 4 of 128
    # sentences moved by up to 0.2, and no label changed (bench/results/qat.md).
    export_within: float = bounded(0.9, min=0.5, max=1.0)


@dataclass(frozen=True)
class QatArgs:
    base_dir: Path
    logits_dir: Path
    data_dir: Path
    dst: Path
    params: QatParams
    input_names: tuple[str, ...]
    # The exported program's dynamic-axis bounds (as the fp32 export's, so every profile can use it).
    max_batch: int
    max_sequence: int
    opset: int


def linear_quantizer(placement: str, averaging_constant: float):
    """A torchao Quantizer that annotates every aten.linear with our int8 placement.

    FakeQuantize, not the fused FusedMovingAvgObsFakeQuantize: the fused kernel computes its scales
    itself, while convert_pt2e takes them from the observer's calculate_qparams; on MiniLM the two
    differed by 1.16 in the logits after training (the stage's converted-vs-trained check caught it).
    FakeQuantize sets its scale from calculate_qparams, so training and the shipped program agree."""
    import torch
    from torchao.quantization.pt2e import (
        FakeQuantize,
        MovingAverageMinMaxObserver,
        MovingAveragePerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation, QuantizationSpec, Quantizer

    activation = QuantizationSpec(
        dtype=torch.int8, quant_min=-128, quant_max=127, qscheme=torch.per_tensor_symmetric,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAverageMinMaxObserver, averaging_constant=averaging_constant))
    # -127..127: symmetric weights never use -128, as TensorRT and XNNPACK expect.
    weight = QuantizationSpec(
        dtype=torch.int8, quant_min=-127, quant_max=127, qscheme=torch.per_channel_symmetric, ch_axis=0,
        observer_or_fake_quant_ctr=FakeQuantize.with_args(
            observer=MovingAveragePerChannelMinMaxObserver, averaging_constant=averaging_constant))

    class LinearInt8(Quantizer):
        def annotate(self, model):
            for node in model.graph.nodes:
                if node.op == "call_function" and node.target == torch.ops.aten.linear.default:
                    x, w = node.args[0], node.args[1]
                    node.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={x: activation, w: weight},
                        output_qspec=activation if placement == "linear_io" else None, _annotated=True)
            return model

        def validate(self, model):
            pass

    return LinearInt8()


class ExportedTrainable:
    """What the shared training loop needs of a model (.train(), .eval(), .parameters()), for an
    exported QAT graph, whose modes switch through torchao's helpers (nn.Module.train is disabled)."""

    def __init__(self, graph):
        self.graph = graph

    def train(self):
        from torchao.quantization.pt2e import move_exported_model_to_train
        move_exported_model_to_train(self.graph)

    def eval(self):
        from torchao.quantization.pt2e import move_exported_model_to_eval
        move_exported_model_to_eval(self.graph)

    def parameters(self):
        return self.graph.parameters()


def dynamic_dims(input_names: tuple[str, ...], max_batch: int, max_sequence: int) -> dict:
    import torch

    batch = torch.export.Dim("batch", min=1, max=max(max_batch, TRACE[0]))
    sequence = torch.export.Dim("sequence", min=2, max=max(max_sequence, TRACE[1] + 1))
    return {n: {0: batch, 1: sequence} for n in input_names}


def fake_quant_modules(graph) -> list[tuple[str, Any]]:
    from torchao.quantization.pt2e import FakeQuantizeBase

    return [(n, m) for n, m in graph.named_modules() if isinstance(m, FakeQuantizeBase)]


def learned_ranges(graph) -> dict[str, Any]:
    """Scales the training settled on: one per activation, a summary per weight."""
    acts, weights = {}, {}
    for name, fq in fake_quant_modules(graph):
        scale = fq.scale.detach().flatten()
        if scale.numel() == 1:
            acts[name] = round(float(scale), 8)
        else:
            weights[name] = {"channels": int(scale.numel()), "min": round(float(scale.min()), 8),
                             "max": round(float(scale.max()), 8)}
    return {"activation_scales": acts, "weight_scales": weights}


def copy_trained_weights(graph, model) -> None:
    """Put the trained float weights of the exported graph back into the transformers model."""
    import torch

    trained = dict(graph.named_parameters())
    with torch.no_grad():
        for name, p in model.named_parameters():
            key = f"model.{name}"  # quantize_torch.logits_module wraps the model as .model
            if key not in trained or trained[key].shape != p.shape:
                raise StageError(f"qat: the exported graph has no parameter {key} of shape {tuple(p.shape)}; "
                                 "the model cannot be saved")
            p.copy_(trained[key])


def export_qdq_onnx(program, dst: Path, input_names: tuple[str, ...], dims: dict, opset: int) -> dict[str, int]:
    import collections

    import onnx
    import torch

    torch.onnx.export(program, (), f=str(dst), input_names=list(input_names), output_names=["logits"],
                      dynamic_shapes=dims, opset_version=opset, dynamo=True, external_data=False, optimize=True,
                      verbose=False)
    strip_host_paths(dst)
    ops = collections.Counter(n.op_type for n in onnx.load(str(dst)).graph.node)
    if not ops["QuantizeLinear"] or not ops["DequantizeLinear"]:
        raise StageError(f"qat: the exported {dst.name} has no QuantizeLinear/DequantizeLinear nodes; "
                         "the exporter dropped the quantization, do not ship it")
    return {"QuantizeLinear": ops["QuantizeLinear"], "DequantizeLinear": ops["DequantizeLinear"],
            "MatMul": ops["MatMul"], "Gemm": ops["Gemm"]}


def verification_batches(texts: list[str], encode, max_length: int) -> list[dict[str, Any]]:
    """Real sentences in batches of growing size (1, 3, 8, 16, 32, ...), each padded to its longest, the last
    padded to max_length: the dynamic batch and sequence axes and the padding mask all get exercised."""
    batches, start = [], 0
    sizes = iter((1, 3, 8, 16))
    while start < len(texts):
        size = next(sizes, 32)
        chunk = texts[start:start + size]
        start += size
        batches.append(encode(chunk, max_length if start >= len(texts) else None))
    return batches


def compare_logits(out, ref, atol: float) -> dict[str, Any]:
    import numpy as np
    per_sentence = np.abs(out - ref).max(axis=-1)
    return {"sentences": int(per_sentence.size), "max_abs_diff": float(per_sentence.max()),
            "median_abs_diff": float(np.median(per_sentence)),
            "within_atol": float((per_sentence <= atol).mean()),
            "argmax_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean())}


def check_onnx(onnx_path: Path, program_module, batches: list[dict[str, Any]], input_names: tuple[str, ...],
               atol: float, within: float) -> dict[str, Any]:
    """The QDQ ONNX on ONNX Runtime against the converted PyTorch program, on real sentences, two ways.

    - "export" (gated): the graph with its QuantizeLinear/DequantizeLinear ops kept
      (ORT_DISABLE_ALL) is the program's own arithmetic, so it must match but for rounding-boundary
      flips: at least `within` of the sentences within `atol`, and as many labels the same.
    - "integer" (recorded): the graph as a deployment runs it (ORT_ENABLE_ALL fuses the QDQ pairs
      into integer kernels, whose requantisation rounds differently). Its cost is judged where every
      artifact's is: agreement and accuracy on the eval set, and format parity, against the gates.
    """
    import numpy as np
    import onnxruntime as ort
    import torch

    def session(level):
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = torch.get_num_threads()
        return ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    kept = session(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = session(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    refs, exported, integer = [], [], []
    for feeds in batches:
        with torch.no_grad():
            refs.append(program_module(*[torch.from_numpy(feeds[n]) for n in input_names]).numpy())
        exported.append(kept.run(["logits"], feeds)[0])
        integer.append(fused.run(["logits"], feeds)[0])
    ref = np.concatenate(refs)
    checks = {"export": compare_logits(np.concatenate(exported), ref, atol),
              "integer": compare_logits(np.concatenate(integer), ref, atol),
              "shapes": [list(b[input_names[0]].shape) for b in batches]}
    export = checks["export"]
    if not (export["within_atol"] >= within and export["argmax_agreement"] >= within):
        raise StageError(f"qat: {onnx_path.name} with its QDQ ops kept differs from the QAT program: "
                         f"{export['within_atol']:.1%} of {export['sentences']} sentences within qat.export_atol = "
                         f"{atol} (max {export['max_abs_diff']:.3g}), {export['argmax_agreement']:.1%} of labels the same, "
                         f"against qat.export_within = {within}; the export is wrong, do not ship it")
    return checks


def build(args: QatArgs) -> dict[str, Any]:
    import torch
    from torchao.quantization.pt2e import disable_observer
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_qat_pt2e

    from recipes.formats.quantize_torch import example_args, logits_module, quiet
    from recipes.models.hf import load_classifier

    params = args.params
    deterministic_torch(params.seed, params.threads)
    labels = load_labels(args.data_dir / "data.json")
    label_ids = {l: i for i, l in enumerate(labels)}
    train_split = load_split(args.data_dir / "train.jsonl")
    table = TeacherLogits.load(args.logits_dir)
    # Eager attention: plain matmul/softmax, the graph every exporter and XNNPACK take.
    model = load_classifier(args.base_dir, attention="eager")
    vocab = int(model.config.vocab_size)
    module = logits_module(model, args.input_names)
    encoder = Encoder(args.base_dir / "tokenizer.json", params.max_length)
    dims = dynamic_dims(args.input_names, args.max_batch, args.max_sequence)
    example = example_args(vocab, args.input_names, *TRACE, seed=0)

    with quiet():
        graph = torch.export.export(module, example, dynamic_shapes=dims, strict=False).module()
        prepared = prepare_qat_pt2e(graph, linear_quantizer(params.placement, params.averaging_constant))
    trainable = ExportedTrainable(prepared)
    fakes = fake_quant_modules(prepared)
    if not fakes:
        raise StageError("qat: the model has no nn.Linear layers to quantize")

    def encode(texts, pad_to=None):
        return encoder.encode(texts, args.input_names, pad_to=pad_to)

    def feeds_of(batch):
        encoded = encode([e.text for e in batch])
        return [torch.from_numpy(encoded[n]) for n in args.input_names]

    # Initial activation ranges from a calibration pass (no dropout, no gradient).
    step = max(1, len(train_split) // params.calibration_samples)
    calibration = train_split[::step][: params.calibration_samples]
    trainable.eval()
    with torch.no_grad():
        for start in range(0, len(calibration), params.batch_size):
            prepared(*feeds_of(calibration[start:start + params.batch_size]))

    steps_per_epoch = -(-len(train_split) // params.batch_size)
    freeze_at = int(round(params.freeze_observers * steps_per_epoch * params.epochs))
    state = {"step": 0, "frozen_at": None}

    def step_losses(batch):
        if state["step"] == freeze_at and state["frozen_at"] is None:
            prepared.apply(disable_observer)
            state["frozen_at"] = state["step"]
        state["step"] += 1
        logits = prepared(*feeds_of(batch))
        target = torch.tensor([label_ids[e.label] for e in batch])
        t_logits = torch.from_numpy(table.lookup([e.id for e in batch]))
        loss, kl, ce = distillation_loss(logits, t_logits, target, params.temperature, params.alpha)
        return {"loss": loss, "kl": kl, "ce": ce}

    groups = [{"params": list(prepared.parameters()), "lr": params.learning_rate}]
    steps, history = train(trainable, train_split, step_losses, param_groups=groups, params=params, desc="qat")
    if state["frozen_at"] is None:  # freeze_observers = 1.0: ranges moved until the end
        prepared.apply(disable_observer)
    trainable.eval()
    ranges = learned_ranges(prepared)
    copy_trained_weights(prepared, model)

    check_inputs = example_args(vocab, args.input_names, 4, 24, seed=7)
    with torch.no_grad():
        fake_quant_logits = prepared(*check_inputs)
    with quiet():
        converted = convert_pt2e(prepared)
    with torch.no_grad():
        converted_logits = converted(*check_inputs)
    # convert_pt2e folds the fake quantization into quantize/dequantize ops; the arithmetic is the same.
    drift = float((fake_quant_logits - converted_logits).abs().max())
    if not drift <= params.export_atol:
        raise StageError(f"qat: the converted int8 program differs from the trained fake-quantized model by {drift:.3g} "
                         f"(qat.export_atol = {params.export_atol}); do not ship it")

    record: dict[str, Any] = {
        "library": "torchao.quantization.pt2e (prepare_qat_pt2e / convert_pt2e)", "placement": params.placement,
        "activations": "int8 symmetric per tensor (zero point 0), moving-average min/max",
        "weights": "int8 symmetric per output channel (-127..127)", "quantized_linears": len(ranges["weight_scales"]),
        "activation_quantizers": len(ranges["activation_scales"]), "train_examples": len(train_split), "steps": steps,
        "calibration_examples": len(calibration), "observers_frozen_at_step": state["frozen_at"] if state["frozen_at"] is not None else steps,
        "history": history, "converted_max_abs_diff": drift, **ranges,
        "parameters": sum(p.numel() for p in model.parameters())}

    def write_programs(tmp: Path) -> None:
        with quiet():
            program = torch.export.export(converted, example, dynamic_shapes=dims, strict=False)
            torch.export.save(program, str(tmp / PROGRAM))
            record["onnx_ops"] = export_qdq_onnx(program, tmp / QDQ_ONNX, args.input_names, dims, args.opset)
        batches = verification_batches([e.text for e in calibration], encode, params.max_length)
        record["onnx_checks"] = check_onnx(tmp / QDQ_ONNX, converted, batches, args.input_names, params.export_atol,
                                           params.export_within)

    write_qat_dir(model, args.base_dir, args.dst, record, write_programs)
    return record


def write_qat_dir(model: Any, tokenizer_dir: Path, dst: Path, record: dict[str, Any], write_programs) -> None:
    """models/model_dir.write_model_dir's layout plus the two int8 programs, in one atomic directory:
    the checkpoint, the programs, the record and the manifest appear together or not at all.

    Written here rather than as an option of write_model_dir: that module is in the signature of every
    training stage, and an edit to it would retrain every teacher and student once."""
    import json
    import shutil

    from recipes.fsutil import atomic_dir, dir_manifest

    with atomic_dir(dst) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        write_programs(tmp)
        for name in TOKENIZER_FILES:
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, tmp / name)
        (tmp / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        (tmp / "manifest.json").write_text(json.dumps({"files": dir_manifest(tmp)}, indent=2, sort_keys=True) + "\n")


STAGE = Stage("qat", QatArgs, build,
              modules=("models.qat", "formats.qat_files", "formats.onnx_paths", "models.training", "models.distill", "models.model_dir", "models.teacher_logits",
                       "inputs.checkpoint", "inputs.data", "models.hf", "models.embedding", "models.slim", "models.archs",
                       "formats.quantize_torch", "formats.dynamic_int8", "formats.model_io", "measure.mobile_runners", "textenc", "params",
                       "runtime.tokenize"),
              packages=("torch", "transformers", "tokenizers", "torchao", "onnx", "onnxscript", "onnxruntime"))


def declare_model(g: "Graph", base: "Model", teacher: "Model", params: QatParams) -> "Model":
    """A [[models]] `qat` step: `base` fine-tuned with int8 fake quantization, distilled from the teacher."""
    data_dir = g.data_dir
    logits = teacher_logits.declare(g, teacher, data_dir, params.max_length, params.threads)
    opset = g.profile.stages.export.opset
    identity = {"base_dir": base.dir, "logits_dir": logits, "data_dir": data_dir, "params": params,
                "input_names": g.input_names, "max_batch": EXPORT_BATCH, "max_sequence": g.max_positions, "opset": opset}
    out = g.stage_dir("qat", identity)
    args = QatArgs(base_dir=base.dir, logits_dir=logits, data_dir=data_dir, dst=out, params=params,
                   input_names=g.input_names, max_batch=EXPORT_BATCH, max_sequence=g.max_positions, opset=opset)
    sources = base.weights + [base.tokenizer, logits / "logits.npy", logits / "ids.json", data_dir / "train.jsonl",
                              data_dir / "data.json"]
    g.stage(STAGE, g.checkpoint_targets(out, RECORD) + [out / QDQ_ONNX, out / PROGRAM], sources, args)
    return g.model_at(out, f"{base.lineage} > qat int8", out / RECORD, qat=params)


MODEL_STEPS = (ModelStep("qat", QatParams, declare_model, order=40,
                         doc="quantization-aware int8 training distilled from the teacher (its artifacts: quantize.method = 'qat')"),)
