"""Texts to classify from a command line: its arguments plus --file (a path, or '-' for stdin).

One rule for every command line in a bundle (run.py, run_engine.py, python -m runtime):

- arguments are texts as given;
- --file holds one text per line (\\n, \\r\\n or \\r); surrounding whitespace is
  dropped and blank lines are skipped, so a file written on Windows or padded
  by an editor classifies the same texts;
- input must be UTF-8 (a leading byte order mark is allowed): anything else is
  one InputError line naming the input, never a traceback or mojibake;
  undecodable bytes that reach Python as lone surrogates (argv, or a text
  stream opened with errors="surrogateescape") count as not UTF-8 too;
- no texts at all is an InputError too.

The library and the HTTP server hold texts to the same rule (check_utf8), and
results are printed as JSON lines the terminal can show (json_line).
"""
from __future__ import annotations

import json
import sys
from typing import IO, Any, Iterable, List, Optional, Sequence, Tuple

from .errors import InputError

NO_TEXTS = "no texts to classify; pass them as arguments or with --file FILE ('-' for stdin)"


def read_texts(arguments: Sequence[str], file: Optional[str] = None, stdin: Optional[IO[Any]] = None) -> List[str]:
    """The argument texts, then the lines of `file` ('-': `stdin`, default sys.stdin)."""
    texts = list(arguments)
    for i, text in enumerate(texts, 1):
        found = lone_surrogate(text)
        if found is not None:  # bytes the terminal could not decode arrive as lone surrogates
            raise InputError(f"text argument {i} is not UTF-8 text ({_what(found[1])}); "
                             "pass UTF-8 arguments or use --file")
    if file is not None:
        texts += _file_lines(file, sys.stdin if stdin is None else stdin)
    if not texts:
        raise InputError(NO_TEXTS)
    return texts


def _file_lines(file: str, stdin: IO[Any]) -> List[str]:
    label = "- (stdin)" if file == "-" else file
    if file == "-" and stdin is None:  # python run.py --file - <&-
        raise InputError("--file - (stdin): stdin is closed; pipe the texts in or pass a file")
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
    for number, line in enumerate(lines, 1):  # a text stream may hold undecodable bytes as lone surrogates
        found = lone_surrogate(line)
        if found is not None:
            raise InputError(f"--file {label}: line {number} is not UTF-8 text ({_what(found[1])}); save it as UTF-8")
    return [text for text in (line.strip() for line in lines) if text]


def lone_surrogate(text: str) -> Optional[Tuple[int, str]]:
    """(index, character) of the first code point UTF-8 cannot encode (a lone surrogate), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start, text[exc.start]
    return None


def _what(char: str) -> str:
    """A lone surrogate as the user knows it: the byte surrogateescape made it of, or the code point."""
    code = ord(char)
    return f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"


def check_utf8(texts: Iterable[Any], name: str = "texts") -> None:
    """Raise InputError naming `name`[i] for the first str that holds a lone surrogate.

    Tokenizers (and UTF-8 output) cannot take one: it is what Python makes of
    bytes that are not UTF-8 (argv, surrogateescape streams) or of a JSON
    "\\udcff" escape, and it would otherwise end in a TypeError deep inside them.
    """
    for i, text in enumerate(texts):
        found = lone_surrogate(text) if isinstance(text, str) else None
        if found is not None:
            raise InputError(f"{name}[{i}] is not UTF-8 text (lone surrogate U+{ord(found[1]):04X} at character "
                             f"{found[0]}, which UTF-8 cannot encode); send valid Unicode text")


def json_line(record: Any, stream: Optional[IO[str]] = None) -> str:
    """`record` as one JSON line, readable where the stream can show it: non-ASCII characters as
    they are, or as \\u escapes where the terminal's encoding (e.g. latin-1, cp1252) cannot."""
    text = json.dumps(record, ensure_ascii=False)
    encoding = getattr(stream if stream is not None else sys.stdout, "encoding", None) or "utf-8"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return json.dumps(record)
    return text
