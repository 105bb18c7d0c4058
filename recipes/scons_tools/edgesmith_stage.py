"""SCons tool: the `EdgesmithStage` builder, which runs one recipe stage.

Loaded through `toolpath`. The builder's first source is a Value holding the
stage spec (canonical JSON of the stage name, its parameters, relative paths
and the versions of the libraries it uses), so the spec is part of every
target's signature. Paths outside the repository (the model checkpoint, a
dataset elsewhere) are not in the spec, only their contents (as sources):
that keeps signatures, and so a shared `cache=DIR`, independent of where a
checkout or a virtualenv lives.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import SCons.Action
import SCons.Builder

EXTERNAL_PREFIX = "@external:"


def _resolve(value, externals):
    if isinstance(value, str) and value.startswith(EXTERNAL_PREFIX):
        return externals[int(value[len(EXTERNAL_PREFIX):])]
    if isinstance(value, list):
        return [_resolve(v, externals) for v in value]
    if isinstance(value, dict):
        return {k: _resolve(v, externals) for k, v in value.items()}
    return value


def run_stage(target, source, env):
    spec = json.loads(source[0].read())
    spec["args"] = _resolve(spec["args"], env.get("EDGESMITH_EXTERNALS", []))
    root = env["EDGESMITH_ROOT"]
    fd, error_file = tempfile.mkstemp(prefix="edgesmith-error-", suffix=".txt")
    os.close(fd)
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = root + os.pathsep + child_env.get("PYTHONPATH", "")
    child_env["EDGESMITH_ERROR_FILE"] = error_file
    try:
        proc = subprocess.run([sys.executable, "-m", "recipes.stage_main"], input=json.dumps(spec).encode(),
                              cwd=root, env=child_env)
        with open(error_file, encoding="utf-8") as fh:
            message = fh.read().strip()
    finally:
        os.unlink(error_file)
    # A string result is how a function action fails with a message of our
    # own: SCons prints `scons: *** [target] message`, with no traceback.
    if proc.returncode == 0:
        return 0
    if message:
        return message
    if proc.returncode < 0:
        return f"stage {spec['stage']} was killed by signal {-proc.returncode}"
    return f"stage {spec['stage']} failed (exit {proc.returncode}); see the output above"


def describe_stage(target, source, env):
    spec = json.loads(source[0].read())
    return f"[{spec['stage']}] {target[0]}"


def generate(env):
    action = SCons.Action.Action(run_stage, describe_stage)
    env["BUILDERS"]["EdgesmithStage"] = SCons.Builder.Builder(action=action)


def exists(env):
    return True
