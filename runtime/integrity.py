"""Size and sha256 checks of every file the manifest lists.

Verification runs before any model or tokenizer is loaded, so a truncated copy
or a tampered file is reported as such instead of as an obscure parse error or,
worse, as silently different predictions. Files not listed (e.g. __pycache__
written by running the bundle's own runtime copy) are ignored.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from .errors import BundleError

CHUNK = 1 << 20  # stream in 1 MiB blocks: model files can be larger than device RAM allows
AGAIN = "rebuild it or copy it again"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _short(digest: str) -> str:
    return digest[:12] + "…"


def verify_files(root: Path, files: Iterable[dict], where: str) -> None:
    """Raise BundleError at the first listed file that is missing or differs."""
    for entry in files:
        rel = entry["path"]
        path = root / rel
        if not path.is_file():
            raise BundleError(f"bundle {where}: {rel} is missing (listed in manifest \"files\"): the bundle is incomplete; {AGAIN}")
        size = path.stat().st_size
        if size != entry["size"]:  # cheap check first: catches truncated copies without hashing
            raise BundleError(
                f"bundle {where}: {rel} size mismatch (manifest {entry['size']} bytes, file {size} bytes): "
                f"the bundle was modified or corrupted; {AGAIN}"
            )
        expected = entry["sha256"].lower()
        actual = sha256_file(path)
        if actual != expected:
            raise BundleError(
                f"bundle {where}: {rel} sha256 mismatch (manifest {_short(expected)}, file {_short(actual)}): "
                f"the bundle was modified or corrupted; {AGAIN}"
            )
