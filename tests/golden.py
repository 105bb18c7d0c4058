"""Golden-file comparison; run with UPDATE_GOLDEN=1 to rewrite the files."""
from __future__ import annotations

import os
from pathlib import Path

GOLDEN = Path(__file__).parent / "golden"


def check(name: str, actual: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
    assert path.exists(), f"{path} missing; run the tests once with UPDATE_GOLDEN=1 and review the file"
    assert actual == path.read_text(encoding="utf-8"), f"{name} differs from {path}; if intended, UPDATE_GOLDEN=1 and review the diff"
