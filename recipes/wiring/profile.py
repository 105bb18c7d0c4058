"""Device profiles: targets/<name>.toml loaded into frozen dataclasses.

The schema covers every profile kind (cpu, gpu_server, jetson, android).
Structural checks (keys, types, allowed values) come from `schema.Loader`;
`check_consistency` rejects combinations that cannot work.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from recipes.errors import ProfileError
from recipes.wiring.schema import Loader

Arch = Literal["x86_64", "arm64"]
Accelerator = Literal["none", "cuda", "jetson"]
Runtime = Literal["onnxruntime", "tensorrt", "pytorch", "pytorch_lite", "executorch"]
Format = Literal["onnx", "tensorrt", "ptl", "pte", "torch"]
Precision = Literal["fp32", "fp16", "int8", "int4", "nf4"]


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    arch: Arch
    accelerator: Accelerator = "none"
    # GPU compute capability of the device ("8.7" for Jetson Orin); engines are
    # only valid for the capability that built them.
    compute_capability: str = ""


@dataclass(frozen=True)
class Range:
    min: int
    opt: int
    max: int


@dataclass(frozen=True)
class Shapes:
    batch: Range
    sequence: Range


@dataclass(frozen=True)
class FinetuneParams:
    epochs: int = 3
    learning_rate: float = 5e-5
    head_learning_rate: float = 1e-3
    batch_size: int = 16
    max_length: int = 128
    train_encoder: bool = True
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    # Part of the signature: CPU kernels may sum in a different order with a
    # different thread count, and training must be byte-reproducible.
    threads: int = 2


@dataclass(frozen=True)
class ExportParams:
    opset: int = 18
    # Max |logit difference| allowed between ONNX Runtime and PyTorch.
    atol: float = 1e-4
    # "eager" exports attention as plain MatMul/Softmax, which ONNX Runtime
    # quantizes and runs faster on CPU than the decomposed SDPA graph.
    attention: Literal["eager", "sdpa"] = "eager"


@dataclass(frozen=True)
class DynamicInt8:
    method: Literal["dynamic"]
    per_channel: bool = False
    reduce_range: bool = False
    # Gather quantizes the embedding tables, about half of a small BERT;
    # Attention becomes QAttention in graphs fused for ONNX Runtime.
    op_types: tuple[str, ...] = ("MatMul", "Gather", "Attention")


@dataclass(frozen=True)
class StaticInt8:
    method: Literal["static"]
    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"
    calibration_samples: int = 128
    per_channel: bool = True
    op_types: tuple[str, ...] = ("MatMul",)
    activation_type: Literal["uint8", "int8"] = "uint8"
    # The embedding tables are weight-only int8 in the QDQ model too.
    quantize_embeddings: bool = True


@dataclass(frozen=True)
class WeightOnlyInt4:
    method: Literal["weight_only"]
    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    quantize_embeddings: bool = False


@dataclass(frozen=True)
class Fp16:
    method: Literal["fp16"]
    keep_io_types: bool = True


@dataclass(frozen=True)
class Nf4:
    method: Literal["nf4"]
    double_quant: bool = False


@dataclass(frozen=True)
class Int8DynActInt4Weight:
    method: Literal["8da4w"]
    group_size: int = 32


QUANTIZERS = {
    "dynamic": DynamicInt8,
    "static": StaticInt8,
    "weight_only": WeightOnlyInt4,
    "fp16": Fp16,
    "nf4": Nf4,
    "8da4w": Int8DynActInt4Weight,
}
QuantSpec = DynamicInt8 | StaticInt8 | WeightOnlyInt4 | Fp16 | Nf4 | Int8DynActInt4Weight

# Which quantizer methods make which precision in which format.
QUANT_METHODS: dict[tuple[str, str], tuple[str, ...]] = {
    ("onnx", "fp32"): (),
    ("onnx", "fp16"): ("fp16",),
    ("onnx", "int8"): ("dynamic", "static"),
    ("onnx", "int4"): ("weight_only",),
    ("tensorrt", "fp16"): ("fp16",),
    ("tensorrt", "int8"): ("static",),
    ("torch", "int8"): ("dynamic",),
    ("ptl", "fp32"): (),
    ("ptl", "int8"): ("dynamic",),
    ("pte", "fp32"): (),
    ("pte", "int4"): ("8da4w",),
    ("torch", "fp32"): (),
    ("torch", "nf4"): ("nf4",),
}
FORMAT_RUNTIME = {
    "onnx": "onnxruntime",
    "tensorrt": "tensorrt",
    "ptl": "pytorch_lite",
    "pte": "executorch",
    "torch": "pytorch",
}


@dataclass(frozen=True)
class Gates:
    # Accuracy of the artifact divided by the teacher's accuracy.
    min_accuracy_ratio: Optional[float] = None
    # Fraction of eval examples where the artifact predicts the teacher's label.
    min_agreement: Optional[float] = None
    max_size_mb: Optional[float] = None
    # Median latency at batch 1 and at the largest evaluation batch, where the
    # artifact can run on the build host.
    max_latency_ms: Optional[float] = None
    max_batch_latency_ms: Optional[float] = None


@dataclass(frozen=True)
class TrainParams:
    """Knowledge distillation from the teacher's logits (and hidden states)."""
    # loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels)
    temperature: float = 2.0
    alpha: float = 0.5
    # Weight of the MSE between student layers and the teacher layers they
    # were initialised from (0 = off); needs equal hidden sizes.
    hidden_loss: float = 0.0
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 16
    max_length: int = 128
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    seed: int = 42
    threads: int = 2


@dataclass(frozen=True)
class DistillParams(TrainParams):
    # Student depth; its layers are initialised from teacher layers: `layer_ids`
    # when given, else every other layer (the DistilBERT recipe), else half.
    layers: int = 0
    layer_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class MagnitudePrune:
    method: Literal["magnitude"]
    sparsity: float = 0.5
    # global: one threshold over all encoder weights; layer: the same sparsity in each.
    scope: Literal["global", "layer"] = "global"


@dataclass(frozen=True)
class HeadPrune:
    method: Literal["heads"]
    # Fraction of all attention heads removed, least important first (at
    # least one head stays in every layer).
    fraction: float = 0.25
    # Train examples used to score head importance.
    samples: int = 256


@dataclass(frozen=True)
class FfnPrune:
    method: Literal["ffn"]
    # Share of FFN neurons kept, the same in every layer, so the result is a
    # plain checkpoint with a smaller intermediate_size.
    keep_ratio: float = 0.5
    samples: int = 256


PRUNERS = {"magnitude": MagnitudePrune, "heads": HeadPrune, "ffn": FfnPrune}
PruneSpec = MagnitudePrune | HeadPrune | FfnPrune


@dataclass(frozen=True)
class ModelSpec:
    """A derived PyTorch model: a distilled student or a pruned copy of `base`."""
    name: str
    base: str = "teacher"
    distill: Optional[DistillParams] = None
    prune: Optional[PruneSpec] = field(default=None, metadata={"tag": "method", "variants": PRUNERS})
    # Distil the pruned model from the teacher to recover accuracy.
    recover: Optional[TrainParams] = None


@dataclass(frozen=True)
class ArtifactSpec:
    name: str
    format: Format
    precision: Precision
    # "teacher" or the name of a [[models]] entry.
    model: str = "teacher"
    # ONNX for ONNX Runtime only: fuse attention, LayerNorm and GELU into
    # ORT's transformer kernels before quantizing (recipes/formats/fuse_onnx.py).
    fuse: bool = False
    quantize: Optional[QuantSpec] = field(default=None, metadata={"tag": "method", "variants": QUANTIZERS})
    gates: Gates = Gates()


@dataclass(frozen=True)
class EngineParams:
    # host: build the TensorRT engine here (error if impossible); device: ship a
    # build script; auto: host when TensorRT and a matching GPU are present.
    build: Literal["host", "device", "auto"] = "auto"
    workspace_mb: int = 1024
    timing_cache: bool = True


@dataclass(frozen=True)
class MobileParams:
    optimize_for_mobile: Literal["required", "auto"] = "auto"


@dataclass(frozen=True)
class EvaluateParams:
    batch_sizes: tuple[int, ...] = (1, 32)
    sequence_length: int = 128
    warmup: int = 3
    repeats: int = 15
    # 0 = every core of the build host; the teacher gets the same count.
    threads: int = 0


@dataclass(frozen=True)
class StubParams:
    # Template names under templates/, without ".jinja"; output is the base
    # name (Java sources go to java/<package path>/).
    templates: tuple[str, ...] = ()
    java_package: str = "ai.edgesmith.bundle"


@dataclass(frozen=True)
class BundleParams:
    default_artifact: str = ""
    # Artifacts shipped in the bundle (all when empty); every artifact is
    # still built, evaluated and reported.
    artifacts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stages:
    finetune: FinetuneParams = FinetuneParams()
    export: ExportParams = ExportParams()


@dataclass(frozen=True)
class Profile:
    device: Device
    runtimes: tuple[Runtime, ...]
    shapes: Shapes
    artifacts: tuple[ArtifactSpec, ...]
    models: tuple[ModelSpec, ...] = ()
    stages: Stages = Stages()
    gates: Gates = Gates()
    evaluate: EvaluateParams = EvaluateParams()
    engine: EngineParams = EngineParams()
    mobile: MobileParams = MobileParams()
    stubs: StubParams = StubParams()
    bundle: BundleParams = BundleParams()
    # Filled in by the loader, not by the TOML file.
    name: str = field(default="", metadata={"internal": True})
    source: str = field(default="", metadata={"internal": True})

    def artifact(self, name: str) -> ArtifactSpec:
        for spec in self.artifacts:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def model(self, name: str) -> ModelSpec:
        for spec in self.models:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def gates_for(self, spec: ArtifactSpec) -> Gates:
        """Profile-wide gates with the artifact's own values on top."""
        own = {k: v for k, v in dataclasses.asdict(spec.gates).items() if v is not None}
        return dataclasses.replace(self.gates, **own)


def check_consistency(p: Profile, src: str, templates_dir: Path | None) -> None:
    def bad(key: str, message: str) -> ProfileError:
        return ProfileError(f"{src}: {key}{message}")

    for key, rng in (("shapes.batch", p.shapes.batch), ("shapes.sequence", p.shapes.sequence)):
        if not 1 <= rng.min <= rng.opt <= rng.max:
            raise bad(key, f" = {{min={rng.min}, opt={rng.opt}, max={rng.max}}}: need 1 <= min <= opt <= max")
    check_models(p, bad)
    names = [a.name for a in p.artifacts]
    if not names:
        raise bad("artifacts", ": the profile builds nothing; add at least one [[artifacts]] table")
    for i, spec in enumerate(p.artifacts):
        key = f"artifacts[{i}]"
        if not spec.name.replace("_", "").replace("-", "").isalnum() or spec.name in ("teacher",):
            raise bad(f"{key}.name", f" = {spec.name!r}: use letters, digits, '_' or '-' (and not 'teacher')")
        if spec.name in names[:i]:
            raise bad(f"{key}.name", f" = {spec.name!r} is used twice; artifact names must be unique")
        models = ["teacher"] + [m.name for m in p.models]
        if spec.model not in models:
            raise bad(f"{key}.model", f" = {spec.model!r} is not a model; use one of {', '.join(map(repr, models))} (define others in [[models]])")
        allowed = QUANT_METHODS.get((spec.format, spec.precision))
        if allowed is None:
            combos = sorted(pr for (fm, pr) in QUANT_METHODS if fm == spec.format)
            raise bad(f"{key}.precision", f" = {spec.precision!r} is not available for format {spec.format!r}; use one of {', '.join(map(repr, combos))}")
        method = spec.quantize.method if spec.quantize else None
        if allowed and method not in allowed:
            raise bad(f"{key}.quantize.method", f" = {method!r}: {spec.format} {spec.precision} needs quantize.method {' or '.join(map(repr, allowed))}")
        if not allowed and method is not None:
            raise bad(f"{key}.quantize", f": {spec.format} {spec.precision} takes no quantize table; remove it")
        if isinstance(spec.quantize, Int8DynActInt4Weight) and (spec.quantize.group_size < 32 or spec.quantize.group_size % 32):
            raise bad(f"{key}.quantize.group_size", f" = {spec.quantize.group_size}: XNNPACK's 4-bit linear needs a positive "
                      "multiple of 32 (32, 64, 128, ...)")
        if spec.fuse and spec.format != "onnx":
            raise bad(f"{key}.fuse", f" = true: fusion makes ONNX Runtime graphs; {spec.format} artifacts cannot use it")
        runtime = FORMAT_RUNTIME[spec.format]
        if runtime not in p.runtimes:
            raise bad(f"{key}.format", f" = {spec.format!r} needs runtime {runtime!r}, which is not in runtimes = {list(p.runtimes)}")
        if spec.format == "tensorrt" and isinstance(spec.quantize, StaticInt8) and spec.quantize.activation_type != "int8":
            raise bad(f"{key}.quantize.activation_type", f" = {spec.quantize.activation_type!r}: TensorRT takes symmetric int8 "
                      "QDQ only; set activation_type = 'int8'")
        if spec.format == "tensorrt" and p.device.accelerator == "none":
            raise bad(f"{key}.format", " = 'tensorrt' needs a GPU; device.accelerator is 'none'")
        if spec.precision in ("fp16", "nf4") and spec.format != "onnx" and p.device.accelerator == "none":
            raise bad(f"{key}.precision", f" = {spec.precision!r} needs a GPU for {spec.format}; device.accelerator is 'none'")
    for i, shipped in enumerate(p.bundle.artifacts):
        if shipped not in names:
            raise bad(f"bundle.artifacts[{i}]", f" = {shipped!r} is not an artifact; use one of {', '.join(map(repr, names))}")
    in_bundle = list(p.bundle.artifacts) or names
    if p.bundle.default_artifact and p.bundle.default_artifact not in in_bundle:
        raise bad("bundle.default_artifact", f" = {p.bundle.default_artifact!r} is not an artifact in the bundle; use one of {', '.join(map(repr, in_bundle))}")
    if 1 not in p.evaluate.batch_sizes or any(b < 1 for b in p.evaluate.batch_sizes):
        raise bad("evaluate.batch_sizes", f" = {list(p.evaluate.batch_sizes)}: must be positive and include 1")
    if p.evaluate.sequence_length > p.shapes.sequence.max:
        raise bad("evaluate.sequence_length", f" = {p.evaluate.sequence_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
    if p.stages.finetune.max_length > p.shapes.sequence.max:
        raise bad("stages.finetune.max_length", f" = {p.stages.finetune.max_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
    if p.evaluate.repeats < 1 or p.evaluate.warmup < 0 or p.evaluate.threads < 0:
        raise bad("evaluate", ": repeats must be >= 1, warmup and threads >= 0")
    if templates_dir is not None:
        for i, name in enumerate(p.stubs.templates):
            if not (templates_dir / f"{name}.jinja").is_file():
                known = sorted(str(t.relative_to(templates_dir))[: -len(".jinja")] for t in templates_dir.rglob("*.jinja"))
                raise bad(f"stubs.templates[{i}]", f" = {name!r}: no templates/{name}.jinja; known templates: {', '.join(known)}")


def check_models(p: Profile, bad) -> None:
    known = ["teacher"]
    for i, m in enumerate(p.models):
        key = f"models[{i}]"
        if not m.name.replace("_", "").replace("-", "").isalnum() or m.name in known:
            raise bad(f"{key}.name", f" = {m.name!r}: use a unique name of letters, digits, '_' or '-' (and not 'teacher')")
        if m.base not in known:
            raise bad(f"{key}.base", f" = {m.base!r} is not defined above this model; use one of {', '.join(map(repr, known))}")
        if (m.distill is None) == (m.prune is None):
            raise bad(key, f" ({m.name}): give exactly one of a distill or a prune table")
        if m.recover is not None and m.prune is None:
            raise bad(f"{key}.recover", ": recovery training follows pruning; for a student use the distill table")
        for part, train in (("distill", m.distill), ("recover", m.recover)):
            if train is None:
                continue
            if not 0.0 <= train.alpha <= 1.0 or train.temperature <= 0 or train.hidden_loss < 0:
                raise bad(f"{key}.{part}", ": need 0 <= alpha <= 1, temperature > 0 and hidden_loss >= 0")
            if train.epochs < 1 or train.batch_size < 1 or train.learning_rate <= 0:
                raise bad(f"{key}.{part}", ": epochs, batch_size and learning_rate must be positive")
            if train.max_length > p.shapes.sequence.max:
                raise bad(f"{key}.{part}.max_length", f" = {train.max_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
        d = m.distill
        if d is not None:
            if d.layers < 0 or (d.layer_ids and d.layers and d.layers != len(d.layer_ids)):
                raise bad(f"{key}.distill.layers", f" = {d.layers}: must be >= 0 and match the length of layer_ids")
            if any(i < 0 for i in d.layer_ids) or list(d.layer_ids) != sorted(set(d.layer_ids)):
                raise bad(f"{key}.distill.layer_ids", f" = {list(d.layer_ids)}: need distinct, increasing, non-negative layer indices")
        pr = m.prune
        if isinstance(pr, MagnitudePrune) and not 0.0 < pr.sparsity < 1.0:
            raise bad(f"{key}.prune.sparsity", f" = {pr.sparsity}: need 0 < sparsity < 1")
        if isinstance(pr, HeadPrune) and not 0.0 < pr.fraction < 1.0:
            raise bad(f"{key}.prune.fraction", f" = {pr.fraction}: need 0 < fraction < 1")
        if isinstance(pr, FfnPrune) and not 0.0 < pr.keep_ratio < 1.0:
            raise bad(f"{key}.prune.keep_ratio", f" = {pr.keep_ratio}: need 0 < keep_ratio < 1")
        if isinstance(pr, (HeadPrune, FfnPrune)) and pr.samples < 1:
            raise bad(f"{key}.prune.samples", f" = {pr.samples}: need at least 1")
        known.append(m.name)


def load_profile(path: Path, templates_dir: Path | None = None) -> Profile:
    path = Path(path)
    src = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ProfileError(f"{src}: no such profile file") from e
    except tomllib.TOMLDecodeError as e:
        raise ProfileError(f"{src}: invalid TOML: {e}") from e
    except UnicodeDecodeError as e:
        raise ProfileError(f"{src}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    profile = Loader(src).table(Profile, {k: v for k, v in data.items()}, "")
    profile = dataclasses.replace(profile, name=path.stem, source=src)
    check_consistency(profile, src, templates_dir)
    return profile


def profile_names(targets_dir: Path) -> list[str]:
    return sorted(p.stem for p in Path(targets_dir).glob("*.toml"))


def describe_profiles(targets_dir: Path) -> list[tuple[str, str]]:
    """(name, one-line description) for `scons target=list`, without full validation."""
    rows = []
    for name in profile_names(targets_dir):
        try:
            data = tomllib.loads((Path(targets_dir) / f"{name}.toml").read_text(encoding="utf-8"))
            desc = str(data.get("device", {}).get("description", ""))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, AttributeError):
            desc = "(invalid profile: build it to see the error)"
        rows.append((name, desc))
    return rows
