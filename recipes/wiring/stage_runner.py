"""Run one build stage in a child process: `python -m recipes.wiring.stage_runner`.

The SCons action starts this with the stage spec (JSON) on stdin: the stage
module, its name, and its arguments as canonical JSON. The runner imports the
module, rebuilds the module's typed Args dataclass from the JSON once, and
calls the module's `build(args)`. A child
process per stage keeps torch's global state (seeds, thread counts,
deterministic-algorithm flags) out of the SCons process and away from other
stages running in parallel under -j, and keeps heavy imports out of SCons.

A user-facing problem (EdgesmithError) is written as one line to the file
named in EDGESMITH_ERROR_FILE and the process exits 2; the SCons action shows
that line. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib
import json
import os
import signal
import sys
from pathlib import Path

from recipes.errors import EdgesmithError
from recipes.wiring.stage import Stage, decode


def _die_with_parent() -> None:
    """If SCons is killed, stop too rather than finish and rename outputs."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@contextlib.contextmanager
def _stage_lock(path: str | None, mode: str):
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_stage(module: str) -> Stage:
    """The STAGE a recipe module defines (`module` is dotted, below recipes/)."""
    return importlib.import_module(f"recipes.{module}").STAGE


def run(spec: dict) -> None:
    stage = load_stage(spec["module"])
    args = decode(stage.args, spec["args"])
    with _stage_lock(spec.get("lock_path"), stage.lock):
        stage.build(args)


def _quiet_libraries() -> None:
    """Silence import-time chatter that is not about the user's build.

    transformers imports torchao (installed for .pte export), which warns
    about CUDA kernels a CPU host cannot load; torch warns about torchao's
    enum registration; bitsandbytes notes an optional package. Real problems
    still surface as errors.
    """
    import logging
    import warnings

    for name in ("torchao", "torch.utils._pytree", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main() -> int:
    _die_with_parent()
    _quiet_libraries()
    spec = json.loads(sys.stdin.read())
    try:
        run(spec)
    except EdgesmithError as e:
        error_file = os.environ.get("EDGESMITH_ERROR_FILE")
        if error_file:
            Path(error_file).write_text(str(e), encoding="utf-8")
        else:
            print(f"edgesmith: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
