"""Parameter fields that carry the range bounding them.

Every numeric field of a stage's parameter dataclass is declared with
`bounded(...)` (its allowed range) or `unbounded(...)` (with the reason it
needs none, e.g. a seed). The profile loader checks the range once, when the
profile is read, and reports file, key, value and the allowed range in one
line; a test walks every parameter dataclass and fails on a numeric field
declared with neither. The stage that receives the value trusts it.

Only the standard library here: stage modules import this, so it is part of
their signature, and SCons imports it while reading the build files.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Bounds:
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and not math.isfinite(value):
            return False
        if self.min is not None and (value <= self.min if self.min_exclusive else value < self.min):
            return False
        if self.max is not None and (value >= self.max if self.max_exclusive else value > self.max):
            return False
        return True

    def describe(self, name: str = "value") -> str:
        """`0 < keep_ratio < 1`, `1 <= epochs <= 1000`, `workspace_mb >= 1`."""
        low = "" if self.min is None else f"{_num(self.min)} {'<' if self.min_exclusive else '<='} "
        high = "" if self.max is None else f" {'<' if self.max_exclusive else '<='} {_num(self.max)}"
        return f"{low}{name}{high}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def bounded(default: Any = dataclasses.MISSING, *, min: float | None = None, max: float | None = None,
            min_exclusive: bool = False, max_exclusive: bool = False, **metadata: Any) -> Any:
    """A dataclass field whose value (or each item of a tuple value) must lie in the range."""
    meta = {"bounds": Bounds(min, max, min_exclusive, max_exclusive), **metadata}
    return dataclasses.field(default=default, metadata=meta)


def unbounded(default: Any, why: str, **metadata: Any) -> Any:
    """A numeric field that needs no range (a seed); `why` says so for the reader and the field walker."""
    return dataclasses.field(default=default, metadata={"unbounded": why, **metadata})


def bounds_of(field: dataclasses.Field) -> Bounds | None:
    return field.metadata.get("bounds")


# Shared limits, so the same quantity has the same range everywhere.
MAX_THREADS = 1024          # threads a stage may ask for; 0 where the field says "0 = every core"
MAX_EPOCHS = 1000
MAX_SEQUENCE = 65536
MAX_BATCH = 65536
MAX_SAMPLES = 10_000_000
SEED_MAX = 2**63 - 1       # torch.manual_seed takes a 64-bit seed
