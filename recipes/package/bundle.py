"""Package a target: the bundle directory, its manifest, and a reproducible tar.gz.

The manifest lists every file with its sha256 (the runtime verifies them
before loading anything), the artifacts with format/precision/runtime, the
model's inputs and outputs, labels, shapes, the toolchain that built it and
the git revision. Nothing time- or machine-dependent goes in, so two clean
builds give byte-identical bundles and tarballs.
"""
from __future__ import annotations

import gzip
import json
import os
import platform
import shutil
import tarfile
from importlib import metadata
from pathlib import Path
from typing import Any

from recipes.fsutil import atomic_dir, atomic_path, dir_manifest

SCHEMA = "edgesmith.bundle/1"
TOOLCHAIN_PACKAGES = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "tokenizers", "jinja2")


def toolchain_versions(packages: tuple[str, ...] = TOOLCHAIN_PACKAGES) -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in packages:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def build_manifest(root: Path, meta: dict[str, Any], artifacts: list[dict[str, Any]], io_spec: dict[str, Any],
                   labels: list[str]) -> dict[str, Any]:
    files = dir_manifest(root)
    by_path = {f["path"]: f for f in files}
    arts = []
    for art in artifacts:
        entry = by_path[art["path"]]
        arts.append({**art, "sha256": entry["sha256"], "size": entry["size"]})
    return {
        "schema": SCHEMA,
        "target": meta["target"],
        "device": meta["device"],
        "model": {**meta["model"], "labels": labels},
        "tokenizer": {"path": "tokenizer/tokenizer.json", "max_length": meta["max_length"]},
        "inputs": io_spec["inputs"],
        "outputs": io_spec["outputs"],
        "shapes": meta["shapes"],
        "default_artifact": meta["default_artifact"],
        "artifacts": arts,
        "files": files,
        "toolchain": toolchain_versions(),
        "git_revision": meta["git_revision"],
        "edgesmith_version": meta["edgesmith_version"],
    }


def bundle_stage(out_dir: str, copies: list[list[str]], artifacts: list[dict], io_from: str, data_json: str, meta: dict) -> None:
    """Copy `copies` ([src, relative dst]) into out_dir and write manifest.json."""
    from recipes.formats.model_io import onnx_io

    labels = json.loads(Path(data_json).read_text(encoding="utf-8"))["labels"]
    io_spec = onnx_io(Path(io_from))
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        for src, rel in copies:
            dst = tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            if os.access(src, os.X_OK) and rel.endswith((".py", ".sh")):
                dst.chmod(0o755)
        manifest = build_manifest(tmp, meta, artifacts, io_spec, labels)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Files from an older bundle layout would break verification; drop them.
    keep = {rel for _, rel in copies} | {"manifest.json"}
    for path in sorted(out.rglob("*"), reverse=True):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel not in keep:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def write_tarball(root: Path, members: list[str], dst: Path) -> None:
    """A tar.gz whose bytes depend only on the members' contents and names."""
    with atomic_path(dst) as tmp:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            with tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
                for rel in sorted(members):
                    path = root / rel
                    info = tarfile.TarInfo(rel)
                    info.size = path.stat().st_size
                    info.mtime = 0
                    info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)


def archive_stage(bundle_dir: str, dst: str) -> None:
    root = Path(bundle_dir)
    members = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    write_tarball(root, members, Path(dst))
