"""The edgesmith version, written in this one place: pyproject.toml, the runtime and the manifests read it."""
from __future__ import annotations

VERSION = "0.1.0"
