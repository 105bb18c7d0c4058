"""Texts -> padded int64 arrays, using the tokenizer shipped in the bundle.

Truncation comes from the manifest (the length the model was exported and
evaluated with), not from whatever tokenizer.json happens to say. Padding is
to the longest text of each batch, or to a fixed length when the model has a
static sequence dimension.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

# numpy is imported inside functions: SCons imports this module while reading the build files.

from .errors import BundleError, one_line

# Candidate pad tokens, tried in this order when the tokenizer has no padding
# configuration and tokenizer_config.json names none.
PAD_CANDIDATES = ("[PAD]", "<pad>")


def _import_tokenizers() -> Any:
    # Imported lazily so a bundle can be opened and verified (and a missing
    # package reported as one line) even where tokenizers is not installed.
    try:
        import tokenizers
    except ImportError:
        raise BundleError("the 'tokenizers' package is not installed; install it with: pip install tokenizers") from None
    return tokenizers


class TextEncoder:
    """A configured `tokenizers.Tokenizer` producing model feeds."""

    def __init__(self, tokenizer: Any, max_length: int, *, pad_id: int, pad_token: str,
                 fixed_length: Optional[int] = None, direction: str = "right") -> None:
        self.tokenizer = tokenizer
        self.max_length = min(max_length, fixed_length) if fixed_length else max_length
        self.pad_id = pad_id
        self.pad_token = pad_token
        self.fixed_length = fixed_length
        tokenizer.enable_truncation(self.max_length)
        # length=None pads to the longest in the batch; drop any fixed length
        # or multiple-of that tokenizer.json may carry from training.
        tokenizer.enable_padding(direction=direction, pad_id=pad_id, pad_token=pad_token,
                                 length=fixed_length, pad_to_multiple_of=None)

    @classmethod
    def from_file(cls, path: Path, max_length: int, *, fixed_length: Optional[int] = None) -> TextEncoder:
        tokenizers = _import_tokenizers()
        try:
            tokenizer = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises plain Exception for parse errors
            raise BundleError(f"tokenizer {path}: cannot be loaded ({one_line(exc)}); rebuild the bundle with edgesmith") from None
        pad_id, pad_token, direction = find_padding(tokenizer, path)
        return cls(tokenizer, max_length, pad_id=pad_id, pad_token=pad_token,
                   fixed_length=fixed_length, direction=direction)

    def encode(self, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """input_ids, attention_mask and token_type_ids, each int64 [len(texts), length]."""
        import numpy as np
        encodings = self.tokenizer.encode_batch(list(texts))
        input_ids = np.array([e.ids for e in encodings], dtype=np.int64)
        attention_mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        # Single-text classification: every token is segment 0.
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "token_type_ids": np.zeros_like(input_ids),
        }


def find_padding(tokenizer: Any, path: Path) -> Tuple[int, str, str]:
    """(pad_id, pad_token, direction) from, in order: the tokenizer's own padding
    config, tokenizer_config.json's pad_token, or a conventional pad token."""
    own = tokenizer.padding
    if own and own.get("pad_token") is not None and tokenizer.token_to_id(own["pad_token"]) is not None:
        return int(own["pad_id"]), str(own["pad_token"]), str(own.get("direction", "right")).lower()
    for token in (_configured_pad_token(path.parent / "tokenizer_config.json"),) + PAD_CANDIDATES:
        if token is not None and tokenizer.token_to_id(token) is not None:
            return int(tokenizer.token_to_id(token)), token, "right"
    raise BundleError(
        f"tokenizer {path}: no padding token found (no padding config, no pad_token in tokenizer_config.json, "
        f"neither {' nor '.join(PAD_CANDIDATES)} in the vocabulary); add a pad token to the tokenizer and rebuild the bundle"
    )


def _configured_pad_token(config_path: Path) -> Optional[str]:
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # optional file: absent or unreadable just means "not configured"
    token = config.get("pad_token") if isinstance(config, dict) else None
    if isinstance(token, dict):  # transformers may store AddedToken as {"content": ...}
        token = token.get("content")
    return token if isinstance(token, str) else None
