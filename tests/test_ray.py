"""executor=ray on a real Ray cluster (recipes/wiring/ray_executor.py and ray_task.py), not a mock.

A two-node cluster on this machine (ray.cluster_utils, every process on 127.0.0.1): a head and a node
that offers the tiny profile's device resource, `device:tiny`. One `-j2` build of target=tiny runs
there while one of its workers is killed mid-stage; it must give the very bundle the local build gave,
with the latency and memory measurements on the labelled node. The rest reuse that build: a node with
other library versions is refused in one line, a no-op build does not contact any cluster, Ctrl-C
cancels the stage in flight. Failures that need no cluster (unreachable address, a user error) are
checked against an address where nothing listens.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import SCONS, make_project, scons, stages_run

# Ray replaces 127.0.0.1 by the machine's own network address unless this is off (its single-machine mode,
# ray/_private/services.py get_node_ip_address); with it off, every Ray process listens on 127.0.0.1 only.
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
NOWHERE = "127.0.0.1:9"   # the discard port: nothing listens there
DEVICE = "device:tiny"    # tests/fixtures/tiny.toml: [device] name = "tiny"


def ray_processes(title: str) -> list[int]:
    """Pids of the Ray workers whose process title is `title` (a worker running task "edgesmith:finetune" is
    titled "ray::edgesmith:finetune")."""
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in out.splitlines() if line.split(None, 1)[1:] == [title]]


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    old = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    small = {"num_cpus": 1, "node_ip_address": "127.0.0.1", "object_store_memory": 150 * 2**20}
    c = Cluster(initialize_head=True, head_node_args={**small, "include_dashboard": False})
    device_node = c.add_node(**small, resources={DEVICE: 1})
    yield c, device_node
    c.shutdown()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def ray_built(cluster, tiny_built, tmp_path_factory):
    """target=tiny built with executor=ray, -j2; the worker running the fine-tuning is SIGKILLed once, mid-stage.
    Returns (project, args, CompletedProcess, killed pid)."""
    c, _ = cluster
    project = make_project(tmp_path_factory.mktemp("ray") / "p")
    args = (*tiny_built[1], "executor=ray", f"ray_address={c.address}")
    killed: list[int] = []

    def kill_finetune_worker():
        deadline = time.time() + 300
        while time.time() < deadline and not killed:
            pids = ray_processes("ray::edgesmith:finetune")
            if pids:
                time.sleep(1.0)  # inside the stage: inputs fetched, the stage process started
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_finetune_worker, daemon=True)
    killer.start()
    proc = scons(project, "-j2", *args, timeout=900, env=RAY_ENV)
    killer.join(timeout=1)
    return project, args, proc, (killed or [None])[0]


def test_every_stage_runs_on_the_cluster_and_the_bundle_is_the_local_builds(ray_built, tiny_built, cluster):
    project, _, proc, killed = ray_built
    _, device_node = cluster
    assert killed is not None, "the fine-tuning never ran on a Ray worker"
    # Every stage the local build ran, each once (the killed fine-tuning was retried by Ray, not by SCons).
    assert sorted(stages_run(proc)) == sorted(stages_run(tiny_built[2]))
    tarball = Path("dist") / "tiny-tiny-bert.tar.gz"
    assert (project / tarball).read_bytes() == (tiny_built[0] / tarball).read_bytes()

    placement = json.loads((project / "build" / "tiny" / "placement.json").read_text())
    records = {r["target"]: r for r in placement["stages"]}
    assert {r["executor"] for r in records.values()} == {"ray"}
    measured = [r for r in records.values() if r["stage"] in ("latency", "memory")]
    assert len(measured) == 2
    for r in measured:
        assert r["device_resource"] == DEVICE and r["node_id"] == device_node.node_id, r
    assert all(r["device_resource"] == "" for r in records.values() if r["stage"] not in ("latency", "memory"))
    finetune = next(r for r in records.values() if r["stage"] == "finetune")
    assert finetune["pid"] != killed   # the retry ran in another worker
    assert finetune["versions"]["torch"] == tiny_built_versions(tiny_built)["torch"]
    report = json.loads((project / "build" / "tiny" / "report.json").read_text())
    assert device_node.node_id[:12] in report["measured_on"]["node"]
    # The stage's own timings, and what Ray's dispatch added around them.
    assert set(finetune["timing_s"]) == {"submit_to_start", "inputs_fetch", "stage", "result_to_written", "total"}


def tiny_built_versions(tiny_built) -> dict[str, str]:
    from recipes.wiring.graph import package_version

    return {"torch": package_version("torch")}


def test_a_no_op_build_never_contacts_a_cluster(ray_built):
    project, args, _, _ = ray_built
    # An address where nothing listens: any attempt to connect would fail the build.
    args = tuple(a for a in args if not a.startswith("ray_address=")) + (f"ray_address={NOWHERE}",)
    proc = subprocess.run([sys.executable, "-X", "importtime", SCONS, "-Q", *args], cwd=project, capture_output=True,
                          text=True, env=dict(os.environ, **RAY_ENV))
    assert proc.returncode == 0 and stages_run(proc) == [], proc.stdout + proc.stderr[-2000:]
    imported = set(re.findall(r"\|\s+([\w.]+)$", proc.stderr, re.M))
    assert "ray" not in {name.split(".")[0] for name in imported}, "a no-op build imported ray"


def test_a_node_with_other_library_versions_is_refused_in_one_line(ray_built, cluster, tmp_path):
    """A node whose tokenizers reports another version (a dist-info on its PYTHONPATH, as an older install
    would) must not fine-tune: the cache would file its model under this build's signature."""
    c, _ = cluster
    project, args, _, _ = ray_built
    fake = tmp_path / "site" / "tokenizers-0.0.1.dist-info"
    fake.mkdir(parents=True)
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: tokenizers\nVersion: 0.0.1\n")
    # Only this node has two CPUs, and this profile's fine-tuning asks for two: it can only land there.
    skewed = c.add_node(num_cpus=2, node_ip_address="127.0.0.1", object_store_memory=150 * 2**20,
                        env_vars={"PYTHONPATH": str(tmp_path / "site")})
    try:
        profile = project / "targets" / "tiny_skewed.toml"
        text = (project / "targets" / "tiny.toml").read_text().replace("epochs = 2", "epochs = 1")
        profile.write_text(text + "\n[resources.finetune]\ncpus = 2\n")
        proc = scons(project, "target=tiny_skewed", *[a for a in args if not a.startswith("target=")], check=False,
                     env=RAY_ENV)
    finally:
        c.remove_node(skewed)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(errors) == 1, proc.stderr
    assert re.search(r"node .* has tokenizers 0\.0\.1, the build's stage finetune was signed with tokenizers \S+: "
                     r"install tokenizers==\S+ on that node", errors[0]), errors[0]
    assert "Traceback" not in proc.stderr


def test_ctrl_c_cancels_the_stage_running_on_the_cluster(ray_built):
    project, args, _, _ = ray_built
    profile = project / "targets" / "tiny_long.toml"
    profile.write_text((project / "targets" / "tiny.toml").read_text().replace("epochs = 2", "epochs = 60"))
    proc = subprocess.Popen([SCONS, "-Q", "target=tiny_long", *[a for a in args if not a.startswith("target=")]],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, **RAY_ENV, PYTHONWARNINGS="ignore", TQDM_DISABLE="1"))
    deadline = time.time() + 120
    while time.time() < deadline and not ray_processes("ray::edgesmith:finetune"):
        time.sleep(0.2)
    assert ray_processes("ray::edgesmith:finetune"), "the fine-tuning never started on the cluster"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode != 0
    deadline = time.time() + 30
    while time.time() < deadline and ray_processes("ray::edgesmith:finetune"):
        time.sleep(0.2)
    assert not ray_processes("ray::edgesmith:finetune"), "the stage still runs on the cluster"
    assert "Build interrupted" in out, out[-2000:]


def test_an_unreachable_cluster_is_one_line_naming_the_address(tiny_model, tiny_data, tmp_path):
    project = make_project(tmp_path / "p")
    proc = scons(project, "target=tiny", f"model={tiny_model}", f"data={tiny_data}", "executor=ray",
                 f"ray_address={NOWHERE}", check=False, env=RAY_ENV)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(errors) == 1 and f"cannot reach the Ray cluster at {NOWHERE}" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_user_error_on_a_worker_is_the_same_line_as_locally(cluster, tmp_path, tiny_model):
    c, _ = cluster
    bad = tmp_path / "bad.csv"
    # Row 6 has no text: the data stage (on a worker, under Ray) refuses it, naming the file the user gave.
    bad.write_text("text,label\n" + "".join(f"{'' if i == 5 else f'sentence {i}'},{i % 2}\n" for i in range(30)))
    lines = {}
    for executor in ("local", "ray"):
        project = make_project(tmp_path / executor)
        proc = scons(project, "target=tiny", f"model={tiny_model}", f"data={bad}", f"executor={executor}",
                     f"ray_address={c.address}", check=False, env=RAY_ENV)
        assert proc.returncode != 0
        lines[executor] = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert len(lines["ray"]) == 1 and lines["ray"] == lines["local"], lines
    assert f"{bad}: row 6: empty or missing 'text'" in lines["ray"][0]


def engine_profile(project: Path, device: str) -> str:
    """tests/fixtures/tiny.toml with a TensorRT fp16 artifact whose engine is built on the device's Ray node."""
    text = (project / "targets" / "tiny.toml").read_text()
    text = re.sub(r'^runtimes = .*$', 'runtimes = ["onnxruntime", "tensorrt"]', text, count=1, flags=re.M)
    text = text.replace('name = "tiny"', f'name = "{device}"\naccelerator = "jetson"\ncompute_capability = "8.7"', 1)
    text += ('\n[[artifacts]]\nname = "engine_fp16"\nformat = "tensorrt"\nprecision = "fp16"\n'
             'quantize = { method = "fp16", keep_io_types = true }\n\n[engine]\nbuild = "cluster"\ntensorrt = "10.3"\n')
    name = f"tiny_engine_{device.replace('-', '_')}"
    (project / "targets" / f"{name}.toml").write_text(text)
    return name


def test_an_engine_built_on_the_cluster_goes_to_the_device_node_or_nowhere(ray_built, cluster):
    """engine.build = 'cluster': the engine stage runs on the node offering the device, which here has no TensorRT
    and no GPU, so it refuses there in one line; with no such node it fails in one line rather than fall back to
    this host; without executor=ray the profile is refused when it is read."""
    project, args, _, _ = ray_built
    _, device_node = cluster
    others = [a for a in args if not a.startswith("target=")]

    def errors(*cmd):
        proc = scons(project, *cmd, check=False, env=RAY_ENV)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
        return [line for line in proc.stderr.splitlines() if line.startswith(("scons: ***", "edgesmith: error"))]

    def engine_record(target: str) -> str:
        """The engine stage's first output, so that the build asks for it (and its inputs) only."""
        return re.search(r"^\[engine\] (\S+)$", scons(project, "-n", target, *others, env=RAY_ENV).stdout, re.M).group(1)

    target = f"target={engine_profile(project, 'tiny')}"
    on_device = errors(target, *others, engine_record(target))
    assert len(on_device) == 1, on_device
    assert (f"engine engine_fp16: engine.build = 'cluster' but node " in on_device[0]
            and f"Ray node {device_node.node_id[:12]}" in on_device[0] and "cannot build TensorRT engines" in on_device[0])
    target = f"target={engine_profile(project, 'orin-shelf')}"
    nowhere = errors(target, *others, engine_record(target))
    assert len(nowhere) == 1 and "must run on the node offering device:orin-shelf (engine.build = 'cluster')" in nowhere[0]
    local = errors(f"target={engine_profile(project, 'tiny')}", *[a for a in others if not a.startswith("executor=")])
    assert len(local) == 1 and "engine.build = 'cluster' builds the engine on the device's Ray node; run with executor=ray" in local[0]


def test_inputs_keep_repository_paths_and_external_ones_move_under_external(tmp_path):
    """What a node's scratch directory looks like: build outputs at their build/ paths, the user's checkpoint
    directory and data file under _external/<n>/<their name>; an input nothing names is refused."""
    from recipes.wiring.ray_executor import ClusterError, scratch_layout
    from recipes.wiring.ray_task import local_paths, localize

    root, model, data = tmp_path / "repo", tmp_path / "ckpt" / "tiny-bert", tmp_path / "d" / "rows.csv"
    for f in (root / "build" / "stages" / "x" / "a.onnx", model / "config.json", model / "sub" / "vocab.txt", data):
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text("x")
    sources = [str(root / "build" / "stages" / "x" / "a.onnx"), str(model / "config.json"),
               str(model / "sub" / "vocab.txt"), str(data)]
    # The vocabulary is also named on its own (as a stub names the checkpoint's tokenizer.json): one place for it.
    layout, ext = scratch_layout(str(root), sources, [str(model / "sub" / "vocab.txt"), str(model), str(data)])
    assert layout == {"build/stages/x/a.onnx": sources[0], "_external/1/tiny-bert/config.json": sources[1],
                      "_external/1/tiny-bert/sub/vocab.txt": sources[2], "_external/2/rows.csv": sources[3]}
    assert ext[str(model / "sub" / "vocab.txt")] == "_external/1/tiny-bert/sub/vocab.txt"
    scratch = Path("/tmp/edgesmith-data-abc")
    args = localize({"model_dir": str(model), "files": [str(data), "build/stages/x/a.onnx"]},
                    {k: str(scratch / v) for k, v in ext.items()})
    assert args == {"model_dir": f"{scratch}/_external/1/tiny-bert", "files": [f"{scratch}/_external/2/rows.csv",
                                                                               "build/stages/x/a.onnx"]}
    assert local_paths(f"{scratch}/_external/2/rows.csv: row 3: empty", scratch, ext) == f"{data}: row 3: empty"
    with pytest.raises(ClusterError, match="an input outside the repository that the stage's arguments do not name"):
        scratch_layout(str(root), [str(tmp_path / "elsewhere.csv")], [])


def test_a_version_or_python_mismatch_names_both_versions():
    from recipes.wiring.ray_task import node_versions, version_mismatch

    have = node_versions(["onnx"])["onnx"]
    python = f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert version_mismatch({"stage": "export", "versions": {"onnx": have}, "python": python}, "n1") == ""
    line = version_mismatch({"stage": "export", "versions": {"onnx": "0.1"}}, "n1")
    assert line == (f"node n1 has onnx {have}, the build's stage export was signed with onnx 0.1: install onnx==0.1 on "
                    "that node (the build's constraints.txt), or take it out of the cluster")
    assert "runs Python" in version_mismatch({"stage": "export", "versions": {}, "python": "2.7"}, "n1")
