"""One stage on a Ray worker: what `executor=ray` runs on a node (recipes/wiring/ray_executor.py submits it).

The node shares no filesystem with the machine running SCons. So the task:
1. refuses to run when the node's libraries are not the versions in the stage's signature (the build would
   otherwise cache a silently different artifact under the same key);
2. writes the stage's inputs, fetched from Ray's object store, into a scratch directory laid out like the
   repository (build outputs at their build/ paths, the user's checkpoint and data files under _external/);
3. runs the stage there exactly as SCons does locally (recipes/wiring/stage_process.py: a fresh process
   forked from a server that preloaded the heavy libraries; the server lives as long as this worker);
4. returns the declared outputs' bytes, which the SCons side writes atomically into its build/.

The code comes from Ray's runtime_env working directory (the task's cwd), so the recipes that run are the
checkout's. Nothing here is in a stage's signature: it decides where a stage runs, not what it computes.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

EXTERNAL_DIR = "_external"


def node_versions(packages: list[str]) -> dict[str, str]:
    """The versions this node would run (graph.package_version: the same reading SCons signs with)."""
    from recipes.wiring.graph import package_version

    return {name: package_version(name) for name in packages}


def version_mismatch(spec: dict, node: str) -> str:
    """One line when this node's Python or libraries differ from the stage's signature; "" when they match."""
    wanted = spec.get("versions") or {}
    have = node_versions(sorted(wanted))
    python = ".".join(map(str, sys.version_info[:2]))
    if spec.get("python") and spec["python"] != python:
        return (f"node {node} runs Python {python}, the build's stage {spec['stage']} was signed with Python "
                f"{spec['python']}: start the node from the same Python as the machine running scons")
    for name in sorted(wanted):
        if have[name] != wanted[name]:
            return (f"node {node} has {name} {have[name]}, the build's stage {spec['stage']} was signed with {name} "
                    f"{wanted[name]}: install {name}=={wanted[name]} on that node (the build's constraints.txt), "
                    "or take it out of the cluster")
    return ""


def localize(value: Any, externals: dict[str, str]) -> Any:
    """The spec's arguments with each external path (the user's checkpoint, data) replaced by its scratch copy."""
    if isinstance(value, str):
        return externals.get(value, value)
    if isinstance(value, list):
        return [localize(v, externals) for v in value]
    if isinstance(value, dict):
        return {k: localize(v, externals) for k, v in value.items()}
    return value


def local_paths(message: str, scratch: Path, externals: dict[str, str]) -> str:
    """A stage's error names its inputs as the user gave them, not as this node's scratch copies."""
    for original, rel in externals.items():
        message = message.replace(str(scratch / rel), original)
    return message.replace(f"{scratch}/", "")


def write_inputs(scratch: Path, inputs: dict[str, bytes], modes: dict[str, int], digests: dict[str, str]) -> str:
    """Write the fetched inputs; "" or one line naming an input whose bytes are not the ones the driver hashed."""
    for rel, data in inputs.items():
        if hashlib.sha256(data).hexdigest() != digests[rel]:
            return f"{rel}: the object store handed this node bytes whose sha256 is not the input's; build again"
        path = scratch / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(modes[rel])  # a stub's executable bit reaches the bundle, as it does locally
    return ""


# Ray sets OMP_NUM_THREADS to a task's num_cpus in its workers. A stage run that way computes with fewer threads
# than the same stage run by SCons, and float reductions (the verification figures a .pte records) then differ
# in their last bits: the worker takes the value the machine running scons has, or none, as locally.
THREAD_VARIABLES = ("OMP_NUM_THREADS",)


def run_stage(spec: dict, inputs: dict[str, list], modes: dict[str, int], digests: dict[str, str],
              externals: dict[str, str], targets: list[str], device_resource: str,
              thread_env: dict[str, str | None]) -> dict[str, Any]:
    """The Ray task body.

    `inputs`: scratch-relative path -> [ObjectRef of its bytes] (wrapped in a list so Ray hands over the
    reference, and the bytes are fetched here, once each); `modes` and `digests`: each input's permission bits
    and sha256, checked before use; `externals`: the driver's absolute path of each external input -> its
    scratch-relative path; `targets`: the outputs, relative to the repository; `thread_env`: THREAD_VARIABLES as
    the machine running scons has them (None: unset).
    Returns each output's bytes, permission bits and sha256 (the driver checks them before writing), or the
    stage's one-line error, and where and when it ran."""
    import ray

    from recipes.wiring import stage_process

    started = time.time()
    context = ray.get_runtime_context()
    where = {"executor": "ray", "node_id": context.get_node_id(), "hostname": socket.gethostname(),
             "node_ip": ray.util.get_node_ip_address(), "device_resource": device_resource,
             "pid": os.getpid(), "versions": node_versions(sorted(spec.get("versions") or {})),
             "python": ".".join(map(str, sys.version_info[:2]))}
    refused = version_mismatch(spec, f"{where['hostname']} ({where['node_ip']}, {where['node_id'][:12]})")
    if refused:
        return {"returncode": 2, "message": refused, "outputs": {}, "where": where, "started": started,
                "finished": time.time()}
    code_root = os.getcwd()  # Ray's runtime_env working_dir: the checkout's code
    scratch = Path(tempfile.mkdtemp(prefix=f"edgesmith-{spec['stage']}-"))
    try:
        paths = list(inputs)
        blobs = ray.get([inputs[p][0] for p in paths])
        corrupt = write_inputs(scratch, dict(zip(paths, blobs)), modes, digests)
        fetched = time.time()
        if corrupt:
            return {"returncode": 2, "message": f"stage {spec['stage']} on node {where['hostname']}: {corrupt}",
                    "outputs": {}, "where": where, "started": started, "finished": time.time()}
        local = dict(spec, args=localize(spec["args"], {k: str(scratch / v) for k, v in externals.items()}))
        fd, error_file = tempfile.mkstemp(prefix="edgesmith-error-", suffix=".txt")
        os.close(fd)
        # Measurements record the machine they ran on (recipes/measure/latency.py measured_on). Set in this
        # worker's own environment, which the stage server it starts (and so every stage forked from it) inherits;
        # it names the node, which does not change for the worker's life.
        os.environ["EDGESMITH_NODE"] = f"{where['hostname']} (Ray node {where['node_id'][:12]})"
        for name, value in thread_env.items():  # before the stage server starts and imports torch
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        env = dict(os.environ, PYTHONPATH=code_root + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   EDGESMITH_ERROR_FILE=error_file)
        try:
            returncode = stage_process.run(local, str(scratch), env, error_file)
            message = local_paths(Path(error_file).read_text(encoding="utf-8").strip(), scratch, externals)
        finally:
            os.unlink(error_file)
        ran = time.time()
        outputs: dict[str, tuple[bytes, int, str]] = {}
        if returncode == 0:
            missing = [t for t in targets if not (scratch / t).is_file()]
            if missing:
                returncode, message = 2, (f"stage {spec['stage']} finished on node {where['hostname']} without "
                                          f"writing {', '.join(missing)}")
            else:
                for t in targets:
                    data = (scratch / t).read_bytes()
                    outputs[t] = (data, (scratch / t).stat().st_mode & 0o777, hashlib.sha256(data).hexdigest())
        return {"returncode": returncode, "message": message, "outputs": outputs, "where": where,
                "started": started, "fetched": fetched, "ran": ran, "finished": time.time()}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
