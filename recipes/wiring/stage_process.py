"""How SCons starts a stage's child process: forked from a server that imported the heavy libraries once.

Every stage runs in a child process of its own (recipes/wiring/stage_runner.py says why). Started
with `python -m`, each child spent 4-12 s importing torch, transformers, torch.export and the ONNX
exporter before it did any work; for the tiny test model that was most of a build's time, and on a
real model still a minute or more of a 20-stage build. So the first stage that needs them starts
multiprocessing's forkserver with those libraries preloaded (`stage_preload`), and each such stage is
forked from it: a fresh process, with nothing of another stage's state, that finds the libraries
already imported. The server belongs to this SCons run and ends with it; every stage of the run
still imports the recipe modules itself, after the fork.

Stages that import none of them (data, report, select, stubs, bundle, archive) start as a plain
`python -m recipes.wiring.stage_runner` child, so a build that only re-packages never pays for the
server. Set EDGESMITH_FORKSERVER=0 to start every stage that way (or where the platform has no
forkserver).

With `executor=ray` (recipes/wiring/ray_executor.py) the stage runs on a Ray node instead, which starts it
there through this same `run`. Either way `execute` records where it ran (recipes/wiring/placement.py).

This module decides how and where a stage runs, not what it computes, so it is not in any stage's signature.
Nothing here imports a heavy library: it runs inside SCons.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

# Stages whose build() imports no ML framework: the server's preload would only slow them down. Named here,
# not as a Stage field: stage.py is in every stage's signature, so a field there would rebuild every stage.
PLAIN = frozenset({"data", "report", "select", "screen", "rank", "stub", "bundle", "archive"})

# popen_forkserver's exit code when it cannot read the child's status from the server.
LOST_SERVER = 255

_context = None
_context_lock = threading.Lock()


def say(line: str, stream=None) -> None:
    """Write one whole line from a SCons action. Actions run in threads under -j N, and print() writes the text and
    its newline in two calls: another thread's line (SCons' own "[stage] target") can land between them, and two
    lines become one. One write per line keeps each line whole."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def _forkserver():
    """multiprocessing's forkserver context with the preload set, or None where it is off or unavailable."""
    global _context
    with _context_lock:
        if _context is None:
            import multiprocessing

            if os.environ.get("EDGESMITH_FORKSERVER", "1") == "0" or "forkserver" not in multiprocessing.get_all_start_methods():
                _context = False
            else:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(["recipes.wiring.stage_preload"])
                _context = ctx
        return _context or None


def execute(spec: dict, root: str, env: dict, error_file: str, *, targets: list[str], sources: list[str],
            externals: list[str], execution: dict) -> int:
    """Run the stage where `execution` says (executor "local" or "ray", the Ray address, the stage's resource
    request) and record where it ran; its exit code. SCons's action (scons_tools/edgesmith_stage.py) calls this."""
    started = time.time()
    where: dict = {}
    returncode = None
    if execution.get("executor") == "ray":
        from recipes.wiring import ray_executor

        returncode, where = ray_executor.run(spec, root, error_file, targets, sources, externals,
                                             execution.get("request") or {}, execution.get("ray_address", ""))
    if returncode is None:
        returncode = run(spec, root, env, error_file)
        where = {"executor": "local", "hostname": socket.gethostname(), "node_id": "",
                 "device_resource": "", "versions": spec.get("versions", {}),
                 "timing_s": {"total": round(time.time() - started, 3)},
                 **({"note": "device-bound; no node of the Ray cluster offers "
                             f"{execution['request']['device']}, so it ran on this host"}
                    if execution.get("executor") == "ray" else {})}
    if returncode == 0:
        from recipes.wiring import placement

        placement.record(root, spec, targets, where)
    return returncode


def run(spec: dict, root: str, env: dict, error_file: str) -> int:
    """Run the stage `spec` in a child process; its exit code (negative: killed by that signal)."""
    ctx = None if spec["stage"] in PLAIN else _forkserver()
    if ctx is not None and root not in sys.path:
        # SCons restores sys.path after reading SConstruct; the server and its children import from the
        # repository root (the server takes sys.path from this process when it starts).
        sys.path.insert(0, root)
    if ctx is None:
        return subprocess.run([sys.executable, "-m", "recipes.wiring.stage_runner"], input=json.dumps(spec).encode(),
                              cwd=root, env=env).returncode
    proc = ctx.Process(target=forked_stage, args=(json.dumps(spec), root, error_file), name=f"stage-{spec['stage']}")
    proc.start()
    proc.join()
    if proc.exitcode == LOST_SERVER and not os.path.getsize(error_file) and not scons_interrupted():
        # multiprocessing reports 255 when the connection to the forkserver breaks (the server process died,
        # under memory pressure for one): the stage's own outcome is unknown, and it writes atomically, so it
        # runs again in a plain child rather than fail the build on the preloading server's account.
        say(f"edgesmith: the stage server was lost while running {spec['stage']}; running it again in a fresh "
            "process", sys.stderr)
        return subprocess.run([sys.executable, "-m", "recipes.wiring.stage_runner"], input=json.dumps(spec).encode(),
                              cwd=root, env=env).returncode
    return proc.exitcode


def scons_interrupted() -> bool:
    """Whether SCons was interrupted (Ctrl-C, SIGTERM): its signal handler stops the taskmaster and sets its
    job's InterruptState, but a job thread waiting on a stage is not told. SCons keeps that state on the handler
    it installs (SCons/Taskmaster/Job.py, Jobs._setup_sig_handler); any other handler means no. A stage whose
    server was lost is not run again then, and a Ray task is cancelled."""
    import signal

    handler = signal.getsignal(signal.SIGINT)
    jobs = (getattr(handler, "__defaults__", None) or (None,))[0]
    state = getattr(getattr(jobs, "job", None), "interrupted", None)
    return bool(callable(state) and state())


def forked_stage(spec_json: str, root: str, error_file: str) -> None:
    """The forked child: stage_runner's main(), with the spec and error file handed over directly."""
    if sys.path[0] != root:
        sys.path.insert(0, root)
    from recipes.errors import EdgesmithError
    from recipes.wiring import stage_runner

    stage_runner._die_with_parent()  # the server; it ends when SCons does
    os.chdir(root)
    os.environ["EDGESMITH_ERROR_FILE"] = error_file
    stage_runner._quiet_libraries()
    try:
        stage_runner.run(json.loads(spec_json))
    except EdgesmithError as e:
        with open(error_file, "w", encoding="utf-8") as fh:
            fh.write(str(e))
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
