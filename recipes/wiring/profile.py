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

from recipes.errors import ConfigError, ProfileError
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.formats.onnx_export import ExportParams
from recipes.formats.openvino import check_spec as check_openvino
from recipes.formats.openvino_params import NncfPtq, OpenVinoParams, WeightCompression
from recipes.formats.ptl import MobileParams
from recipes.formats.pte import Int8DynActInt4Weight
from recipes.formats.qat_int8 import QatInt8
from recipes.formats.quantize_nf4 import Nf4
from recipes.formats.quantize_onnx import Fp16, StaticInt8, WeightOnlyInt4
from recipes.formats.tensorrt_engine import EngineParams
from recipes.measure.budget import Budget, budget_names
from recipes.measure.latency import EvaluateParams
from recipes.measure.report import Gates
from recipes.models.distill import MAX_LAYERS, DistillParams
from recipes.models.finetune import FinetuneParams
from recipes.models.prune import FfnPrune, HeadPrune, MagnitudePrune, MovementPrune
from recipes.models.training import TrainParams
from recipes.package.bundle import BundleParams
from recipes.package.stubs import StubParams
from recipes.params import MAX_BATCH, MAX_SAMPLES, MAX_SEQUENCE, bounded
from recipes.wiring.registry import ARTIFACT_OPTIONS, FORMATS, MODEL_STEPS
from recipes.wiring.resources import Resources, check as check_resources
from recipes.wiring.schema import Loader
from recipes.wiring.stage import tagged
from runtime.cpu_features import KNOWN_FEATURES

Arch = Literal["x86_64", "arm64"]
Accelerator = Literal["none", "cuda", "jetson"]
Runtime = Literal["onnxruntime", "openvino", "tensorrt", "pytorch", "pytorch_lite", "executorch"]
Precision = Literal["fp32", "fp16", "bf16", "int8", "int4", "nf4"]

# Every quantizer and converter an artifact's `quantize` table can name, told apart by `method`.
QUANTIZERS = tagged(DynamicInt8, StaticInt8, WeightOnlyInt4, Fp16, Nf4, Int8DynActInt4Weight, NncfPtq, WeightCompression,
                   QatInt8)
QuantSpec = (DynamicInt8 | StaticInt8 | WeightOnlyInt4 | Fp16 | Nf4 | Int8DynActInt4Weight | NncfPtq | WeightCompression
             | QatInt8)


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    arch: Arch
    accelerator: Accelerator = "none"
    # GPU compute capability of the device ("8.7" for Jetson Orin); engines are
    # only valid for the capability that built them.
    compute_capability: str = ""
    # The device CPU's instruction-set features, by their Linux names (/proc/cpuinfo
    # "flags" or "Features": avx512_vnni, amx_bf16, asimddp, ...). Artifacts that need
    # some (OpenVINO bf16 and int8) are checked against this list, never against the build host.
    cpu_features: tuple[str, ...] = ()


@dataclass(frozen=True)
class Range:
    min: int = bounded(min=1, max=MAX_BATCH)
    opt: int = bounded(min=1, max=MAX_BATCH)
    max: int = bounded(min=1, max=MAX_BATCH)


@dataclass(frozen=True)
class SequenceRange:
    min: int = bounded(min=1, max=MAX_SEQUENCE)
    opt: int = bounded(min=1, max=MAX_SEQUENCE)
    max: int = bounded(min=1, max=MAX_SEQUENCE)


@dataclass(frozen=True)
class Shapes:
    batch: Range
    sequence: SequenceRange


# A derived PyTorch model: `name`, its `base`, and one table per model step
# (recipes/wiring/registry.py finds them: distill, prune, recover, ...).
ModelSpec = dataclasses.make_dataclass(
    "ModelSpec",
    [("name", str), ("base", str, field(default="teacher"))]
    + [(s.key, Optional[s.params], field(default=None, metadata=s.metadata)) for s in MODEL_STEPS],
    frozen=True)
ModelSpec.__module__ = __name__


def _artifact_spec() -> type:
    @dataclass(frozen=True)
    class ArtifactSpec:
        name: str
        # A format registered in recipes/wiring/registry.py (onnx, tensorrt, torch, ptl, pte).
        format: str
        precision: Precision
        # "teacher" or the name of a [[models]] entry.
        model: str = "teacher"
        # ONNX for ONNX Runtime only: fuse attention, LayerNorm and GELU into
        # ORT's transformer kernels before quantizing (recipes/formats/fuse_onnx.py).
        fuse: bool = False
        quantize: Optional[QuantSpec] = field(default=None, metadata=QUANTIZERS)
        gates: Gates = Gates()

    # One optional table per registered artifact option (e.g. `ort_optimize = {...}`).
    options = [(o.key, Optional[o.params], field(default=None)) for o in ARTIFACT_OPTIONS]
    spec = dataclasses.make_dataclass("ArtifactSpec", options, bases=(ArtifactSpec,), frozen=True)
    spec.__module__ = __name__
    return spec


ArtifactSpec = _artifact_spec()


@dataclass(frozen=True)
class SearchSpace:
    """The profile's [search] table: a space of candidate models and formats, expanded into ordinary
    [[models]] and [[artifacts]] (recipes/wiring/search.py); the [budget] chooses among them."""
    # Distilled students: how many of the teacher's layers each keeps (evenly spread, as distill does).
    student_layers: tuple[int, ...] = bounded((), min=1, max=MAX_LAYERS)
    # FFN pruning: the share of FFN neurons each candidate keeps.
    ffn_keep_ratios: tuple[float, ...] = bounded((), min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # Head pruning: the share of all attention heads each candidate removes.
    head_fractions: tuple[float, ...] = bounded((), min=0.0, max=1.0, min_exclusive=True, max_exclusive=True)
    # Prune the students too (student > prune > recover), not only the teacher.
    chains: bool = True
    # The fine-tuned teacher itself is a candidate model.
    include_teacher: bool = True
    # How students are distilled (`layers` is set per candidate) and pruned models recovered.
    distill: DistillParams = DistillParams()
    recover: TrainParams = TrainParams()
    # Train examples that score FFN neurons and heads before they are removed.
    prune_samples: int = bounded(256, min=1, max=MAX_SAMPLES)
    # The formats and quantizers this device allows: [[search.artifacts]] tables like [[artifacts]] without
    # `model`; each candidate model is built in each, named <model>-<artifact name>.
    artifacts: tuple[ArtifactSpec, ...] = ()
    # Measure latency, size and peak memory on random-weight models of each candidate's shape before
    # anything is distilled or recovered, and never train a candidate that cannot meet those budgets.
    screen: bool = True
    # Screening skips a candidate only when its stand-in misses a latency or memory budget by more than
    # this share (timing noise); size is held exactly.
    screen_slack: float = bounded(0.1, min=0.0, max=10.0)
    # Share of the eval split every trained candidate is first evaluated on; one that cannot meet the budget's
    # accuracy_ratio or agreement even at the optimistic end of that estimate is dropped before its full
    # evaluation and measurement (recipes/measure/accuracy_screen.py). 0 turns this rung off.
    accuracy_screen: float = bounded(0.25, min=0.0, max=1.0)
    # A space of more candidates than this is not screened whole: Optuna proposes which to screen, in rounds
    # of trials_per_round, until this many have been (recipes/wiring/search_optuna.py). Seeded by `seed`.
    max_candidates: Optional[int] = bounded(None, min=1, max=100_000)
    trials_per_round: int = bounded(4, min=1, max=1000)
    seed: int = bounded(0, min=0, max=2**31 - 1)


@dataclass(frozen=True)
class Stages:
    finetune: FinetuneParams = FinetuneParams()
    export: ExportParams = ExportParams()


@dataclass(frozen=True)
class Profile:
    device: Device
    runtimes: tuple[Runtime, ...]
    shapes: Shapes
    # Required unless a [search] generates them (check_consistency says so in one line).
    artifacts: tuple[ArtifactSpec, ...] = ()
    models: tuple[ModelSpec, ...] = ()
    stages: Stages = Stages()
    gates: Gates = Gates()
    evaluate: EvaluateParams = EvaluateParams()
    engine: EngineParams = EngineParams()
    mobile: MobileParams = MobileParams()
    openvino: OpenVinoParams = OpenVinoParams()
    stubs: StubParams = StubParams()
    bundle: BundleParams = BundleParams()
    # The device's budget: the build ships the cheapest artifact that meets it (recipes/measure/budget.py).
    budget: Optional[Budget] = None
    # A space of candidates for the budget to choose from (recipes/wiring/search.py).
    search: Optional[SearchSpace] = None
    # What each stage asks of a node under executor=ray (recipes/wiring/resources.py).
    resources: Resources = Resources()
    # "classification" or "embedding"; "" = from task= on the command line, else the checkpoint
    # (recipes/wiring/task.py). The loader fills in the resolved task before the graph is declared.
    task: Literal["", "classification", "embedding"] = ""
    # Filled in by the loader, not by the TOML file.
    # The [search] space's candidates (search.Candidate), in the order its artifacts were added.
    candidates: tuple = field(default=(), metadata={"internal": True})
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


def runtime_of(fmt: str) -> str:
    return FORMATS[fmt].runtime


def check_consistency(p: Profile, src: str, templates_dir: Path | None) -> None:
    def bad(key: str, message: str) -> ProfileError:
        return ProfileError(f"{src}: {key}{message}")

    check_resources(p.resources, src)
    for key, rng in (("shapes.batch", p.shapes.batch), ("shapes.sequence", p.shapes.sequence)):
        if not 1 <= rng.min <= rng.opt <= rng.max:
            raise bad(key, f" = {{min={rng.min}, opt={rng.opt}, max={rng.max}}}: need 1 <= min <= opt <= max")
    check_models(p, bad)
    known = KNOWN_FEATURES.get(p.device.arch, ())
    for i, feature in enumerate(p.device.cpu_features):
        if feature not in known:
            raise bad(f"device.cpu_features[{i}]", f" = {feature!r} is not a {p.device.arch} feature edgesmith knows; "
                      f"use the kernel's names: {', '.join(known)}")
    names = [a.name for a in p.artifacts]
    if not names and p.search is None:
        raise bad("artifacts", ": the profile builds nothing; add at least one [[artifacts]] table (or a [search])")
    if p.search is not None:
        from recipes.wiring.search import check_space

        check_space(p)
    templates = list(p.search.artifacts) if p.search is not None else []
    listed = [(f"artifacts[{i}]", spec, names[:i]) for i, spec in enumerate(p.artifacts)]
    listed += [(f"search.artifacts[{i}]", spec, [t.name for t in templates[:i]]) for i, spec in enumerate(templates)]
    for key, spec, earlier in listed:
        if not spec.name.replace("_", "").replace("-", "").isalnum() or spec.name in ("teacher",):
            raise bad(f"{key}.name", f" = {spec.name!r}: use letters, digits, '_' or '-' (and not 'teacher')")
        if spec.name in earlier:
            raise bad(f"{key}.name", f" = {spec.name!r} is used twice; artifact names must be unique")
        models = ["teacher"] + [m.name for m in p.models]
        if spec.model not in models:
            raise bad(f"{key}.model", f" = {spec.model!r} is not a model; use one of {', '.join(map(repr, models))} (define others in [[models]])")
        if spec.format not in FORMATS:
            raise bad(f"{key}.format", f" = {spec.format!r} is not allowed; use one of {', '.join(map(repr, FORMATS))}")
        fmt = FORMATS[spec.format]
        allowed = fmt.precisions.get(spec.precision)
        if allowed is None:
            combos = sorted(fmt.precisions)
            raise bad(f"{key}.precision", f" = {spec.precision!r} is not available for format {spec.format!r}; use one of {', '.join(map(repr, combos))}")
        method = spec.quantize.method if spec.quantize else None
        if allowed and method not in allowed:
            raise bad(f"{key}.quantize.method", f" = {method!r}: {spec.format} {spec.precision} needs quantize.method {' or '.join(map(repr, allowed))}")
        if not allowed and method is not None:
            raise bad(f"{key}.quantize", f": {spec.format} {spec.precision} takes no quantize table; remove it")
        if isinstance(spec.quantize, Int8DynActInt4Weight) and spec.quantize.group_size % 32:
            raise bad(f"{key}.quantize.group_size", f" = {spec.quantize.group_size}: XNNPACK's 4-bit linear needs a positive "
                      "multiple of 32 (32, 64, 128, ...)")
        if spec.gates.min_teacher_accuracy is not None:
            raise bad(f"{key}.gates.min_teacher_accuracy", ": gates the teacher, not an artifact; set it in the profile's [gates]")
        for option in ARTIFACT_OPTIONS:
            if getattr(spec, option.key) is not None and spec.format not in option.formats:
                raise bad(f"{key}.{option.key}", f": {option.doc}; it applies to {' and '.join(option.formats)} artifacts, "
                          f"not {spec.format}; remove it")
        check_qat_artifact(p, spec, key, bad)
        if spec.format == "openvino":
            check_openvino(p, spec, key)
        if spec.fuse and spec.format != "onnx":
            raise bad(f"{key}.fuse", f" = true: fusion makes ONNX Runtime graphs; {spec.format} artifacts cannot use it")
        runtime = fmt.runtime
        if runtime not in p.runtimes:
            raise bad(f"{key}.format", f" = {spec.format!r} needs runtime {runtime!r}, which is not in runtimes = {list(p.runtimes)}")
        if spec.format == "tensorrt" and isinstance(spec.quantize, StaticInt8) and spec.quantize.activation_type != "int8":
            raise bad(f"{key}.quantize.activation_type", f" = {spec.quantize.activation_type!r}: TensorRT takes symmetric int8 "
                      "QDQ only; set activation_type = 'int8'")
        if spec.format == "tensorrt" and p.device.accelerator == "none":
            raise bad(f"{key}.format", " = 'tensorrt' needs a GPU; device.accelerator is 'none'")
        if spec.precision in ("fp16", "nf4") and spec.format != "onnx" and p.device.accelerator == "none":
            raise bad(f"{key}.precision", f" = {spec.precision!r} needs a GPU for {spec.format}; device.accelerator is 'none'")
    if p.search is not None and (p.bundle.artifacts or p.bundle.fallback):
        raise bad("bundle.artifacts" if p.bundle.artifacts else "bundle.fallback",
                  ": with a [search], the bundle ships the candidate that wins the budget; remove this key")
    for i, shipped in enumerate(p.bundle.artifacts):
        if shipped not in names:
            raise bad(f"bundle.artifacts[{i}]", f" = {shipped!r} is not an artifact; use one of {', '.join(map(repr, names))}")
    in_bundle = list(p.bundle.artifacts) or names
    if p.bundle.default_artifact and p.bundle.default_artifact not in in_bundle:
        raise bad("bundle.default_artifact", f" = {p.bundle.default_artifact!r} is not an artifact in the bundle; use one of {', '.join(map(repr, in_bundle))}")
    if p.budget is not None:
        if not p.budget.limits():
            raise bad("budget", ": the table sets no limit; give at least one of latency_b1_ms, latency_bmax_ms, size_mb, "
                      "peak_memory_mb, accuracy_ratio, agreement (or remove [budget])")
        if p.bundle.default_artifact:
            raise bad("bundle.default_artifact", f" = {p.bundle.default_artifact!r}: with a [budget], the build ships the "
                      "cheapest artifact that meets it as the default; remove one of the two")
    for i, name in enumerate(p.bundle.fallback):
        if name not in in_bundle:
            raise bad(f"bundle.fallback[{i}]", f" = {name!r} is not an artifact in the bundle; use one of {', '.join(map(repr, in_bundle))}")
    if 1 not in p.evaluate.batch_sizes or any(b < 1 for b in p.evaluate.batch_sizes):
        raise bad("evaluate.batch_sizes", f" = {list(p.evaluate.batch_sizes)}: must be positive and include 1")
    if p.evaluate.sequence_length > p.shapes.sequence.max:
        raise bad("evaluate.sequence_length", f" = {p.evaluate.sequence_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
    if p.task != "embedding" and p.stages.finetune.max_length > p.shapes.sequence.max:  # an embedding is not fine-tuned
        raise bad("stages.finetune.max_length", f" = {p.stages.finetune.max_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
    if any(name.endswith(".java") for name in p.stubs.templates):
        from recipes.errors import ConfigError
        from recipes.package.wordpiece import java_package

        try:
            java_package(p.stubs.java_package)
        except ConfigError as e:
            raise bad("stubs.java_package", f" = {p.stubs.java_package!r}: {str(e).split(': ', 1)[1]}") from None
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
        if m.distill is not None and m.prune is not None:
            raise bad(key, f" ({m.name}): give a distill or a prune table, not both (chain them as two models with base)")
        if m.distill is None and m.prune is None and m.qat is None:
            raise bad(key, f" ({m.name}): give a distill, a prune or a qat table")
        base = next((b for b in p.models if b.name == m.base), None)
        if base is not None and base.qat is not None:
            raise bad(f"{key}.base", f" = {m.base!r} is a quantization-aware-trained model; QAT is the last step of a chain, "
                      "so start this model from the model it was trained from")
        if m.recover is not None and m.prune is None:
            raise bad(f"{key}.recover", ": recovery training follows pruning; for a student use the distill table")
        for part, train in (("distill", m.distill), ("recover", m.recover), ("qat", m.qat)):
            if train is None:
                continue
            if not 0.0 <= train.alpha <= 1.0 or train.temperature <= 0 or train.hidden_loss < 0:
                raise bad(f"{key}.{part}", ": need 0 <= alpha <= 1, temperature > 0 and hidden_loss >= 0")
            if train.max_length > p.shapes.sequence.max:
                raise bad(f"{key}.{part}.max_length", f" = {train.max_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
        d = m.distill
        if d is not None:
            if d.layer_ids and d.layers and d.layers != len(d.layer_ids):
                raise bad(f"{key}.distill.layers", f" = {d.layers}: must match the length of layer_ids ({len(d.layer_ids)})")
            if any(i < 0 for i in d.layer_ids) or list(d.layer_ids) != sorted(set(d.layer_ids)):
                raise bad(f"{key}.distill.layer_ids", f" = {list(d.layer_ids)}: need distinct, increasing, non-negative layer indices")
        pr = m.prune
        if isinstance(pr, (HeadPrune, FfnPrune, MovementPrune)) and pr.max_length is not None and pr.max_length > p.shapes.sequence.max:
            raise bad(f"{key}.prune.max_length", f" = {pr.max_length} exceeds shapes.sequence.max = {p.shapes.sequence.max}")
        known.append(m.name)


def check_qat_artifact(p: Profile, spec: ArtifactSpec, key: str, bad) -> None:
    """A QAT model ships its own int8 program, and only that program ships a QAT model."""
    model = next((m for m in p.models if m.name == spec.model), None)
    qat = model.qat if model is not None else None
    if isinstance(spec.quantize, QatInt8):
        if qat is None:
            raise bad(f"{key}.quantize.method", f" = 'qat': model {spec.model!r} was not trained with QAT; give it a "
                      "[[models]] qat table, or use method 'static' or 'dynamic'")
        if spec.fuse:
            raise bad(f"{key}.fuse", " = true: a QAT graph is already quantized, and fusion would rewrite the layers its "
                      "scales were trained for; remove fuse")
        if spec.format == "pte" and qat.placement != "linear_io":
            raise bad(f"{key}.format", f" = 'pte': model {spec.model!r} has qat.placement = {qat.placement!r}, which "
                      "XNNPACK cannot lower; use placement 'linear_io' for a model that ships as .pte")
        siblings = [a.name for a in p.artifacts if a.model == spec.model and a.name != spec.name]
        if spec.format == "pte" and not siblings and p.gates_for(spec).min_agreement is None:
            raise bad(f"{key}.format", f" = 'pte': a QAT .pte is judged on the eval set against its sibling formats "
                      f"(XNNPACK's integer kernels round apart from the QAT program; formats/qat_int8.py), and model "
                      f"{spec.model!r} has no other artifact; add its ONNX artifact, or set gates.min_agreement")
    elif qat is not None:
        raise bad(f"{key}.quantize", f": model {spec.model!r} is quantization-aware trained; its artifacts ship its int8 "
                  "program: set precision = 'int8' and quantize = { method = 'qat' }")


def apply_budget_overrides(data: dict, overrides: dict[str, str]) -> dict:
    """The profile's TOML with `budget.<name>=<value>` from the command line on top of its [budget] table."""
    if not overrides:
        return data
    table = dict(data.get("budget") or {})
    for name, text in sorted(overrides.items()):
        if name not in budget_names():
            raise ConfigError(f"budget.{name}={text}: no such budget; use one of {', '.join(budget_names())} (see scons -h)")
        if name == "objective":
            table[name] = text
            continue
        try:
            table[name] = float(text)
        except ValueError:
            raise ConfigError(f"budget.{name}={text}: not a number; e.g. budget.{name}=4") from None
    # Asking for a budget on the command line asks the build to choose the default artifact: a profile's fixed
    # [bundle] default_artifact gives way (in the profile file itself, the two together are an error).
    bundle = {k: v for k, v in (data.get("bundle") or {}).items() if k != "default_artifact"}
    return {**data, "budget": table, **({"bundle": bundle} if "bundle" in data else {})}


def load_profile(path: Path, templates_dir: Path | None = None, budget_overrides: dict[str, str] | None = None) -> Profile:
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
    data = apply_budget_overrides(data, budget_overrides or {})
    loader = Loader(src + (" with the command line's budget." + ", budget.".join(sorted(budget_overrides)) if budget_overrides else ""))
    profile = loader.table(Profile, {k: v for k, v in data.items()}, "")
    profile = dataclasses.replace(profile, name=path.stem, source=src)
    check_consistency(profile, src, templates_dir)
    loader.check_ranges(profile)
    return resolve(profile)


def resolve(p: Profile) -> Profile:
    """Fill in defaults that follow other keys, so every stage gets its parameters resolved and explicit.

    Pruning scores (movement pruning: trains on) examples at stages.finetune.max_length unless it says otherwise.
    A [search] space becomes [[models]] and [[artifacts]] entries after the profile's own (recipes/wiring/search.py).
    """
    if p.search is not None:
        from recipes.wiring.search import expand

        models, artifacts, candidates = expand(p)
        p = dataclasses.replace(p, models=p.models + models, artifacts=p.artifacts + artifacts, candidates=candidates)
    models = []
    for m in p.models:
        if isinstance(m.prune, (HeadPrune, FfnPrune, MovementPrune)) and m.prune.max_length is None:
            m = dataclasses.replace(m, prune=dataclasses.replace(m.prune, max_length=p.stages.finetune.max_length))
        models.append(m)
    return dataclasses.replace(p, models=tuple(models))


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
