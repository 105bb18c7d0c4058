"""The bundle as a reproducible tar.gz: exactly the manifest's files, sorted, with fixed metadata.

Members come from manifest.json, not from a directory walk: running the bundle
in place leaves files behind (`__pycache__/*.pyc` from `run.py`), and they
must neither enter the archive nor change its bytes.
"""
from __future__ import annotations

import gzip
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recipes.fsutil import atomic_path
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Graph


@dataclass(frozen=True)
class ArchiveArgs:
    bundle_dir: Path
    dst: Path


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


def manifest_members(root: Path) -> list[str]:
    """manifest.json and every file it lists."""
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    return ["manifest.json"] + [f["path"] for f in manifest["files"]]


def build(args: ArchiveArgs) -> None:
    write_tarball(args.bundle_dir, manifest_members(args.bundle_dir), args.dst)


STAGE = Stage("archive", ArchiveArgs, build, modules=("package.archive",))


def declare(g: "Graph", bundle_dir: Path, bundle_files: list[Path], dst: Path) -> list:
    return g.stage(STAGE, [dst], bundle_files, ArchiveArgs(bundle_dir=bundle_dir, dst=dst))
