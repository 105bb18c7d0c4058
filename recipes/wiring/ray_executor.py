"""`executor=ray`: each stage SCons runs becomes a Ray task; SCons stays the graph engine.

Signatures, cache=DIR, early cut-off and the stamps are SCons's, exactly as with the local executor: this
module only replaces "start a child process here" by "run it on a node" (recipes/wiring/ray_task.py is the
node's side). `-j N` is N tasks in flight, one per SCons job thread. The cluster is contacted when the first
stage has to run, never while the build files are read, so a no-op build neither starts nor joins one.

What travels, since no filesystem is shared:
- code: Ray's runtime_env working directory (the checkout without build/, dist/, .venv, .git, tests/, bench/);
- inputs: each source file's bytes, put once into the object store under its sha256 by a detached actor
  (`edgesmith-blobs-1`) that owns them, so a file is sent once per cluster, across builds and clones;
- outputs: their bytes come back as the task's result and are written here atomically (temp file, rename).

A stage whose resource request no node can satisfy fails in one line instead of waiting forever; a
device-bound stage whose `device:<name>` no node offers runs here, as without Ray, and says so once.
A worker killed mid-stage is retried by Ray (max_retries); Ctrl-C cancels the tasks in flight.
"""
from __future__ import annotations

import hashlib
import os
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from recipes.fsutil import atomic_path
from recipes.wiring import ray_task, stage_process
from recipes.wiring.resources import DEVICE_BOUND
from runtime.integrity import sha256_file

# Ray retries a task whose worker process died (killed, OOM) this many times; a stage's own failure is not retried.
MAX_RETRIES = 3
POLL_S = 0.5
# Versioned: a detached actor of an older edgesmith may still run with other methods.
BLOB_INDEX = "edgesmith-blobs-1"
NAMESPACE = "edgesmith"
# Never uploaded as code: build outputs, caches, environments, and what only the build host needs.
EXCLUDES = ["build/", "dist/", ".venv/", "venv/", ".git/", "tests/", "bench/", "**/__pycache__/", "*.egg-info/",
            ".pytest_cache/", ".sconsign.dblite"]


class ClusterError(Exception):
    """A one-line problem with the cluster itself (unreachable, no node fits); the stage shows it."""


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.connected_to: str | None = None
        self.index = None
        self.remote = None
        self.inflight: set = set()
        self.hashes: dict[tuple[str, int, int], str] = {}
        self.blob_locks: dict[str, threading.Lock] = {}
        self.warned_devices: set[str] = set()


_state = _State()


def _reachable(address: str) -> None:
    """Fail in one line, at once, when nothing listens at `address` (Ray itself retries for a long time)."""
    if address in ("", "auto", "local") or address.startswith("ray://"):
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=5):
            pass
    except ValueError:
        raise ClusterError(f"ray_address={address}: not HOST:PORT; give the head's GCS address, e.g. "
                           "ray_address=127.0.0.1:6379") from None
    except OSError as e:
        raise ClusterError(f"cannot reach the Ray cluster at {address} ({e.strerror or e}); start its head with "
                           f"`ray start --head`, or fix ray_address= / RAY_ADDRESS") from None


def connect(address: str, root: str):
    """ray, connected to the cluster at `address` ("" = Ray's own RAY_ADDRESS convention, else a new local
    instance on 127.0.0.1) with the checkout's code as the working directory. Once per SCons run."""
    with _state.lock:
        if _state.connected_to is not None:
            import ray

            return ray
        address = address or os.environ.get("RAY_ADDRESS", "")
        _reachable(address)
        import logging

        import ray

        kwargs: dict[str, Any] = {} if address else {"_node_ip_address": "127.0.0.1", "include_dashboard": False}
        try:
            ray.init(address=address or None, namespace=NAMESPACE, logging_level=logging.WARNING,
                     log_to_driver=True, configure_logging=True,
                     runtime_env={"working_dir": root, "excludes": EXCLUDES}, **kwargs)
        except (ConnectionError, RuntimeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ClusterError(f"cannot join the Ray cluster at {address or 'a new local instance'}: {first}") from None

        @ray.remote(num_cpus=0)
        class BlobIndex:
            """sha256 -> [ObjectRef]: which input files the cluster already holds (the refs it owns keep them)."""
            def __init__(self):
                self.refs = {}

            def lookup(self, keys):
                return {k: self.refs[k] for k in keys if k in self.refs}

            def store(self, key, data):
                # Put here, so this detached actor owns the object and it outlives the build that sent it
                # (ray.put's _owner= was removed in Ray 2.56).
                if key not in self.refs:
                    self.refs[key] = [ray.put(data)]
                return {key: self.refs[key]}

        _state.index = BlobIndex.options(name=BLOB_INDEX, namespace=NAMESPACE, lifetime="detached",
                                         get_if_exists=True).remote()
        _state.remote = ray.remote(max_retries=MAX_RETRIES, retry_exceptions=False)(ray_task.run_stage)
        _state.connected_to = address or "local"
        return ray


def _sha256(path: str) -> str:
    """sha256_file, once per file version in this SCons run (a model is an input of many stages)."""
    st = os.stat(path)
    key = (path, st.st_size, st.st_mtime_ns)
    if key not in _state.hashes:
        _state.hashes[key] = sha256_file(Path(path))
    return _state.hashes[key]


def _blobs(ray, paths: dict[str, str], digests: dict[str, str]) -> dict[str, list]:
    """scratch path -> [ObjectRef] for each local file in `paths` (scratch path -> local path), each put once
    under its sha256 (`digests`)."""
    known = ray.get(_state.index.lookup.remote(sorted(set(digests.values()))))
    for rel, digest in sorted(digests.items()):
        if digest in known:
            continue
        with _state.lock:
            lock = _state.blob_locks.setdefault(digest, threading.Lock())
        with lock:  # two job threads needing the same new file send it once
            if digest in known:
                continue
            again = ray.get(_state.index.lookup.remote([digest]))
            if digest not in again:
                again = ray.get(_state.index.store.remote(digest, Path(paths[rel]).read_bytes()))
            known.update(again)
    return {rel: known[digest] for rel, digest in digests.items()}


def scratch_layout(root: str, sources: list[str], externals: list[str]) -> tuple[dict[str, str], dict[str, str]]:
    """Where each source goes in the node's scratch directory: (scratch path -> local path, external path ->
    scratch path). Repository files keep their relative path; a user's checkpoint directory or data file outside
    the repository goes under _external/<n>/<its name>, and the spec's arguments are rewritten to match. An
    external inside another (the checkpoint's tokenizer.json, named on its own by a stub) lies inside that one's
    copy, so each file has one place and every argument that names it finds it."""
    from recipes.wiring.ray_task import EXTERNAL_DIR

    def outermost(path: Path) -> str | None:
        containing = [e for e in externals if path == Path(e) or path.is_relative_to(e)]
        return min(containing, key=lambda e: len(Path(e).parts)) if containing else None

    def placed(path: Path, owner: str) -> str:
        base = f"{EXTERNAL_DIR}/{externals.index(owner)}/{Path(owner).name}"
        return base if path == Path(owner) else f"{base}/{path.relative_to(owner).as_posix()}"

    ext_map = {e: placed(Path(e), outermost(Path(e))) for e in externals}
    layout: dict[str, str] = {}
    for src in sources:
        path = Path(src)
        if path.is_dir():
            continue  # a directory node (none today) would travel as its files
        if path.is_relative_to(root):
            layout[path.relative_to(root).as_posix()] = src
            continue
        owner = outermost(path)
        if owner is None:
            raise ClusterError(f"{src}: an input outside the repository that the stage's arguments do not name; "
                               "it cannot be sent to a Ray node")
        layout[placed(path, owner)] = src
    return layout, ext_map


def _feasible(nodes: list[dict], req: dict) -> bool:
    """Whether one of `nodes` (the live nodes' total resources) can ever run a task asking for `req`."""
    return any(have.get("CPU", 0) >= req["num_cpus"] and have.get("GPU", 0) >= req["num_gpus"]
               and have.get("memory", 0) >= req["memory"] and (not req["device"] or have.get(req["device"], 0) >= 1)
               for have in nodes)


def run(spec: dict, root: str, error_file: str, targets: list[str], sources: list[str], externals: list[str],
        request: dict, address: str) -> tuple[int | None, dict[str, Any]]:
    """Run the stage on the cluster. (exit code, where it ran) as the local executor gives; exit code None: the
    stage is device-bound and no node offers its device, so the caller runs it here. A one-line problem is
    written to `error_file` (exit 2), as a stage's own error is."""
    submitted = time.time()
    try:
        ray = connect(address, root)
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        device = request.get("device", "")
        device_nodes = [have for have in nodes if have.get(device, 0) >= 1] if device else []
        if device and not device_nodes:
            if request.get("device_required"):
                raise ClusterError(f"stage {spec['stage']} must run on the node offering {device} (engine.build = "
                                   f"'cluster'), and no node of the Ray cluster at {_state.connected_to} offers it; "
                                   f"start the device with `ray start --address=HEAD --resources='{{\"{device}\": 1}}'`, "
                                   "or use engine.build = 'auto'")
            with _state.lock:
                first = device not in _state.warned_devices
                _state.warned_devices.add(device)
            if first:
                stage_process.say(f"edgesmith: no node of the Ray cluster offers {device}: its stages "
                                  f"({', '.join(sorted(DEVICE_BOUND))}) run on this host, as without Ray; add the device "
                                  f"with `ray start --address=HEAD --resources='{{\"{device}\": 1}}'`")
            return None, {}
        if device and request.get("whole_node"):
            # Every CPU of the (largest) node offering the device, so nothing runs beside the measurement.
            request = dict(request, num_cpus=max(have.get("CPU", 0) for have in device_nodes))
        if not _feasible(nodes, request):
            raise ClusterError(f"stage {spec['stage']} asks for {_describe(request)}, and no node of the Ray cluster at "
                               f"{_state.connected_to} has that much; lower [resources.{spec['stage']}] in the profile "
                               "or add a node that has it")
        layout, ext_map = scratch_layout(root, sources, externals)
        digests = {rel: _sha256(local) for rel, local in layout.items()}
        inputs = _blobs(ray, layout, digests)
        rel_targets = [Path(t).relative_to(root).as_posix() for t in targets]
        spec = dict(spec, python=".".join(map(str, sys.version_info[:2])))
        options: dict[str, Any] = {"num_cpus": request["num_cpus"], "num_gpus": request["num_gpus"],
                                   "name": f"edgesmith:{spec['stage']}"}
        if request["memory"]:
            options["memory"] = request["memory"]
        if device:
            options["resources"] = {device: 1}
        modes = {rel: os.stat(local).st_mode & 0o777 for rel, local in layout.items()}
        thread_env = {name: os.environ.get(name) for name in ray_task.THREAD_VARIABLES}
        ref = _state.remote.options(**options).remote(spec, inputs, modes, digests, ext_map, rel_targets, device,
                                                      thread_env)
        with _state.lock:
            _state.inflight.add(ref)
        try:
            while True:
                done, _ = ray.wait([ref], timeout=POLL_S)
                if done:
                    break
                if stage_process.scons_interrupted():
                    ray.cancel(ref, force=True)
                    raise ClusterError(f"interrupted: cancelled stage {spec['stage']} on the cluster")
            result = ray.get(ref)
        finally:
            with _state.lock:
                _state.inflight.discard(ref)
    except ClusterError as e:
        Path(error_file).write_text(str(e), encoding="utf-8")
        return 2, {}
    except Exception as e:  # a Ray failure (worker lost beyond its retries, node died): one line, the detail below
        traceback.print_exc(file=sys.stderr)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        Path(error_file).write_text(f"stage {spec['stage']} failed on the Ray cluster: {type(e).__name__}: {first}",
                                    encoding="utf-8")
        return 2, {}
    if result["returncode"] == 0:
        for rel, (data, _, digest) in result["outputs"].items():
            if hashlib.sha256(data).hexdigest() != digest:
                Path(error_file).write_text(f"stage {spec['stage']}: {rel} arrived from node {result['where']['hostname']} "
                                            "with other bytes than it wrote (sha256 differs); build again", encoding="utf-8")
                return 2, {}
        for rel, (data, mode, _) in result["outputs"].items():
            with atomic_path(Path(root) / rel) as tmp:  # as a stage writes locally: a killed build's leftovers go
                tmp.write_bytes(data)
                tmp.chmod(mode)
    elif result["message"]:
        Path(error_file).write_text(result["message"], encoding="utf-8")
    written = time.time()
    where = dict(result["where"], timing_s={
        "submit_to_start": round(result["started"] - submitted, 3),
        "inputs_fetch": round(result.get("fetched", result["finished"]) - result["started"], 3),
        "stage": round(result.get("ran", result["finished"]) - result.get("fetched", result["started"]), 3),
        "result_to_written": round(written - result["finished"], 3),
        "total": round(written - submitted, 3)},
        bytes_in=sum(Path(p).stat().st_size for p in layout.values()),
        bytes_out=sum(len(d) for d, _, _ in result["outputs"].values()))
    return result["returncode"], where


def _describe(req: dict) -> str:
    parts = [f"{req['num_cpus']:g} CPU"]
    if req["num_gpus"]:
        parts.append(f"{req['num_gpus']:g} GPU")
    if req["memory"]:
        parts.append(f"{req['memory'] / 2**30:g} GiB memory")
    if req["device"]:
        parts.append(req["device"])
    return ", ".join(parts)


def cancel_inflight() -> None:
    """Cancel every task still in flight (SCons is exiting: interrupted, or a -k-less failure elsewhere)."""
    if not _state.inflight:
        return
    import ray

    for ref in list(_state.inflight):
        try:
            ray.cancel(ref, force=True)
        except Exception:  # noqa: BLE001  best effort while exiting
            pass
