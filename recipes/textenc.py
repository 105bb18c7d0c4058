"""Text to model inputs, through the bundle runtime's own encoder.

Training, calibration, evaluation and latency all tokenize with
runtime.tokenize.TextEncoder, the code that ships in every bundle, so the
numbers in the report are measured on exactly the ids the device will see.
"""
from __future__ import annotations

from pathlib import Path

# numpy is imported inside functions: SCons imports this module while reading the build files.

from runtime.tokenize import TextEncoder


class Encoder:
    def __init__(self, tokenizer_json: Path, max_length: int):
        self.path = Path(tokenizer_json)
        self.max_length = max_length
        self._encoders: dict[int | None, TextEncoder] = {}

    def encode(self, texts: list[str], input_names: tuple[str, ...], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """int64 arrays for `input_names`; padded to the batch's longest, or to `pad_to`."""
        if pad_to not in self._encoders:
            self._encoders[pad_to] = TextEncoder.from_file(self.path, self.max_length, fixed_length=pad_to)
        arrays = self._encoders[pad_to].encode(texts)
        return {name: arrays[name] for name in input_names}
