"""Texts to classify from a command line: its arguments plus --file (a path, or '-' for stdin).

One rule for every command line in a bundle (run.py, run_engine.py, python -m runtime):

- arguments are texts as given;
- --file holds one text per line (\\n, \\r\\n or \\r); surrounding whitespace is
  dropped and blank lines are skipped, so a file written on Windows or padded
  by an editor classifies the same texts;
- input must be UTF-8 (a leading byte order mark is allowed): anything else is
  one InputError line naming the input, never a traceback or mojibake;
- no texts at all is an InputError too.
"""
from __future__ import annotations

import sys
from typing import IO, Any, List, Optional, Sequence

from .errors import InputError

NO_TEXTS = "no texts to classify; pass them as arguments or with --file FILE ('-' for stdin)"


def read_texts(arguments: Sequence[str], file: Optional[str] = None, stdin: Optional[IO[Any]] = None) -> List[str]:
    """The argument texts, then the lines of `file` ('-': `stdin`, default sys.stdin)."""
    texts = list(arguments)
    for i, text in enumerate(texts, 1):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # bytes the terminal could not decode arrive as lone surrogates
            raise InputError(f"text argument {i} is not UTF-8 text; pass UTF-8 arguments or use --file") from None
    if file is not None:
        texts += _file_lines(file, sys.stdin if stdin is None else stdin)
    if not texts:
        raise InputError(NO_TEXTS)
    return texts


def _file_lines(file: str, stdin: IO[Any]) -> List[str]:
    label = "- (stdin)" if file == "-" else file
    try:
        if file == "-":
            # Bytes where the stream has them, so stdin is held to UTF-8 like a
            # file whatever the locale says; a text-only stream is taken as is.
            data = stdin.buffer.read() if hasattr(stdin, "buffer") else stdin.read()
        else:
            with open(file, "rb") as handle:
                data = handle.read()
    except OSError as exc:
        raise InputError(f"--file {label}: cannot read it ({exc.strerror or exc}); "
                         "cannot read --file texts, so nothing was classified") from None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, exc.start) + 1
            raise InputError(f"--file {label}: line {line} is not UTF-8 text (byte 0x{data[exc.start]:02x}); "
                             "save it as UTF-8") from None
    lines = data.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [text for text in (line.strip() for line in lines) if text]
