"""Host runners for the PyTorch-family artifacts: TorchScript, .ptl, .pte.

Same protocol as runners.py: `runner(feeds)` takes a dict of int64 arrays
(at least `input_names`) and returns float32 logits. Inputs are passed
positionally in `input_names` order, which is the order every exporter in
quantize_torch.py / mobile_export.py uses.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

# numpy is imported inside functions: SCons imports this module while reading the build files.

Feeds = dict  # name -> int64 numpy array (numpy is imported where arrays are made)


def _tensors(feeds: Feeds, input_names: tuple[str, ...]) -> list:
    import numpy as np
    import torch

    return [torch.from_numpy(np.ascontiguousarray(feeds[n], dtype=np.int64)) for n in input_names]


@contextlib.contextmanager
def quantized_engine(name: str | None) -> Iterator[str]:
    """Select PyTorch's quantized kernel backend while a module loads.

    Quantized TorchScript stores plain int8 weights and packs them for the
    engine that is current at load time; the packed form then decides the
    kernels. Android's PyTorch runs QNNPACK (no reduce_range), x86 hosts
    default to fbgemm-style kernels with 7-bit activations, which round
    differently, so a .ptl is loaded with QNNPACK to give the phone's numbers.
    """
    import torch

    current = torch.backends.quantized.engine
    if not name or name == current or name not in torch.backends.quantized.supported_engines:
        yield current
        return
    torch.backends.quantized.engine = name
    try:
        yield name
    finally:
        torch.backends.quantized.engine = current


class TorchScriptRunner:
    """A TorchScript file from torch.jit.save (the host dynamic-int8 artifact).

    `engine` None keeps the host's quantized kernels (what a server runs).
    """

    def __init__(self, path: Path, input_names: tuple[str, ...], threads: int = 0, engine: str | None = None):
        import torch

        from recipes.models.hf import set_threads

        set_threads(threads)
        self._torch = torch
        with quantized_engine(engine) as self.engine:
            self.module = torch.jit.load(str(path), map_location="cpu").eval()
        self.input_names = tuple(input_names)

    def __call__(self, feeds: Feeds) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.module(*_tensors(feeds, self.input_names))
        return out.float().numpy()


class PtlRunner:
    """A TorchScript-lite .ptl on the lite interpreter, as PyTorch Mobile runs it.

    Quantized layers get QNNPACK kernels, as on Android: the phone's numbers,
    but not x86 speed (QNNPACK is tuned for ARM; `engine=None` keeps the
    host's kernels for a speed estimate).
    """

    def __init__(self, path: Path, input_names: tuple[str, ...], threads: int = 0, engine: str | None = "qnnpack"):
        import torch
        import torch.jit.mobile

        from recipes.models.hf import set_threads

        set_threads(threads)
        self._torch = torch
        with quantized_engine(engine) as self.engine:
            self.module = torch.jit.mobile._load_for_lite_interpreter(str(path), map_location="cpu")
        self.input_names = tuple(input_names)

    def __call__(self, feeds: Feeds) -> np.ndarray:
        with self._torch.inference_mode():
            out = self.module(*_tensors(feeds, self.input_names))
        return out.detach().float().numpy()


class PteRunner:
    """An ExecuTorch .pte through the Python runtime (XNNPACK delegate included).

    Batches larger than the program's batch bound (1 for a fixed-batch
    export) are run in slices; `max_batch` > 0 lowers the slice size further.
    """

    def __init__(self, path: Path, input_names: tuple[str, ...], threads: int = 0, max_batch: int = 0):
        from executorch.runtime import Runtime

        if threads > 0:
            # XNNPACK's threadpool is process-wide in the Python runtime.
            from executorch.extension.pybindings import portable_lib

            portable_lib._unsafe_reset_threadpool(threads)
        self.program = Runtime.get().load_program(Path(path))
        self.method = self.program.load_method("forward")
        self.input_names = tuple(input_names)
        # Upper bounds of the (possibly dynamic) input shape, as memory-planned.
        self.max_shape = tuple(self.method.metadata.input_tensor_meta(0).sizes())
        self.max_batch = min(max_batch, self.max_shape[0]) if max_batch > 0 else self.max_shape[0]

    def __call__(self, feeds: Feeds) -> np.ndarray:
        import numpy as np
        n, seq = feeds[self.input_names[0]].shape
        if seq > self.max_shape[1]:
            raise ValueError(f"sequence length {seq} exceeds this .pte's bound {self.max_shape[1]}")
        step = self.max_batch
        parts = []
        for start in range(0, n, step):
            part = {k: feeds[k][start:start + step] for k in self.input_names}
            out = self.method.execute(_tensors(part, self.input_names))[0]
            # The runtime may reuse the output buffer on the next call.
            parts.append(out.detach().float().numpy().copy())
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
