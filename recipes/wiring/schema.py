"""Strict mapping of parsed TOML tables onto frozen dataclasses.

Written here rather than taken from pydantic/attrs because the validator runs
every time SCons reads the build files (a no-op build must stay well under a
second, and pydantic alone costs a large part of that) and because every error
must be one line naming the file, the dotted key, the value and what is
allowed. It understands exactly the annotations our profile dataclasses use:
str, int, float, bool, Literal[...], tuple[X, ...], X | None, nested
dataclasses, and tagged unions (a field whose metadata names a `tag` key and a
`variants` mapping from tag value to dataclass).
"""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, Union

from recipes.errors import ProfileError
from recipes.params import bounds_of

_MISSING = dataclasses.MISSING


def describe(tp: Any) -> str:
    """Human wording of an annotation, used in 'expected ...' messages."""
    origin = typing.get_origin(tp)
    if tp is str:
        return "a string"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is tuple:
        return "a list of " + describe(typing.get_args(tp)[0]).replace("a ", "", 1).replace("an ", "", 1) + "s"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(tp) if a is not type(None))
    if dataclasses.is_dataclass(tp):
        return "a table"
    return str(tp)


def _fmt(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    return repr(value)


class Loader:
    """Converts plain data into dataclass instances, reporting against `source`."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, key: str, message: str) -> ProfileError:
        return ProfileError(f"{self.source}: {key}{message}")

    def convert(self, tp: Any, value: Any, key: str, metadata: Any = None) -> Any:
        origin = typing.get_origin(tp)
        if origin in (Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if metadata and "variants" in metadata:
                return self._tagged(value, key, metadata)
            if len(args) == 1:
                return self.convert(args[0], value, key, metadata)
            raise TypeError(f"unsupported union {tp}")
        if origin is Literal:
            allowed = typing.get_args(tp)
            if value not in allowed or type(value) is not type(allowed[0]):
                raise self.fail(key, f" = {_fmt(value)} is not allowed; use {describe(tp)}")
            return value
        if origin is tuple:
            item_tp = typing.get_args(tp)[0]
            if not isinstance(value, list):
                raise self.fail(key, f" = {_fmt(value)}: expected {describe(tp)}")
            return tuple(self.convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value))
        if dataclasses.is_dataclass(tp):
            return self.table(tp, value, key)
        if tp is bool:
            if not isinstance(value, bool):
                raise self.fail(key, f" = {_fmt(value)}: expected true or false")
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise self.fail(key, f" = {_fmt(value)}: expected an integer")
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise self.fail(key, f" = {_fmt(value)}: expected a number")
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise self.fail(key, f" = {_fmt(value)}: expected a string")
            return value
        raise TypeError(f"unsupported annotation {tp!r} for {key}")

    def _tagged(self, value: Any, key: str, metadata: Any) -> Any:
        tag = metadata["tag"]
        variants = metadata["variants"]
        if not isinstance(value, dict):
            raise self.fail(key, f" = {_fmt(value)}: expected a table with a '{tag}' key")
        if tag not in value:
            raise self.fail(key, f": missing key '{tag}'; use one of {', '.join(repr(v) for v in variants)}")
        if value[tag] not in variants:
            raise self.fail(f"{key}.{tag}", f" = {_fmt(value[tag])} is not allowed; use one of {', '.join(repr(v) for v in variants)}")
        return self.table(variants[value[tag]], value, key)

    def table(self, cls: type, data: Any, key: str = "") -> Any:
        where = key or "top level"
        if not isinstance(data, dict):
            raise self.fail(key, f" = {_fmt(data)}: expected a table")
        hints = typing.get_type_hints(cls, include_extras=False)
        # Fields marked internal are filled in by code, never by the file.
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            bad = f"{key}.{unknown[0]}" if key else unknown[0]
            raise ProfileError(f"{self.source}: unknown key {bad}; allowed keys in {where}: {', '.join(sorted(fields))}")
        values = {}
        for name, field in fields.items():
            sub = f"{key}.{name}" if key else name
            if name in data:
                values[name] = self.convert(hints[name], data[name], sub, field.metadata)
            elif field.default is _MISSING and field.default_factory is _MISSING:
                raise ProfileError(f"{self.source}: missing key {sub} ({describe(hints[name])})")
        return cls(**values)


    def check_ranges(self, value: Any, key: str = "") -> None:
        """Every field declared with `recipes.params.bounded` lies in its range (tuples: every item).

        Runs once, on the loaded profile, after the structural and consistency
        checks, so a value in range is never checked again by the stage."""
        if dataclasses.is_dataclass(value):
            for f in dataclasses.fields(value):
                if f.metadata.get("internal"):
                    continue
                sub = f"{key}.{f.name}" if key else f.name
                item = getattr(value, f.name)
                bounds = bounds_of(f)
                if bounds is not None and item is not None:
                    items = item if isinstance(item, tuple) else (item,)
                    for v in items:
                        if isinstance(v, (int, float)) and not bounds.contains(v):
                            raise self.fail(sub, f" = {_fmt(item if not isinstance(item, tuple) else list(item))}: "
                                            f"need {bounds.describe(f.name)}" + (" for every item" if isinstance(item, tuple) else ""))
                self.check_ranges(item, sub)
        elif isinstance(value, tuple):
            for i, v in enumerate(value):
                if dataclasses.is_dataclass(v):
                    self.check_ranges(v, f"{key}[{i}]")
