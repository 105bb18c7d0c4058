"""Knowledge distillation: a student (fewer layers, initialised from chosen
layers of its base) or a pruned model (recovery) learns from the teacher.

loss = alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))
       + (1 - alpha) * CE(student, labels)
       + hidden_loss * MSE(student layer k, teacher layer it came from)

Teacher logits come from the teacher-logits stage, looked up by example id
for every shuffled batch (see `paired_batches`). Deterministic like the
fine-tune: seeds, deterministic algorithms, a fixed thread count.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from recipes.inputs.data import Example, load_labels, load_split
from recipes.models import teacher_logits
from recipes.models.model_dir import write_model_dir
from recipes.models.teacher_logits import TeacherLogits
from recipes.models.training import TrainParams, deterministic_torch, train
from recipes.params import bounded
from recipes.textenc import Encoder
from recipes.wiring.stage import ModelStep, Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    import numpy as np

    from recipes.wiring.graph import Graph, Model

MAX_LAYERS = 1000


@dataclass(frozen=True)
class StudentLayers:
    """Which layers of the base model a student starts from."""
    # Student depth; its layers are initialised from teacher layers: `layer_ids`
    # when given, else every other layer (the DistilBERT recipe), else evenly spread.
    layers: int = bounded(0, min=0, max=MAX_LAYERS)
    layer_ids: tuple[int, ...] = bounded((), min=0, max=MAX_LAYERS)


@dataclass(frozen=True)
class DistillParams(TrainParams):
    """The profile's `distill` table: how to train the student, and which layers it starts from."""
    layers: int = bounded(0, min=0, max=MAX_LAYERS)
    layer_ids: tuple[int, ...] = bounded((), min=0, max=MAX_LAYERS)

    def training(self) -> TrainParams:
        return TrainParams(**{f.name: getattr(self, f.name) for f in fields(TrainParams)})

    def student(self) -> StudentLayers:
        return StudentLayers(self.layers, self.layer_ids)


@dataclass(frozen=True)
class DistillArgs:
    base_dir: Path
    teacher_dir: Path
    logits_dir: Path
    data_dir: Path
    dst: Path
    params: TrainParams
    # None: keep every layer of the base (recovery training of a pruned model).
    student: StudentLayers | None
    input_names: tuple[str, ...]


def paired_batches(examples: list[Example], table: TeacherLogits, order: list[int],
                   batch_size: int) -> Iterator[tuple[list[Example], "np.ndarray"]]:
    """Batches in `order`, each with its own examples' teacher logits (by id)."""
    for start in range(0, len(order), batch_size):
        batch = [examples[i] for i in order[start:start + batch_size]]
        yield batch, table.lookup([e.id for e in batch])


def distillation_loss(student_logits, teacher_logits, target, temperature: float, alpha: float):
    import torch.nn.functional as F

    t = temperature
    kl = F.kl_div(F.log_softmax(student_logits / t, dim=-1), F.log_softmax(teacher_logits / t, dim=-1),
                  reduction="batchmean", log_target=True) * (t * t)
    ce = F.cross_entropy(student_logits, target)
    return alpha * kl + (1.0 - alpha) * ce, kl, ce


def masked_mse(student_hidden, teacher_hidden, mask):
    m = mask.unsqueeze(-1).to(student_hidden.dtype)
    return ((student_hidden - teacher_hidden) ** 2 * m).sum() / (m.sum() * student_hidden.shape[-1]).clamp(min=1.0)


def build(args: DistillArgs) -> dict[str, Any]:
    import torch

    from recipes.models.archs import arch_for
    from recipes.models.hf import load_classifier
    from recipes.models.slim import default_layer_ids, layers_of, student_from_layers

    params = args.params
    deterministic_torch(params.seed, params.threads)
    labels = load_labels(args.data_dir / "data.json")
    label_ids = {l: i for i, l in enumerate(labels)}
    train_split = load_split(args.data_dir / "train.jsonl")
    table = TeacherLogits.load(args.logits_dir)
    base = load_classifier(args.base_dir, attention="eager")
    arch = arch_for(base.config.model_type)
    total = len(layers_of(base, arch))
    if args.student is not None:
        layer_ids = list(args.student.layer_ids) or default_layer_ids(total, args.student.layers)
        model = student_from_layers(base, arch, layer_ids, attention="eager")
        del base
    else:
        layer_ids = list(range(total))
        model = base
    teacher = None
    if params.hidden_loss > 0:
        teacher = load_classifier(args.teacher_dir, attention="eager")
        for p in teacher.parameters():
            p.requires_grad_(False)
    encoder = Encoder(args.base_dir / "tokenizer.json", params.max_length)

    def step_losses(batch):
        t_logits = table.lookup([e.id for e in batch])
        feeds = encoder.encode([e.text for e in batch], args.input_names)
        inputs = {k: torch.from_numpy(v) for k, v in feeds.items()}
        target = torch.tensor([label_ids[e.label] for e in batch])
        out = model(**inputs, output_hidden_states=teacher is not None)
        loss, kl, ce = distillation_loss(out.logits, torch.from_numpy(t_logits), target, params.temperature, params.alpha)
        hidden = torch.zeros(())
        if teacher is not None:
            with torch.no_grad():
                t_states = teacher(**inputs, output_hidden_states=True).hidden_states
            mask = inputs["attention_mask"]
            hidden = sum(masked_mse(out.hidden_states[k + 1], t_states[i + 1], mask)
                         for k, i in enumerate(layer_ids)) / len(layer_ids)
            loss = loss + params.hidden_loss * hidden
        return {"loss": loss, "kl": kl, "ce": ce, "hidden": hidden}

    groups = [{"params": list(model.parameters()), "lr": params.learning_rate}]
    steps, history = train(model, train_split, step_losses, param_groups=groups, params=params, desc="distill")
    summary = {"layer_ids": layer_ids, "base_layers": total, "train_examples": len(train_split), "steps": steps,
               "history": history, "parameters": sum(p.numel() for p in model.parameters())}
    write_model_dir(model, args.base_dir, args.dst, "training.json", summary)
    return summary


STAGE = Stage("distill", DistillArgs, build,
              modules=("models.distill", "models.training", "models.model_dir", "models.teacher_logits", "inputs.checkpoint",
                       "inputs.data", "models.hf", "models.embedding", "models.slim", "models.archs", "textenc", "params", "runtime.tokenize"),
              packages=("torch", "transformers", "tokenizers"))


def declare(g: "Graph", kind: str, base: "Model", teacher: "Model", data_dir: Path, params: TrainParams,
            student: StudentLayers | None) -> Path:
    """A student (`student` given: layers chosen from `base`) or a recovered pruned model (None).

    `kind` ("student" or "recover") names the output directory."""
    logits = teacher_logits.declare(g, teacher, data_dir, params.max_length, params.threads)
    input_names = g.input_names
    identity = {"base_dir": base.dir, "teacher_dir": teacher.dir, "logits_dir": logits, "data_dir": data_dir,
                "params": params, "student": student, "input_names": input_names}
    out = g.stage_dir(kind, identity)
    args = DistillArgs(base_dir=base.dir, teacher_dir=teacher.dir, logits_dir=logits, data_dir=data_dir, dst=out,
                       params=params, student=student, input_names=input_names)
    sources = base.weights + [base.tokenizer, logits / "logits.npy", logits / "ids.json", data_dir / "train.jsonl",
                              data_dir / "data.json"]
    if params.hidden_loss > 0:
        sources += teacher.weights
    g.stage(STAGE, g.checkpoint_targets(out, "training.json"), sources, args)
    return out


def declare_student(g: "Graph", base: "Model", teacher: "Model", params: DistillParams) -> "Model":
    """A [[models]] `distill` step: a student with layers taken from `base`."""
    out = declare(g, "student", base, teacher, g.data_dir, params.training(), params.student())
    return g.model_at(out, f"{base.lineage} > distill", out / "training.json")


def declare_recovery(g: "Graph", base: "Model", teacher: "Model", params: TrainParams) -> "Model":
    """A [[models]] `recover` step: the pruned `base` distilled from the teacher, every layer kept."""
    out = declare(g, "recover", base, teacher, g.data_dir, params, None)
    return g.model_at(out, f"{base.lineage} > recover", base.record)


MODEL_STEPS = (
    ModelStep("distill", DistillParams, declare_student, order=10,
              doc="a student initialised from a subset of the base model's layers, distilled from the teacher"),
    ModelStep("recover", TrainParams, declare_recovery, order=30,
              doc="the pruned model distilled from the teacher, every layer kept"),
)
