"""What the Android bundle's pure-Java tokenizer needs from a tokenizer.json.

The Java stub (templates/android/WordPieceTokenizer.java.jinja) re-implements
exactly one `tokenizers` pipeline: BertNormalizer -> BertPreTokenizer ->
WordPiece -> [CLS] text [SEP]. Anything else is refused here, at build time,
rather than producing ids on the phone that differ from the ones the model
was evaluated with. Reads JSON only: no tokenizers, no torch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from recipes.errors import ConfigError, ModelError
from recipes.fsutil import atomic_path

# Same order as runtime.tokenize.PAD_CANDIDATES (not imported: that module
# pulls in numpy); the test keeps the two in step.
PAD_CANDIDATES = ("[PAD]", "<pad>")

# Java reserved words and literals: none may be a package name segment.
_JAVA_RESERVED = frozenset((
    "abstract", "assert", "boolean", "break", "byte", "case", "catch", "char", "class", "const", "continue",
    "default", "do", "double", "else", "enum", "extends", "final", "finally", "float", "for", "goto", "if",
    "implements", "import", "instanceof", "int", "interface", "long", "native", "new", "package", "private",
    "protected", "public", "return", "short", "static", "strictfp", "super", "switch", "synchronized", "this",
    "throw", "throws", "transient", "try", "void", "volatile", "while", "true", "false", "null", "_",
))
_JAVA_SEGMENT = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*\Z")


def _fail(path: Path, what: str) -> ModelError:
    return ModelError(f"tokenizer {path}: {what}; the Android Java stub supports BERT-style WordPiece tokenizers only "
                      f"(BertNormalizer, BertPreTokenizer, WordPiece, [CLS] text [SEP])")


def _load(tokenizer_json: Path) -> dict[str, Any]:
    path = Path(tokenizer_json)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise ModelError(f"tokenizer {path}: cannot be read ({e.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"tokenizer {path}: invalid JSON ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model"), dict):
        raise ModelError(f"tokenizer {path}: no model section; is this a tokenizers tokenizer.json?")
    return data


def _id_to_token(data: dict[str, Any], path: Path) -> dict[int, str]:
    """Model vocab plus added tokens, by id (the id space the model sees)."""
    vocab = data["model"].get("vocab")
    if not isinstance(vocab, dict) or not vocab:
        raise _fail(path, "model.vocab is missing or not a token -> id map")
    by_id: dict[int, str] = {}
    for token, i in vocab.items():
        if not isinstance(i, int) or i < 0:
            raise ModelError(f"tokenizer {path}: vocab id {i!r} of {token!r} is not a non-negative integer")
        if i in by_id:
            raise ModelError(f"tokenizer {path}: vocab id {i} is used by both {by_id[i]!r} and {token!r}")
        by_id[i] = token
    for added in data.get("added_tokens") or ():
        i, content = added.get("id"), added.get("content")
        if not isinstance(i, int) or not isinstance(content, str):
            raise ModelError(f"tokenizer {path}: malformed added token {added!r}")
        if by_id.get(i, content) != content:
            raise ModelError(f"tokenizer {path}: added token {content!r} has id {i}, which the vocab gives to {by_id[i]!r}")
        if content in vocab and vocab[content] != i:
            raise ModelError(f"tokenizer {path}: added token {content!r} has id {i} but vocab id {vocab[content]}")
        by_id[i] = content
    return by_id


def _normalizer(data: dict[str, Any], path: Path) -> dict[str, bool]:
    norm = data.get("normalizer")
    if norm is None:  # no normalizer is BertNormalizer with every step off
        return {"clean_text": False, "handle_chinese_chars": False, "strip_accents": False, "lowercase": False}
    if norm.get("type") != "BertNormalizer":
        raise _fail(path, f"normalizer is {norm.get('type')}")
    lowercase = bool(norm.get("lowercase", True))
    strip = norm.get("strip_accents")
    return {
        "clean_text": bool(norm.get("clean_text", True)),
        "handle_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
        # BertNormalizer: strip_accents None means "whatever lowercase is".
        "strip_accents": lowercase if strip is None else bool(strip),
        "lowercase": lowercase,
    }


def _cls_sep(data: dict[str, Any], path: Path) -> tuple[str, int, str, int]:
    try:
        return _template_ends(data.get("post_processor") or {}, path)
    except (KeyError, TypeError, ValueError, AttributeError, StopIteration):
        raise _fail(path, "post_processor is malformed") from None


def _template_ends(post: dict[str, Any], path: Path) -> tuple[str, int, str, int]:
    """The special tokens before and after the text in the one-text template."""
    kind = post.get("type")
    if kind == "BertProcessing":
        (cls, cls_id), (sep, sep_id) = post["cls"], post["sep"]
        return cls, int(cls_id), sep, int(sep_id)
    if kind == "TemplateProcessing":
        single = post.get("single") or []
        shape = [next(iter(piece), None) for piece in single]
        if shape == ["SpecialToken", "Sequence", "SpecialToken"]:
            ends = []
            for piece in (single[0], single[2]):
                name = piece["SpecialToken"]["id"]
                special = (post.get("special_tokens") or {}).get(name, {})
                ids, tokens = special.get("ids"), special.get("tokens")
                if not isinstance(ids, list) or len(ids) != 1 or not isinstance(tokens, list) or len(tokens) != 1:
                    raise _fail(path, f"post_processor special token {name!r} is not a single token")
                ends += [str(tokens[0]), int(ids[0])]
            return ends[0], ends[1], ends[2], ends[3]
        raise _fail(path, f"post_processor template for one text is {shape}")
    raise _fail(path, f"post_processor is {kind}")


def _pad(data: dict[str, Any], path: Path, token_ids: dict[str, int]) -> tuple[str, int]:
    """The pad token, found as runtime.tokenize.find_padding finds it."""
    own = data.get("padding") or {}
    if own.get("pad_token") in token_ids:
        return own["pad_token"], int(own["pad_id"])
    configured = None
    try:
        config = json.loads((path.parent / "tokenizer_config.json").read_text(encoding="utf-8"))
        configured = config.get("pad_token") if isinstance(config, dict) else None
        if isinstance(configured, dict):
            configured = configured.get("content")
    except (OSError, ValueError):
        pass  # optional file
    for token in (configured,) + PAD_CANDIDATES:
        if isinstance(token, str) and token in token_ids:
            return token, token_ids[token]
    raise ModelError(f"tokenizer {path}: no padding token (no padding config, no pad_token in tokenizer_config.json, "
                     f"neither {' nor '.join(PAD_CANDIDATES)} in the vocabulary)")


def wordpiece_spec(tokenizer_json: Path) -> dict[str, Any]:
    """Settings of a BERT WordPiece tokenizer.json for the Java stub.

    Keys: lowercase, strip_accents (resolved to a bool), clean_text,
    handle_chinese_chars, unk_token, unk_id, continuing_subword_prefix,
    max_input_chars_per_word, cls_token, cls_id, sep_token, sep_id, pad_token,
    pad_id, vocab_size (lines of vocab.txt), added_tokens (content, id,
    normalized, single_word: matched in the text before WordPiece, as
    `tokenizers` does) and added_only_ids (added-token ids that WordPiece
    itself must never produce).
    """
    path = Path(tokenizer_json)
    data = _load(path)
    model = data["model"]
    if model.get("type") != "WordPiece":
        raise _fail(path, f"model is {model.get('type')}")
    pre = data.get("pre_tokenizer") or {}
    if pre.get("type") != "BertPreTokenizer":
        raise _fail(path, f"pre_tokenizer is {pre.get('type')}")
    lines = _vocab_lines(data, path)
    token_ids = {token: i for i, token in enumerate(lines)}
    unk = model.get("unk_token", "[UNK]")
    if unk not in model["vocab"]:
        raise ModelError(f"tokenizer {path}: unk_token {unk!r} is not in the vocabulary")
    cls, cls_id, sep, sep_id = _cls_sep(data, path)
    for name, i in ((cls, cls_id), (sep, sep_id)):
        if not 0 <= i < len(lines) or lines[i] != name:
            raise ModelError(f"tokenizer {path}: post_processor gives {name!r} id {i}, the vocabulary does not")
    pad, pad_id = _pad(data, path, token_ids)
    added = []
    for tok in data.get("added_tokens") or ():
        if not tok["content"]:
            continue  # tokenizers ignores empty added tokens
        # lstrip/rstrip are not kept: they only move whitespace, which BertPreTokenizer drops anyway.
        added.append({"content": tok["content"], "id": tok["id"], "single_word": bool(tok.get("single_word")),
                      "normalized": bool(tok.get("normalized", not tok.get("special")))})
    return {
        **_normalizer(data, path),
        "unk_token": unk,
        "unk_id": int(model["vocab"][unk]),
        "continuing_subword_prefix": str(model.get("continuing_subword_prefix", "##")),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "cls_token": cls,
        "cls_id": cls_id,
        "sep_token": sep,
        "sep_id": sep_id,
        "pad_token": pad,
        "pad_id": pad_id,
        "vocab_size": len(lines),
        "added_tokens": added,
        "added_only_ids": sorted(a["id"] for a in added if a["content"] not in model["vocab"]),
    }


def _vocab_lines(data: dict[str, Any], path: Path) -> list[str]:
    """Tokens in id order, as vocab.txt holds them: ids 0..n-1, one line each."""
    by_id = _id_to_token(data, path)
    missing = next((i for i in range(len(by_id)) if i not in by_id), None)
    if missing is not None:
        raise ModelError(f"tokenizer {path}: vocabulary ids have gaps (first missing id {missing}); "
                         f"vocab.txt needs ids 0..{len(by_id) - 1} without holes")
    lines = [by_id[i] for i in range(len(by_id))]
    for i, token in enumerate(lines):
        # Java's BufferedReader.readLine() ends a line at \n, \r or \r\n.
        if "\n" in token or "\r" in token:
            raise ModelError(f"tokenizer {path}: token {i} {token!r} contains a line break and cannot go in vocab.txt")
    return lines


def write_vocab_txt(tokenizer_json: Path, dst: Path) -> None:
    """vocab.txt for the Java stub: one token per line, line number = id."""
    path = Path(tokenizer_json)
    lines = _vocab_lines(_load(path), path)
    with atomic_path(Path(dst)) as tmp:
        tmp.write_bytes("".join(token + "\n" for token in lines).encode("utf-8"))


def java_package(name: Any) -> str:
    """`name` if it is a valid Java package name (it is pasted into generated code unquoted)."""
    parts = name.split(".") if isinstance(name, str) else [None]
    bad = [p for p in parts if not isinstance(p, str) or not _JAVA_SEGMENT.match(p) or p in _JAVA_RESERVED]
    if bad:
        raise ConfigError(f"java_package={name!r}: not a Java package name ({bad[0]!r} is not an ASCII identifier "
                          f"or is a reserved word); use dot-separated identifiers such as ai.edgesmith.bundle")
    return name
