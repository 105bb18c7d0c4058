"""runtime.texts.read_texts: the one rule every bundle command line reads texts by."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from runtime.errors import InputError
from runtime.texts import read_texts


class Stdin(io.TextIOWrapper):
    """sys.stdin's shape: a text stream over a byte buffer, here of the given bytes."""

    def __init__(self, data: bytes):
        super().__init__(io.BytesIO(data), encoding="latin-1")  # a locale that would accept any byte


def test_arguments_then_file_lines_stripped_blank_lines_skipped(tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"great movie\n\n  awful film  \n\t\n")
    assert read_texts(["  as given  "], str(texts)) == ["  as given  ", "great movie", "awful film"]


def test_windows_and_old_mac_newlines_and_a_byte_order_mark(tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_bytes(b"\xef\xbb\xbffirst\r\nsecond\rthird\n")
    assert read_texts([], str(texts)) == ["first", "second", "third"]


def test_only_newlines_split_lines(tmp_path: Path):
    texts = tmp_path / "texts.txt"
    texts.write_text("one\u2028line\x0cstill\n", encoding="utf-8")
    assert read_texts([], str(texts)) == ["one\u2028line\x0cstill"]


def test_stdin_is_read_as_utf8_bytes():
    assert read_texts([], "-", stdin=Stdin("café\nnaïve\n".encode("utf-8"))) == ["café", "naïve"]


def test_stdin_without_a_byte_buffer_is_taken_as_text():
    assert read_texts(["a"], "-", stdin=io.StringIO("b\n\n c \n")) == ["a", "b", "c"]


def test_non_utf8_file_is_one_line_naming_file_and_line(tmp_path: Path):
    texts = tmp_path / "latin1.txt"
    texts.write_bytes("fine\ncafé\n".encode("latin-1"))
    with pytest.raises(InputError) as err:
        read_texts([], str(texts))
    assert str(err.value) == f"--file {texts}: line 2 is not UTF-8 text (byte 0xe9); save it as UTF-8"


def test_non_utf8_stdin_names_stdin():
    with pytest.raises(InputError, match=r"^--file - \(stdin\): line 1 is not UTF-8 text \(byte 0xff\)"):
        read_texts([], "-", stdin=Stdin(b"\xff\xfe"))


def test_unreadable_file_is_one_line(tmp_path: Path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(InputError) as err:
        read_texts(["a"], str(missing))
    message = str(err.value)
    assert message.startswith(f"--file {missing}: cannot read it (No such file or directory)") and "\n" not in message


def test_undecodable_argument_is_rejected():
    # How Python hands over argument bytes the terminal's encoding could not decode.
    with pytest.raises(InputError, match="text argument 2 is not UTF-8 text"):
        read_texts(["fine", "caf\udce9"])


def test_no_texts_is_an_error(tmp_path: Path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n", encoding="utf-8")
    with pytest.raises(InputError, match="^no texts to classify"):
        read_texts([], str(blank))
    with pytest.raises(InputError, match="^no texts to classify"):
        read_texts([])
