"""What a build stage is, and how its typed arguments cross the process boundary.

A stage is one module under recipes/ that owns its pieces:

    @dataclass(frozen=True)
    class QuantizeArgs:               # paths + typed parameters
        src: Path; dst: Path; params: DynamicInt8 | StaticInt8 | ...

    def build(args: QuantizeArgs) -> dict: ...          # pure: testable without SCons
    def declare(g, ...) -> Path: ...                    # how it enters the graph
    STAGE = Stage("quantize", QuantizeArgs, build, modules=(...), packages=("onnx", "onnxruntime"))

The graph serialises the Args dataclass to canonical JSON (the stage spec,
part of every target's signature); `stage_runner` rebuilds the very same
dataclass from it with `decode` and calls `build`. The values were validated
when the profile was loaded, so nothing is checked twice: `decode` only
restores types (paths, tuples, nested and tagged dataclasses).

Standard library only: this module is in every stage's signature.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Union


@dataclass(frozen=True)
class Stage:
    name: str                       # the name SCons prints: [quantize] build/...
    args: type                      # the frozen Args dataclass `build` takes
    build: Callable[[Any], Any]
    # Recipe modules (dotted, below recipes/) whose code shapes the output:
    # SCons rebuilds the stage when one changes. tests/test_stage_table.py
    # derives them from the real imports and fails on any difference.
    modules: tuple[str, ...]
    # Libraries whose version shapes the output; their versions enter the spec.
    packages: tuple[str, ...] = ()
    # "exclusive" stages (latency) run with no other stage running, so timings
    # are not disturbed by a parallel (-j) build.
    lock: Literal["shared", "exclusive"] = "shared"


@dataclass(frozen=True)
class Format:
    """An artifact format: what a profile's `format = "..."` builds.

    Registered in recipes/wiring/registry.py. `declare(g, spec, model)` adds
    the stages that make one artifact of this format and returns its Built.
    """
    name: str
    runtime: str                                # the runtime that runs it on the device
    precisions: dict[str, tuple[str, ...]]      # precision -> quantize methods it takes (() = none)
    declare: Callable[..., Any]


@dataclass(frozen=True)
class ModelStep:
    """A step a `[[models]]` entry can take (its table key, e.g. `distill = {...}`).

    `declare(g, base, teacher, params) -> Model`. Steps apply in `order`, each
    on the previous one's model (prune at 20, then recover at 30).
    """
    key: str
    params: Any                                 # the table's dataclass, or a union of them
    declare: Callable[..., Any]
    order: int
    metadata: dict = dataclasses.field(default_factory=dict)   # tagged() for a union
    doc: str = ""


@dataclass(frozen=True)
class ArtifactOption:
    """An optional pass on an artifact of some formats (its key in the `[[artifacts]]` table).

    `declare(g, spec, model, path, params) -> Path` turns the artifact's file
    into the transformed one; options apply in `order`, after quantization.
    """
    key: str
    params: type
    formats: tuple[str, ...]
    declare: Callable[..., Any]
    order: int
    doc: str = ""


def tagged(*variants: type, tag: str = "method") -> dict[str, Any]:
    """Field metadata for a union of dataclasses told apart by a Literal `tag` field."""
    table = {typing.get_args(typing.get_type_hints(v)[tag])[0]: v for v in variants}
    return {"tag": tag, "variants": table}


def decode(tp: Any, value: Any, metadata: Any = None) -> Any:
    """Rebuild a value of annotation `tp` from its canonical JSON form."""
    origin = typing.get_origin(tp)
    if value is None:
        return None
    if origin in (Union, types.UnionType):
        if metadata and "variants" in metadata:
            return decode(metadata["variants"][value[metadata["tag"]]], value)
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) != 1:
            raise TypeError(f"untagged union {tp} in stage arguments")
        return decode(options[0], value, metadata)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(decode(args[0], v) for v in value)
        return tuple(decode(a, v) for a, v in zip(args, value))
    if origin is dict or tp is dict:
        return dict(value)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        fields = {f.name: f for f in dataclasses.fields(tp)}
        return tp(**{k: decode(hints[k], v, fields[k].metadata) for k, v in value.items()})
    if tp is Path:
        return Path(value)
    if tp is float:
        return float(value)
    return value
