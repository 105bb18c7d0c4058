"""`scons -j2 target=all` on a tiny model: every device bundle, shared stages built once."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import pytest

from conftest import make_project, scons, stages_run
from tiny_model import REPO

pytestmark = pytest.mark.slow
# The classification device profiles (conftest's all_targets_built leaves cpu_embedding to test_embedding.py).
DEVICE_TARGETS = sorted(p.stem for p in (REPO / "targets").glob("*.toml") if p.stem != "cpu_embedding")


@pytest.fixture(scope="module")
def built(all_targets_built):
    return all_targets_built


def test_every_stage_runs_once_across_targets(built):
    ran = stages_run(built[1])
    repeated = [t for t, n in Counter(target for _, target in ran).items() if n > 1]
    assert not repeated
    counts = Counter(stage for stage, _ in ran)
    # One data split, one fine-tuned teacher and one fp32 export serve every target (the checkpoint is a
    # sentence-transformers one, as the packaged MiniLM: task = "classification" fine-tunes it).
    assert counts["data"] == 1 and counts["finetune"] == 1 and counts["export"] == 1 and counts["embedder"] == 0
    assert counts["bundle"] == counts["archive"] == counts["report"] == len(DEVICE_TARGETS)
    # jetson and gpu_server ask for the same fp16 ONNX: converted once.
    fp16 = [t for s, t in ran if s == "quantize" and "onnx-fp16" in t]
    assert len(fp16) == 1


def test_each_target_has_a_verified_bundle_with_readme(built):
    project = built[0]
    sys.path.insert(0, str(project))
    from runtime import load_bundle

    for target in DEVICE_TARGETS:
        tarballs = list((project / "dist").glob(f"{target}-*.tar.gz"))
        assert len(tarballs) == 1, target
        with load_bundle(tarballs[0]) as bundle:
            assert bundle.target == target
            names = {f["path"] for f in bundle.manifest["files"]}
            assert any(n.endswith("README.md") for n in names), target
        report = json.loads((project / "build" / target / "report.json").read_text())
        assert {r["name"] for r in report["artifacts"]} >= {a["name"] for a in bundle.manifest["artifacts"]}


def test_jetson_bundle_defers_engines_and_runs_on_onnxruntime(built):
    project = built[0]
    bundle = project / "build" / "jetson" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    engines = [a for a in manifest["artifacts"] if a["format"] == "tensorrt"]
    assert {a["precision"] for a in engines} == {"fp16", "int8"}
    for a in engines:
        assert a["engine_build"] == "device" and not a["engine_built_here"] and a["engine"].startswith("engines/")
        record = json.loads((bundle / "engines" / f"{a['name']}.json").read_text())
        assert record["built"] == "device" and record["strongly_typed"]
    assert (bundle / "build_engine.sh").stat().st_mode & 0o111
    report = (project / "build" / "jetson" / "report.md").read_text()
    assert "engine not built on this host" in report
    out = subprocess.run([sys.executable, str(bundle / "run_engine.py"), "--backend", "onnxruntime", "--provider", "cpu",
                          "great film", "awful hotel"], capture_output=True, text=True, check=True)
    assert [json.loads(l)["text"] for l in out.stdout.splitlines()] == ["great film", "awful hotel"]


def test_gpu_server_bundle_serves_http(built):
    project = built[0]
    bundle = project / "build" / "gpu_server" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert {a["name"]: a["format"] for a in manifest["artifacts"]} == {"fp16": "onnx", "engine_fp16": "tensorrt", "nf4": "torch"}
    proc = subprocess.Popen([sys.executable, str(bundle / "serve.py"), "--port", "0", "--providers", "cpu", "--threads", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        port = None
        deadline = time.time() + 120
        lines = []
        while time.time() < deadline and port is None:
            line = proc.stdout.readline()
            lines.append(line)
            for word in line.replace("/", " ").split():
                if word.startswith("127.0.0.1:") and word.split(":")[1].isdigit():
                    port = int(word.split(":")[1])
        assert port, "".join(lines)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=json.dumps({"texts": ["good", "bad"]}).encode(),
                                     headers={"Content-Type": "application/json"})
        body = json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert len(body["predictions"]) == 2
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_all_is_a_noop_the_second_time(built, one_layer_model, tiny_data):
    again = scons(built[0], "-j2", "target=all", f"model={one_layer_model}", f"data={tiny_data}")
    assert stages_run(again) == []
