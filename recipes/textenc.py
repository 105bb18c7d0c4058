"""Text to model inputs with the checkpoint's own tokenizer.json.

The build uses the same `tokenizers` file and the same rules (truncation to
max_length, padding to the longest in the batch, or to a fixed length) as the
bundle runtime, so training, evaluation and serving see identical ids.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class Encoder:
    def __init__(self, tokenizer_json: Path, max_length: int):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_json))
        self.max_length = max_length
        self.pad_id = self._pad_id()

    def _pad_id(self) -> int:
        padding = self.tokenizer.padding
        if padding:
            return int(padding["pad_id"])
        for token in ("[PAD]", "<pad>"):
            tid = self.tokenizer.token_to_id(token)
            if tid is not None:
                return tid
        return 0

    def encode(self, texts: list[str], input_names: tuple[str, ...], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """int64 arrays for `input_names`; pad to the batch's longest, or to `pad_to`."""
        tok = self.tokenizer
        tok.enable_truncation(self.max_length)
        if pad_to is None:
            tok.enable_padding(pad_id=self.pad_id)
        else:
            tok.enable_padding(pad_id=self.pad_id, length=pad_to)
        encs = tok.encode_batch(texts)
        arrays = {
            "input_ids": np.array([e.ids for e in encs], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encs], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encs], dtype=np.int64),
        }
        return {name: arrays[name] for name in input_names}
