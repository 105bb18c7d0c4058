"""Opening a bundle (directory or archive), verifying it, and making classifiers.

Verification happens in load_bundle, before any model or tokenizer is read, so
a Bundle object is only ever handed out for contents that match the manifest.
"""
from __future__ import annotations

import importlib
import os
import shutil
import sys
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence

from .archive import extract_archive
from .cpu_features import host_features, lacking
from .errors import BundleError
from .integrity import verify_files
from .manifest import Manifest, read_manifest

if TYPE_CHECKING:
    from .onnx_classifier import Classifier

# Artifact formats this runtime runs, and the module and class that run each
# (imported when used: numpy and the runtime library load only then).
CLASSIFIERS = {"onnx": ("onnx_classifier", "Classifier"), "openvino": ("openvino_classifier", "OpenVinoClassifier")}
# The same formats, for a sentence-embedding bundle (manifest "task": "embedding"): one vector per text.
EMBEDDERS = {"onnx": ("embedder", "OnnxEmbedder"), "openvino": ("embedder", "OpenVinoEmbedder")}


def _classifier_class(fmt: str, table: Dict[str, Any] = CLASSIFIERS) -> Any:
    module, name = table[fmt]
    return getattr(importlib.import_module(f".{module}", __package__), name)


def _print_note(message: str) -> None:
    print(message, file=sys.stderr)


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
        return list(self.manifest["model"].get("labels") or [])

    @property
    def task(self) -> str:
        """"classification" (labels, predict) or "embedding" (a vector per text, embed)."""
        return self.manifest.get("task", "classification")

    @property
    def dimension(self) -> Optional[int]:
        """An embedding bundle's vector size (None for a classifier)."""
        return (self.manifest["model"].get("embedding") or {}).get("dimension")

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

    def cannot_run_here(self, entry: Dict[str, Any]) -> Optional[str]:
        """Why this host should not run `entry` (None: it can): its CPU lacks what the artifact was built for."""
        return lacking(entry.get("requires_cpu_any") or [], host_features(), entry.get("requires_why", ""))

    def runnable_artifact(self, requested: Optional[str], note: Callable[[str], None] = _print_note) -> Dict[str, Any]:
        """The manifest entry to run: `requested`, or the default artifact, or, when the
        default needs CPU features this host lacks, the next in the manifest's
        fallback order, with one `note`. An explicit request is never swapped."""
        entry = self.artifact(requested if requested is not None else self.default_artifact)
        problem = self.cannot_run_here(entry)
        if problem is None:
            return entry
        order = [n for n in self.manifest.get("fallback", []) if n != entry["name"]]
        order += [a["name"] for a in self.artifacts if a["name"] not in order and a["name"] != entry["name"]]
        runnable = [n for n in order if self.cannot_run_here(self.artifact(n)) is None
                    and self.artifact(n)["format"] in CLASSIFIERS]
        if requested is not None:
            alternative = f"; run --artifact {runnable[0]} instead" if runnable else ""
            raise BundleError(f"bundle {self.source}: artifact {entry['name']!r} {problem}{alternative}")
        if not runnable:
            raise BundleError(f"bundle {self.source}: the default artifact {entry['name']!r} {problem}, and no other "
                              "artifact of this bundle runs here")
        note(f"note: artifact {entry['name']!r} {problem}; running {runnable[0]!r} instead")
        return self.artifact(runnable[0])

    def classifier(self, artifact: Optional[str] = None, threads: Optional[int] = None,
                   providers: Optional[Sequence[Any]] = None, note: Callable[[str], None] = _print_note) -> Classifier:
        """A classifier for `artifact` (default: the manifest's default_artifact, or its fallback on this host)."""
        if self.task != "classification":
            raise BundleError(f"bundle {self.source}: a sentence-embedding bundle has no labels to classify with; use "
                              "bundle.embedder() (run.py prints vectors, or --similarity)")
        return self._open(artifact, threads, providers, note, CLASSIFIERS, self.labels)

    def embedder(self, artifact: Optional[str] = None, threads: Optional[int] = None,
                 providers: Optional[Sequence[Any]] = None, note: Callable[[str], None] = _print_note) -> Any:
        """An embedder for `artifact` of a sentence-embedding bundle: embed(texts) -> float32 [n, dimension]."""
        if self.task != "embedding":
            raise BundleError(f"bundle {self.source}: a {self.task} bundle makes no sentence vectors; use "
                              "bundle.classifier()")
        return self._open(artifact, threads, providers, note, EMBEDDERS, self.dimension)

    def _open(self, artifact: Optional[str], threads: Optional[int], providers: Optional[Sequence[Any]],
              note: Callable[[str], None], table: Dict[str, Any], meaning: Any) -> Any:
        """`table`'s backend for the artifact; `meaning`: what its output is (the labels, or the dimension)."""
        if self.closed:
            raise BundleError(f"bundle {self.source}: the bundle is closed; load it again with load_bundle()")
        entry = self.runnable_artifact(artifact, note)
        if entry["format"] not in table:
            runnable = [a["name"] for a in self.artifacts if a["format"] in table]
            raise BundleError(
                f"bundle {self.source}: artifact {entry['name']!r} has format {entry['format']!r}, which this runtime "
                f"cannot run (it runs {', '.join(table)}); runnable artifacts: {', '.join(runnable) or 'none'}"
            )
        outputs = self.manifest.get("outputs") or []
        tokenizer = self.manifest["tokenizer"]
        return _classifier_class(entry["format"], table)(
            self.root / entry["path"],
            self.root / tokenizer["path"],
            meaning,
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
