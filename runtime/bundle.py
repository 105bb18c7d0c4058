"""Opening a bundle (directory or archive), verifying it, and making classifiers.

Verification happens in load_bundle, before any model or tokenizer is read, so
a Bundle object is only ever handed out for contents that match the manifest.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

from .archive import extract_archive
from .errors import BundleError
from .integrity import verify_files
from .manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from .onnx_classifier import Classifier


class Bundle:
    """A verified bundle. For archives, `root` is a temporary extraction that
    lives as long as this object; close() (or `with`) removes it early."""

    def __init__(self, root: Path, manifest: Manifest, *, source: Optional[Path] = None,
                 tempdir: Optional[Path] = None) -> None:
        self.root = Path(root)
        self.source = Path(source) if source is not None else self.root  # what the user passed, for messages
        self.manifest = manifest
        # finalize also runs at interpreter exit, so a forgotten close() does
        # not leave extracted models behind in the temp directory.
        self._cleanup = weakref.finalize(self, shutil.rmtree, str(tempdir), True) if tempdir else None

    @property
    def labels(self) -> List[str]:
        return list(self.manifest["model"]["labels"])

    @property
    def artifacts(self) -> List[Dict[str, Any]]:
        return self.manifest["artifacts"]

    @property
    def default_artifact(self) -> str:
        return self.manifest["default_artifact"]

    @property
    def target(self) -> Optional[str]:
        return self.manifest.get("target")

    @property
    def closed(self) -> bool:
        return self._cleanup is not None and not self._cleanup.alive

    def artifact(self, name: str) -> Dict[str, Any]:
        for entry in self.artifacts:
            if entry["name"] == name:
                return entry
        available = ", ".join(a["name"] for a in self.artifacts)
        raise BundleError(f"bundle {self.source}: no artifact named {name!r}; available: {available}")

    def classifier(self, artifact: Optional[str] = None, threads: Optional[int] = None,
                   providers: Optional[Sequence[Any]] = None) -> Classifier:
        """A Classifier for `artifact` (default: the manifest's default_artifact)."""
        from .onnx_classifier import FORMATS, Classifier  # numpy + onnxruntime only when running

        if self.closed:
            raise BundleError(f"bundle {self.source}: the bundle is closed; load it again with load_bundle()")
        entry = self.artifact(artifact if artifact is not None else self.default_artifact)
        if entry["format"] not in FORMATS:
            runnable = [a["name"] for a in self.artifacts if a["format"] in FORMATS]
            raise BundleError(
                f"bundle {self.source}: artifact {entry['name']!r} has format {entry['format']!r}, which this runtime "
                f"cannot run (it runs {', '.join(FORMATS)}); runnable artifacts: {', '.join(runnable) or 'none'}"
            )
        outputs = self.manifest.get("outputs") or []
        tokenizer = self.manifest["tokenizer"]
        return Classifier(
            self.root / entry["path"],
            self.root / tokenizer["path"],
            self.labels,
            max_length=tokenizer["max_length"],
            threads=threads,
            providers=providers,
            output_name=outputs[0]["name"] if outputs else None,
            context=f"bundle {self.source}: artifact {entry['name']!r} ({entry['path']})",
        )

    def close(self) -> None:
        """Remove the temporary extraction of an archive bundle (no-op for directories).
        Classifiers already made keep working: model and tokenizer are in memory."""
        if self._cleanup is not None:
            self._cleanup()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Bundle({str(self.source)!r}, artifacts={[a['name'] for a in self.artifacts]!r})"


def load_bundle(path: str | os.PathLike[str], verify: bool = True) -> Bundle:
    """Open a bundle directory or .tar.gz/.tgz archive; with verify, check every
    listed file's size and sha256 first. Raises BundleError."""
    source = Path(path)
    if source.is_dir():
        return _open(source, source, None, verify)
    if not source.is_file():
        raise BundleError(f"bundle {source}: no such file or directory; pass a bundle directory or a .tar.gz made by edgesmith")
    tempdir = Path(tempfile.mkdtemp(prefix="edgesmith-bundle-"))
    try:
        extract_archive(source, tempdir)
        return _open(tempdir, source, tempdir, verify)
    except BaseException:
        shutil.rmtree(tempdir, ignore_errors=True)
        raise


def _open(root: Path, source: Path, tempdir: Optional[Path], verify: bool) -> Bundle:
    manifest = read_manifest(root, str(source), from_archive=tempdir is not None)
    if verify:
        verify_files(root, manifest["files"], str(source))
    return Bundle(root, manifest, source=source, tempdir=tempdir)
