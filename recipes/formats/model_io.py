"""What goes into and comes out of a model, without importing torch.

The random inputs every converter (ONNX export, fusion, TorchScript, ExecuTorch)
is checked on, and an ONNX file's input/output description for the manifest.
Kept apart from onnx_export so that stages using them do not depend on the
exporter's code.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# numpy is imported inside functions: SCons imports this module while reading the build files.

# (batch, sequence) pairs checked after export; the first is the trace example.
VERIFY_SHAPES = ((2, 16), (1, 7), (3, 40), (4, 128))


def verification_inputs(vocab_size: int, input_names: tuple[str, ...], batch: int, seq: int, seed: int) -> dict[str, np.ndarray]:
    """Random ids with a ragged attention mask (every row but the first padded)."""
    import numpy as np
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    for row in range(1, batch):
        keep = int(rng.integers(2, seq + 1))
        mask[row, keep:] = 0
        ids[row, keep:] = 0
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    return {n: arrays[n] for n in input_names}


def onnx_io(path: Path) -> dict[str, Any]:
    """Input/output names, element types and symbolic shapes of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values):
        rows = []
        for v in values:
            t = v.type.tensor_type
            dims = [d.dim_param or d.dim_value for d in t.shape.dim]
            rows.append({"name": v.name, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": dims})
        return rows

    inits = {i.name for i in model.graph.initializer}
    return {"inputs": describe([i for i in model.graph.input if i.name not in inits]), "outputs": describe(model.graph.output)}
