"""SCons tool: the `EdgesmithStage` builder, which runs one recipe stage.

Loaded through `toolpath`. The builder's first source is a Value holding the
stage spec (canonical JSON of the stage name, its parameters, relative paths
and the versions of the libraries it uses), so the spec is part of every
target's signature. Paths outside the repository (the model checkpoint, a
dataset elsewhere) are not in the spec, only their contents (as sources):
that keeps signatures, and so a shared `cache=DIR`, independent of where a
checkout or a virtualenv lives.

SCons saves what it built (.sconsign) only when it exits. A build killed with
SIGKILL (a CI timeout, a closed laptop, the OOM killer) loses that record, and
the next run would redo every stage it finished, fine-tuning included. So each
stage that succeeds also leaves a stamp: its build signature (the one CacheDir
uses: action, spec, every source's content) and the size and mtime of each
output. A stage whose stamp still matches is not run again. For that the
targets are Precious (SCons would delete them before the action could look);
the action deletes them itself when the stage does run, as SCons would.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile

import SCons.Action
import SCons.Builder

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import edgesmith_verified as verified  # noqa: E402  (beside this tool; SCons loads tools by path, not as a package)

from recipes.wiring import stage_process  # noqa: E402  (SConstruct put the repository root on sys.path)

EXTERNAL_PREFIX = "@external:"


def _resolve(value, externals):
    if isinstance(value, str) and value.startswith(EXTERNAL_PREFIX):
        return externals[int(value[len(EXTERNAL_PREFIX):])]
    if isinstance(value, list):
        return [_resolve(v, externals) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, externals) for k, v in value.items()}
    return value


def _stamp_path(root: str, spec: dict, target) -> str:
    build_dir = os.path.dirname(os.path.join(root, spec["lock_path"]))
    name = hashlib.sha256(target[0].get_internal_path().encode()).hexdigest()[:24]
    return os.path.join(build_dir, ".stamps", f"{name}.json")


def _outputs_state(target) -> dict | None:
    state = {}
    for node in target:
        try:
            st = os.stat(node.get_abspath())
        except OSError:
            return None
        state[node.get_internal_path()] = [st.st_size, st.st_mtime_ns]
    return state


def _finished_before(stamp: str, signature: str, target) -> bool:
    """True when this exact build already finished and its outputs are untouched."""
    try:
        with open(stamp, encoding="utf-8") as fh:
            recorded = json.load(fh)
    except (OSError, ValueError):
        return False
    outputs = {path: entry[:2] for path, entry in (recorded.get("outputs") or {}).items()}
    return recorded.get("signature") == signature and outputs == _outputs_state(target)


def _write_stamp(stamp: str, signature: str, target) -> None:
    """The build signature, and size, mtime and sha256 of every output (verified before later use)."""
    os.makedirs(os.path.dirname(stamp), exist_ok=True)
    record = verified.outputs_record([node.get_abspath() for node in target])
    outputs = None if record is None else {node.get_internal_path(): record[node.get_abspath()] for node in target}
    tmp = f"{stamp}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump({"signature": signature, "outputs": outputs}, fh, sort_keys=True)
    os.replace(tmp, stamp)


def check_outputs(env, stage: str, lock_path: str, targets: list[str]) -> None:
    """While the build files are read: rebuild a stage whose outputs changed since it wrote them."""
    root = env["EDGESMITH_ROOT"]
    build_dir = os.path.dirname(os.path.join(root, lock_path))
    name = hashlib.sha256(targets[0].encode()).hexdigest()[:24]
    verified.check_outputs(stage, os.path.join(build_dir, ".stamps", f"{name}.json"), root, targets)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def run_stage(target, source, env):
    spec = json.loads(source[0].read())
    root = env["EDGESMITH_ROOT"]
    stamp = _stamp_path(root, spec, target)
    signature = target[0].get_cachedir_bsig()
    if _finished_before(stamp, signature, target):
        stage_process.say(f"[{spec['stage']}] {target[0]}: up to date (finished by an earlier build that was killed "
                          "before SCons saved its state)")
        return 0
    _remove(stamp)
    for node in target:
        _remove(node.get_abspath())
    externals = env.get("EDGESMITH_EXTERNALS", [])
    spec["args"] = _resolve(spec["args"], externals)
    fd, error_file = tempfile.mkstemp(prefix="edgesmith-error-", suffix=".txt")
    os.close(fd)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = root + os.pathsep + child_env.get("PYTHONPATH", "")
    child_env["EDGESMITH_ERROR_FILE"] = error_file
    try:
        # Where it runs (this host, or a Ray node) is not part of the signature: see recipes/wiring/resources.py.
        execution = dict(env.get("EDGESMITH_EXECUTION", {}))
        execution["request"] = env.get("EDGESMITH_REQUESTS", {}).get(target[0].get_internal_path(), {})
        returncode = stage_process.execute(spec, root, child_env, error_file, targets=[t.get_abspath() for t in target],
                                           sources=[s.get_abspath() for s in source[1:]], externals=list(externals),
                                           execution=execution)
        with open(error_file, encoding="utf-8") as fh:
            message = fh.read().strip()
    finally:
        os.unlink(error_file)
    # A string result is how a function action fails with a message of our
    # own: SCons prints `scons: *** [target] message`, with no traceback.
    if returncode == 0:
        _write_stamp(stamp, signature, target)
        return 0
    if message:
        return message
    if returncode < 0:
        return f"stage {spec['stage']} was killed by signal {-returncode}"
    return f"stage {spec['stage']} failed (exit {returncode}); see the output above"


def describe_stage(target, source, env):
    spec = json.loads(source[0].read())
    return f"[{spec['stage']}] {target[0]}"


def _precious(target, source, env):
    env.Precious(target)  # see the module docstring: run_stage removes them
    return target, source


def generate(env):
    action = SCons.Action.Action(run_stage, describe_stage)
    env["BUILDERS"]["EdgesmithStage"] = SCons.Builder.Builder(action=action, emitter=_precious)
    env.AddMethod(check_outputs, "EdgesmithCheckOutputs")
    # cache=DIR entries carry their sha256 and are checked before use.
    env["CACHEDIR_CLASS"] = verified.VerifiedCacheDir


def exists(env):
    return True
