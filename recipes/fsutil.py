"""Atomic writes, file hashing and directory manifests.

Every stage writes into a temporary sibling and renames into place, so an
interrupted build never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

# The build hashes files with the very function the bundle runtime verifies them with.
from runtime.integrity import sha256_file

TMP_SUFFIX = ".tmp"


def _tmp_prefix(name: str) -> str:
    # The pid lets a later build tell a dead build's leftovers from a live
    # parallel stage's work in progress.
    return f".{name}.{os.getpid()}."


def remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries left by builds that were killed (their pid is gone)."""
    if not directory.is_dir():
        return
    for entry in directory.iterdir():
        parts = entry.name.split(".")
        if not (entry.name.startswith(".") and entry.name.endswith(TMP_SUFFIX) and len(parts) >= 4 and parts[-3].isdigit()):
            continue
        pid = int(parts[-3])
        try:
            os.kill(pid, 0)
            continue  # still running
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(dst: Path) -> Iterator[Path]:
    """Yield a temporary path next to `dst`; rename it onto `dst` on success."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dst.parent)
    fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(dst.name), suffix=TMP_SUFFIX, dir=dst.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    # mkstemp makes 0600; outputs are ordinary 0644 files unless the caller
    # changes the mode (an executable script), which must survive the rename.
    tmp_path.chmod(0o644)
    try:
        yield tmp_path
        os.replace(tmp_path, dst)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(dst: Path) -> Iterator[Path]:
    """Yield a temporary directory; on success move each file into `dst`.

    Files are moved one by one (the directory itself may hold other stages'
    outputs in a shared build tree). A crash part-way leaves some final files
    but SCons has recorded no signature for them, so they are rebuilt.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(dst.parent)
    tmp = Path(tempfile.mkdtemp(prefix=_tmp_prefix(dst.name), suffix=TMP_SUFFIX, dir=dst.parent))
    try:
        yield tmp
        for src in sorted(p for p in tmp.rglob("*") if p.is_file()):
            target = dst / src.relative_to(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            # Some writers (safetensors, mkstemp) create 0600 files; outputs
            # are ordinary readable files, executable where the writer said so.
            src.chmod(0o755 if src.stat().st_mode & 0o100 else 0o644)
            os.replace(src, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, data: Any) -> None:
    """Deterministic JSON (sorted keys, trailing newline), written atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def dir_manifest(root: Path, exclude: tuple[str, ...] = ("manifest.json",)) -> list[dict[str, Any]]:
    """Every file under `root` (sorted, relative POSIX paths) with size and sha256."""
    root = Path(root)
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel in exclude:
            continue
        rows.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return rows
