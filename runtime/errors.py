"""The runtime's one exception tree: BundleError and its kinds.

A bundle runs on devices where the person reading the error may not have the
build tree, so every message is a single line: what is wrong, where (file, key,
value) and how to fix it. Library code raises; only the command lines turn
these into exit codes, and only the HTTP server into error responses.
"""
from __future__ import annotations

from typing import Dict, Optional


class BundleError(Exception):
    """A bundle cannot be opened, verified or run (one-line message)."""


class InputError(BundleError, ValueError):
    """The input is wrong: an argument to predict()/logits() (a text that is not
    a str), or texts given on a command line (an unreadable or non-UTF-8 file).

    It is a ValueError for callers that treat it as bad input, and a
    BundleError so the CLI reports it the same one-line way.
    """


class RequestError(InputError):
    """A bad HTTP request to serve.py, answered with `status` and {"error": message}.

    An InputError because the client sent it; the status and extra headers
    (Allow for a 405) are what the server needs to answer it.
    """

    def __init__(self, status: int, message: str, headers: Optional[Dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


def one_line(text: object, limit: int = 240) -> str:
    """Collapse a third-party message (onnxruntime errors span lines) into one short line."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
