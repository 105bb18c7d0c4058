"""Reading and structurally validating manifest.json.

Everything the runtime later relies on is checked here, once, so the rest of
the package can index the manifest without defensive code. Unknown keys are
ignored: newer builders may add information older runtimes do not need.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Dict, List, Optional

from .errors import BundleError, one_line

MANIFEST_NAME = "manifest.json"
SCHEMA_PREFIX = "edgesmith.bundle/"
REBUILD = "rebuild the bundle with edgesmith"
_SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")

Manifest = Dict[str, Any]


# What a bundle can be: a text classifier, or a sentence-embedding model (one vector per text).
TASKS = ("classification", "embedding")
POOLINGS = ("mean", "cls", "max")

def read_manifest(root: Path, where: str, *, from_archive: bool = False) -> Manifest:
    """Load `root/manifest.json` and validate it; `where` names the bundle in messages."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        nested = sorted(p.relative_to(root).as_posix() for p in root.glob(f"*/{MANIFEST_NAME}"))
        raise missing_manifest(where, nested, root if not from_archive else None)
    return parse_manifest(path.read_bytes(), where)


def parse_manifest(raw: bytes, where: str) -> Manifest:
    """The manifest in `raw` (manifest.json's bytes), validated."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BundleError(f"bundle {where}: {MANIFEST_NAME} is not valid JSON ({one_line(exc)}); {REBUILD}") from None
    validate_manifest(data, where)
    return data


def missing_manifest(where: str, nested: List[str], root: Optional[Path]) -> BundleError:
    """No manifest.json at the bundle root; `nested` are the ones one level down, `root` None for an archive."""
    # A common mistake is archiving the bundle directory itself instead of its
    # contents; name the nested manifest so the fix is obvious.
    if root is None and nested:
        hint = (f"archive members must be relative to the bundle root (found {nested[0]!r}); "
                "recreate it with: tar -C BUNDLE_DIR -czf BUNDLE.tar.gz .")
    elif nested and root is not None:
        hint = f"did you mean the directory {str(root / Path(nested[0]).parent)!r}?"
    else:
        hint = "pass a bundle directory or .tar.gz archive made by edgesmith"
    return BundleError(f"bundle {where}: {MANIFEST_NAME} not found at the bundle root; {hint}")


def _fail(where: str, key: str, problem: str, fix: str = REBUILD) -> BundleError:
    return BundleError(f"bundle {where}: {MANIFEST_NAME} key {key!r} {problem}; {fix}")


def _get(obj: dict, name: str, key: str, where: str, kind: type) -> Any:
    """obj[name] with a type check; `key` is the dotted name used in messages."""
    if name not in obj:
        raise _fail(where, key, "is missing")
    value = obj[name]
    # bool is an int subclass, but `"size": true` is never meant as a number.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _fail(where, key, f"must be {_KIND_NAMES.get(kind, kind.__name__)}, got {value!r:.60}")
    return value


_KIND_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer"}


def check_relative_path(value: str, key: str, where: str) -> str:
    """A manifest path must be a normalized POSIX path that stays inside the bundle."""
    if not value:
        raise _fail(where, key, "is empty")
    if "\\" in value:
        raise _fail(where, key, f"is {value!r}: manifest paths use '/' separators")
    if value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise _fail(where, key, f"is {value!r}: paths must be relative to the bundle root")
    if any(part in ("", ".", "..") for part in value.split("/")):
        raise _fail(where, key, f"is {value!r}: paths must stay inside the bundle (no '..', '.' or empty components)")
    return value


def validate_manifest(data: Any, where: str) -> None:
    if not isinstance(data, dict):
        raise BundleError(f"bundle {where}: {MANIFEST_NAME} must hold a JSON object, got {type(data).__name__}; {REBUILD}")
    schema = _get(data, "schema", "schema", where, str)
    if not schema.startswith(SCHEMA_PREFIX):
        raise _fail(where, "schema", f"is {schema!r}, expected '{SCHEMA_PREFIX}<version>'", "this is not an edgesmith bundle manifest; " + REBUILD)

    model = _get(data, "model", "model", where, dict)
    task = data.get("task", "classification")  # bundles from before sentence embeddings are classifiers
    if task not in TASKS:
        raise _fail(where, "task", f"is {task!r:.40}, expected one of {', '.join(TASKS)}")
    if task == "embedding":
        _validate_embedding(model, where)
    else:
        labels = _get(model, "labels", "model.labels", where, list)
        if not labels or not all(isinstance(label, str) and label for label in labels):
            raise _fail(where, "model.labels", "must be a non-empty list of non-empty strings")
        if len(set(labels)) != len(labels):
            raise _fail(where, "model.labels", f"has duplicates: {labels!r:.80}")

    tokenizer = _get(data, "tokenizer", "tokenizer", where, dict)
    check_relative_path(_get(tokenizer, "path", "tokenizer.path", where, str), "tokenizer.path", where)
    if _get(tokenizer, "max_length", "tokenizer.max_length", where, int) < 1:
        raise _fail(where, "tokenizer.max_length", f"must be >= 1, got {tokenizer['max_length']}")

    files = _validate_files(_get(data, "files", "files", where, list), where)
    artifacts = _validate_artifacts(_get(data, "artifacts", "artifacts", where, list), files, where)

    default = _get(data, "default_artifact", "default_artifact", where, str)
    if default not in artifacts:
        raise _fail(where, "default_artifact", f"is {default!r}, which is not an artifact (available: {', '.join(artifacts)})")

    # The tokenizer is as much a part of the model as the weights: a swapped
    # vocabulary silently changes predictions, so it must be hash-covered too.
    if tokenizer["path"] not in files:
        raise _fail(where, "tokenizer.path", f"is {tokenizer['path']!r}, which is not listed in \"files\" (so it cannot be verified)")

    fallback = data.get("fallback", [])
    if not isinstance(fallback, list) or not all(isinstance(n, str) and n in artifacts for n in fallback):
        raise _fail(where, "fallback", f"is {fallback!r:.80}: must list artifact names (available: {', '.join(artifacts)})")

    outputs = data.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs):
            raise _fail(where, "outputs", "must be a list of objects with a string \"name\"")


def _validate_embedding(model: dict, where: str) -> None:
    """model.embedding of a sentence-embedding bundle: the vector's size and how the graph pooled it."""
    spec = _get(model, "embedding", "model.embedding", where, dict)
    dim = spec.get("dimension")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise _fail(where, "model.embedding.dimension", f"must be a positive integer, got {dim!r:.40}")
    if spec.get("pooling") not in POOLINGS:
        raise _fail(where, "model.embedding.pooling", f"is {spec.get('pooling')!r:.40}, expected one of {', '.join(POOLINGS)}")
    if not isinstance(spec.get("normalize"), bool):
        raise _fail(where, "model.embedding.normalize", f"must be true or false, got {spec.get('normalize')!r:.40}")


def _validate_files(files: List[Any], where: str) -> Dict[str, dict]:
    by_path: Dict[str, dict] = {}
    for i, entry in enumerate(files):
        key = f"files[{i}]"
        if not isinstance(entry, dict):
            raise _fail(where, key, "must be an object with path, sha256 and size")
        path = check_relative_path(_get(entry, "path", f"{key}.path", where, str), f"{key}.path", where)
        sha = _get(entry, "sha256", f"{key}.sha256", where, str)
        if not _SHA256.match(sha):
            raise _fail(where, f"{key}.sha256", f"is {sha!r:.80}, expected 64 hex digits")
        if _get(entry, "size", f"{key}.size", where, int) < 0:
            raise _fail(where, f"{key}.size", f"must be >= 0, got {entry['size']}")
        if path in by_path:
            raise _fail(where, f"{key}.path", f"repeats {path!r}")
        by_path[path] = entry
    return by_path


def _validate_artifacts(artifacts: List[Any], files: Dict[str, dict], where: str) -> Dict[str, dict]:
    if not artifacts:
        raise _fail(where, "artifacts", "is empty")
    by_name: Dict[str, dict] = {}
    for i, entry in enumerate(artifacts):
        key = f"artifacts[{i}]"
        if not isinstance(entry, dict):
            raise _fail(where, key, "must be an object with name, path and format")
        name = _get(entry, "name", f"{key}.name", where, str)
        if not name or name in by_name:
            raise _fail(where, f"{key}.name", f"is {name!r}: artifact names must be non-empty and unique")
        path = check_relative_path(_get(entry, "path", f"{key}.path", where, str), f"{key}.path", where)
        _get(entry, "format", f"{key}.format", where, str)
        # Only "files" entries are hashed, so an artifact outside them could be
        # swapped without detection.
        listed = files.get(path)
        if listed is None:
            raise _fail(where, f"{key}.path", f"is {path!r}, which is not listed in \"files\" (so it cannot be verified)")
        sha = entry.get("sha256")
        if sha is not None and (not isinstance(sha, str) or sha.lower() != listed["sha256"].lower()):
            raise _fail(where, f"{key}.sha256", f"does not match the \"files\" entry for {path!r}")
        size = entry.get("size")
        if size is not None and size != listed["size"]:
            raise _fail(where, f"{key}.size", f"is {size!r}, but the \"files\" entry for {path!r} says {listed['size']}")
        needs = entry.get("requires_cpu_any", [])
        if not isinstance(needs, list) or not all(isinstance(n, str) and n for n in needs):
            raise _fail(where, f"{key}.requires_cpu_any", f"is {needs!r:.80}: must be a list of CPU feature names")
        by_name[name] = entry
    return by_name
