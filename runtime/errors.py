"""The runtime's one exception type.

A bundle runs on devices where the person reading the error may not have the
build tree, so every message is a single line: what is wrong, where (file, key,
value) and how to fix it. Library code raises; only the CLI turns these into
exit codes.
"""
from __future__ import annotations


class BundleError(Exception):
    """A bundle cannot be opened, verified or run (one-line message)."""


class InputError(BundleError, ValueError):
    """Arguments to predict()/logits() are wrong, e.g. a text that is not a str.

    It is a ValueError for callers that treat it as bad input, and a
    BundleError so the CLI reports it the same one-line way.
    """


def one_line(text: object, limit: int = 240) -> str:
    """Collapse a third-party message (onnxruntime errors span lines) into one short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
