"""Canonical JSON and short hashes: the identity of a stage's parameters.

A stage's output directory is named after a short hash of what determines it,
so two targets asking for the same thing share one node, and a parameter
change lands in a new directory instead of overwriting a shared one.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Callable


def to_plain(value: Any, path: Callable[[Path], str] = str) -> Any:
    """Dataclasses, tuples and paths as plain JSON-able values; `path` spells each Path."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name), path) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_plain(v, path) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v, path) for v in value]
    if isinstance(value, Path):
        return path(value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def canonical_json(value: Any) -> str:
    return json.dumps(to_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def short_hash(value: Any, length: int = 10) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:length]
