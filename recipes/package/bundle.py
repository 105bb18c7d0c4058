"""Package a target: the bundle directory, its manifest, and a reproducible tar.gz.

The manifest lists every file with its sha256 (the runtime verifies them
before loading anything), the artifacts with format/precision/runtime, the
model's inputs and outputs, labels, shapes, the toolchain that built it and
the git revision. Nothing time- or machine-dependent goes in, so two clean
builds give byte-identical bundles and tarballs.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from recipes.fsutil import atomic_dir, dir_manifest
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Built, Graph, Model

SCHEMA = "edgesmith.bundle/1"


@dataclass(frozen=True)
class BundleParams:
    default_artifact: str = ""
    # Artifacts shipped in the bundle (all when empty); every artifact is
    # still built, evaluated and reported.
    artifacts: tuple[str, ...] = ()
    # Where the runtime goes when the default artifact needs CPU features the host
    # lacks (an OpenVINO bf16 or int8 model on a CPU without AMX or VNNI), in order;
    # after these, the other artifacts in profile order. One printed note says so.
    fallback: tuple[str, ...] = ()
TOOLCHAIN_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "jinja2", "openvino",
                      "nncf")


def toolchain_versions(packages: tuple[str, ...] = TOOLCHAIN_PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(root: Path, meta: dict[str, Any], artifacts: list[dict[str, Any]], io_spec: dict[str, Any],
                   labels: list[str], embedding: dict[str, Any] | None = None) -> dict[str, Any]:
    """`embedding`: a sentence-embedding bundle's vector size and pooling (None: a classifier, with `labels`)."""
    files = dir_manifest(root)
    by_path = {f["path"]: f for f in files}
    arts = []
    for art in artifacts:
        entry = by_path[art["path"]]
        arts.append({**art, "sha256": entry["sha256"], "size": entry["size"]})
    return {
        "schema": SCHEMA,
        "task": "embedding" if embedding else "classification",
        "target": meta["target"],
        "device": meta["device"],
        "model": {**meta["model"], "labels": labels, **({"embedding": embedding} if embedding else {})},
        "tokenizer": {"path": "tokenizer/tokenizer.json", "max_length": meta["max_length"]},
        "inputs": io_spec["inputs"],
        "outputs": io_spec["outputs"],
        "shapes": meta["shapes"],
        "default_artifact": meta["default_artifact"],
        "fallback": meta.get("fallback", []),
        # The machine the report's latency and memory were measured on: the build host, or under executor=ray
        # the device's own node (recipes/measure/latency.py measured_on).
        "measured_on": meta.get("measured_on", {}),
        "artifacts": arts,
        "files": files,
        "toolchain": toolchain_versions(),
        "git_revision": meta["git_revision"],
        "edgesmith_version": meta["edgesmith_version"],
        # Only with a [budget]: what it was, what won and by how much (recipes/measure/budget.py).
        **({"selection": meta["selection"]} if "selection" in meta else {}),
    }


@dataclass(frozen=True)
class BundleArgs:
    out_dir: Path
    copies: tuple[tuple[Path, str], ...]     # (build file, path inside the bundle)
    artifacts: tuple[dict, ...]              # the manifest's artifact entries
    io_from: Path                            # an ONNX whose inputs/outputs the manifest describes
    data_json: Path
    meta: dict
    # The [budget]'s selection (recipes/measure/budget.py): its winner is the default artifact, and the
    # manifest records the budget and the winner's margins.
    selection: Optional[Path] = None
    # The report: where latency was measured (the build host, or the device's node under executor=ray).
    report_json: Optional[Path] = None
    # An embedding build's teacher pooling.json (recipes/models/embedding.py): the manifest's model.embedding.
    pooling_json: Optional[Path] = None


def chosen_by_budget(selection_json: Path) -> dict[str, Any]:
    """The manifest's record of the budget's choice (the select stage has already refused a build with no winner)."""
    selection = json.loads(selection_json.read_text(encoding="utf-8"))
    return {"budget": selection["budget"], "winner": selection["winner"], "margins": selection["margins"],
            "unchecked": selection["unchecked"],
            "candidates": {c["name"]: c["status"] for c in selection["candidates"]}}


def build(args: BundleArgs) -> None:
    """Copy `copies` into out_dir and write manifest.json."""
    from recipes.formats.model_io import onnx_io

    meta = dict(args.meta)
    if args.report_json is not None:
        # The machine's kind (CPU, architecture, features), not its name: a bundle stays byte-identical whichever
        # node of the same kind measured it; report.json and placement.json name the node.
        measured = json.loads(args.report_json.read_text(encoding="utf-8")).get("measured_on")
        if measured:
            meta["measured_on"] = {k: v for k, v in measured.items() if k != "node"}
    if args.selection is not None:
        meta["selection"] = chosen_by_budget(args.selection)
        meta["default_artifact"] = meta["selection"]["winner"]
    labels = json.loads(args.data_json.read_text(encoding="utf-8"))["labels"]
    embedding = None
    if args.pooling_json is not None:
        pooling = json.loads(args.pooling_json.read_text(encoding="utf-8"))
        embedding = {"dimension": pooling["dimension"], "pooling": pooling["mode"], "normalize": pooling["normalize"]}
    io_spec = onnx_io(args.io_from)
    out = args.out_dir
    with atomic_dir(out) as tmp:
        for src, rel in args.copies:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if os.access(src, os.X_OK) and rel.endswith((".py", ".sh")):
                dst.chmod(0o755)
        manifest = build_manifest(tmp, meta, list(args.artifacts), io_spec, labels, embedding)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Files from an older bundle layout would break verification; drop them.
    keep = {rel for _, rel in args.copies} | {"manifest.json"}
    for path in sorted(out.rglob("*"), reverse=True):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


STAGE = Stage("bundle", BundleArgs, build, modules=("package.bundle", "formats.model_io"), packages=("onnx",))


def declare(g: "Graph", copies: list[tuple[Path, str]], artifacts: list[dict], io_from: Path, meta: dict,
            bundle_dir: Path, extra_sources: list[Path], selection: Path | None = None,
            pooling_json: Path | None = None) -> list[Path]:
    """The bundle directory and its manifest; returns every file in it (the archive's sources)."""
    report_json = next((p for p in extra_sources if p.name == "report.json"), None)
    args = BundleArgs(out_dir=bundle_dir, copies=tuple(copies), artifacts=tuple(artifacts), io_from=io_from,
                      data_json=g.data_dir / "data.json", meta=meta, selection=selection, report_json=report_json,
                      pooling_json=pooling_json)
    targets = [bundle_dir / rel for _, rel in copies] + [bundle_dir / "manifest.json"]
    g.stage(STAGE, targets, [p for p, _ in copies] + [g.data_dir / "data.json", io_from] + extra_sources
            + ([selection] if selection else []) + ([pooling_json] if pooling_json else []), args)
    return targets
