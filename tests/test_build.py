"""Real `scons` runs on a tiny model: the graph must be incremental, deterministic,
cached and interrupt-safe. Each test works on its own copy of a built project."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SCONS, make_project, scons, stages_run
from tiny_model import make_checkpoint

pytestmark = pytest.mark.slow
HEAVY = ("torch", "transformers", "onnx", "onnxruntime", "tensorrt", "executorch", "bitsandbytes", "ray")


@pytest.fixture(scope="module")
def built(tiny_built):
    project, args, first, _ = tiny_built
    return project, args, first


def clone(built, dst: Path) -> Path:
    project = built[0]
    shutil.copytree(project, dst, symlinks=True)
    return dst


def names(proc) -> list[str]:
    return sorted(stage for stage, _ in stages_run(proc))


def test_first_build_runs_every_stage_once(built):
    _, _, first = built
    ran = names(first)
    assert ran == sorted(["data", "finetune", "export", "quantize", "quantize", "evaluate", "evaluate", "evaluate",
                          "evaluate", "latency", "memory", "ops", "report", "stub", "bundle", "archive"])


def test_outputs_bundle_report_and_stub_work(built):
    project, _, _ = built
    bundle = project / "build" / "tiny" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    listed = {f["path"] for f in manifest["files"]}
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    assert [a["name"] for a in manifest["artifacts"]] == ["fp32", "int8_dynamic", "int8_static"]
    assert manifest["model"]["labels"] == ["negative", "positive"]
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    report = json.loads((project / "build" / "tiny" / "report.json").read_text())
    rows = {r["name"]: r for r in report["artifacts"]}
    assert set(rows) == {"teacher", "fp32", "int8_dynamic", "int8_static"}
    for row in rows.values():
        assert 0.0 <= row["accuracy"] <= 1.0 and set(row["latency_ms"]) == {"1", "4"}
    assert rows["fp32"]["agreement"] == 1.0 and rows["fp32"]["max_abs_logit_diff"] < 1e-4
    assert rows["int8_dynamic"]["size_bytes"] < rows["fp32"]["size_bytes"]
    assert "| int8_static |" in (project / "build" / "tiny" / "report.md").read_text()

    tarball = project / "dist" / "tiny-tiny-bert.tar.gz"
    out = subprocess.run([sys.executable, str(bundle / "run.py"), "--bundle", str(tarball), "--threads", "1",
                          "great film", "awful hotel"], capture_output=True, text=True, check=True)
    preds = [json.loads(line) for line in out.stdout.splitlines()]
    assert [p["text"] for p in preds] == ["great film", "awful hotel"]
    assert all(p["label"] in ("negative", "positive") and abs(sum(p["scores"].values()) - 1) < 1e-5 for p in preds)


def test_second_run_does_nothing(built, tmp_path):
    project = clone(built, tmp_path / "p")
    again = scons(project, *built[1])
    assert stages_run(again) == []


def test_param_change_rebuilds_only_that_stage_and_dependents(built, tmp_path):
    project = clone(built, tmp_path / "p")
    profile = project / "targets" / "tiny.toml"
    text = profile.read_text()
    profile.write_text(text.replace("calibration_samples = 16", "calibration_samples = 12"))
    proc = scons(project, *built[1])
    ran = stages_run(proc)
    assert names(proc) == sorted(["quantize", "evaluate", "latency", "memory", "report", "stub", "bundle", "archive"])
    assert any("onnx-int8-static" in target for stage, target in ran if stage == "quantize")


def test_new_checkpoint_weights_rebuild_everything_downstream(built, tmp_path, tiny_rows):
    project = clone(built, tmp_path / "p")
    # Same path, different weights: the checkpoint's content is its identity.
    model_arg = next(a for a in built[1] if a.startswith("model="))
    model = tmp_path / "model"
    shutil.copytree(model_arg.split("=", 1)[1], model)
    make_checkpoint(tmp_path / "reseeded", [r["text"] for r in tiny_rows], seed=1)
    shutil.copy2(tmp_path / "reseeded" / "model.safetensors", model / "model.safetensors")
    args = [a if not a.startswith("model=") else f"model={model}" for a in built[1]]
    proc = scons(project, "-j2", *args)
    # The stub depends only on labels and profile, so it is not rebuilt.
    assert names(proc) == sorted(["finetune", "export", "quantize", "quantize", "evaluate", "evaluate", "evaluate",
                                  "evaluate", "latency", "memory", "ops", "report", "bundle", "archive"])


def test_identical_bytes_stop_the_cascade(built, tmp_path):
    project = clone(built, tmp_path / "p")
    data_arg = next(a for a in built[1] if a.startswith("data="))
    rows = Path(data_arg.split("=", 1)[1]).read_text(encoding="utf-8").splitlines()
    shuffled = tmp_path / "data.csv"
    # Same examples in another order: the data stage reruns, writes the same
    # canonical splits, and nothing after it runs.
    shuffled.write_text("\n".join([rows[0]] + rows[1:][::-1]) + "\n", encoding="utf-8")
    args = [a if not a.startswith("data=") else f"data={shuffled}" for a in built[1]]
    proc = scons(project, *args)
    assert names(proc) == ["data"]


def test_editing_a_recipe_rebuilds_its_stage(built, tmp_path):
    project = clone(built, tmp_path / "p")
    with open(project / "recipes" / "formats" / "quantize_onnx.py", "a") as fh:
        fh.write("\n# an edit that changes no behaviour\n")
    proc = scons(project, *built[1])
    # Both quantized models are rebuilt, come out byte-identical, and stop there.
    assert names(proc) == ["quantize", "quantize"]


def test_editing_profile_validation_rebuilds_nothing(built, tmp_path):
    """A stage's signature is its resolved parameters, not the code that loaded and checked them."""
    project = clone(built, tmp_path / "p")
    for rel, old, new in (("recipes/wiring/profile.py", "is used twice; artifact names must be unique",
                           "appears twice; give every artifact its own name"),
                          ("recipes/wiring/schema.py", ": expected an integer", ": expected a whole number")):
        path = project / rel
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new), encoding="utf-8")
    proc = scons(project, *built[1])
    assert names(proc) == []


def start(project: Path, args) -> subprocess.Popen:
    """A build in its own process group, its output (progress bars included) on one pipe."""
    return subprocess.Popen([SCONS, "-Q", *args], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ, PYTHONWARNINGS="ignore", PYTHONUNBUFFERED="1"))


def read_until(proc: subprocess.Popen, pattern: bytes) -> tuple[str, re.Match]:
    """The build's output up to the first match of `pattern` (read as it comes: progress bars end no line)."""
    out = b""
    while not (match := re.search(pattern, out, re.M)):
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, f"the build ended before {pattern!r}:\n{out.decode(errors='replace')[-3000:]}"
        out += chunk
    return out.decode(errors="replace"), match


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()


def test_killed_builds_leave_nothing_half_done_and_resume_where_they_stopped(built, tmp_path):
    """SIGKILL twice, then finish. Inside the fine-tuning loop: nothing may look complete, and the next build must
    train again. Right after fine-tuning finished: SCons saved nothing (.sconsign), so the fine-tuning must be
    recognised by its stamp, not redone."""
    project = clone(built, tmp_path / "p")
    profile = project / "targets" / "tiny.toml"
    tiny = profile.read_text()
    profile.write_text(tiny.replace("epochs = 2", "epochs = 40"))
    # 1. Killed inside the training loop: its progress bar is drawn as the loop starts.
    proc = start(project, built[1])
    _, match = read_until(proc, rb"^\[finetune\] (\S+)$")
    teacher_dir = (project / match.group(1).decode()).parent
    read_until(proc, rb"finetune: +0%")
    time.sleep(0.5)
    kill(proc)
    # Nothing that looks complete: the fine-tuned weights were never renamed into place, and SCons would train again.
    assert not (teacher_dir / "model.safetensors").exists()
    assert f"[finetune] {match.group(1).decode()}" in scons(project, "-n", *built[1]).stdout
    # 2. Another fine-tuning (3 epochs, so the test does not wait for 40), killed as soon as it has finished.
    profile.write_text(tiny.replace("epochs = 2", "epochs = 3"))
    proc = start(project, built[1])
    _, match = read_until(proc, rb"^\[finetune\] (\S+)$")
    weights = (project / match.group(1).decode()).parent / "model.safetensors"
    out, _ = read_until(proc, rb"^\[export\] ")
    kill(proc)
    assert "up to date" not in out, out
    assert weights.exists()
    finished_at = weights.stat().st_mtime_ns
    # 3. The build finishes without fine-tuning a third time. The export either runs again (killed mid-way) or, if
    # the tiny export finished before the kill landed, is recognised by its stamp; never half-written and trusted.
    again = scons(project, "-j2", *built[1])
    assert re.search(r"^\[finetune\] \S+: up to date \(finished by an earlier build", again.stdout, re.M), again.stdout
    assert weights.stat().st_mtime_ns == finished_at, "fine-tuning ran again"
    assert "export" in names(again) or re.search(r"^\[export\] \S+: up to date \(finished by an earlier build",
                                                 again.stdout, re.M), again.stdout
    assert not list((project / "build" / "stages").glob(".*.tmp")), "stale temporaries left behind"
    assert stages_run(scons(project, *built[1])) == []
    # A stamp never vouches for outputs changed since: touching the weights reruns fine-tuning.
    subprocess.run(["touch", str(weights)], check=True)
    (project / ".sconsign.dblite").unlink()
    rebuilt = scons(project, "-j2", *built[1])
    assert "finetune" in names(rebuilt)
    assert not re.search(r"^\[finetune\] \S+: up to date", rebuilt.stdout, re.M)


def test_clean_builds_are_byte_identical_and_cache_restores(built, tmp_path):
    project = make_project(tmp_path / "second")
    cache = tmp_path / "cache"
    scons(project, "-j2", *built[1], f"cache={cache}")
    base_tar = built[0] / "dist" / "tiny-tiny-bert.tar.gz"
    tar = project / "dist" / "tiny-tiny-bert.tar.gz"
    assert tar.read_bytes() == base_tar.read_bytes()
    scons(project, "-c", *built[1])
    assert not tar.exists()
    restored = scons(project, "-j2", *built[1], f"cache={cache}")
    assert stages_run(restored) == []
    assert tar.read_bytes() == base_tar.read_bytes()


def test_a_second_clone_with_the_teams_cache_builds_nothing_and_gets_the_same_bytes(tiny_built, tmp_path):
    """cache=DIR on a shared filesystem (README: Sharing a build cache): a teammate's fresh clone, in another
    directory, takes every stage from the cache the first build filled and runs none."""
    first, args, _, cache = tiny_built
    second = make_project(tmp_path / "teammate")
    proc = scons(second, "-j2", *args, f"cache={cache}", "--cache-readonly")
    assert stages_run(proc) == [], proc.stdout
    tarball = Path("dist") / "tiny-tiny-bert.tar.gz"
    assert (second / tarball).read_bytes() == (first / tarball).read_bytes()


def test_stages_started_without_the_forkserver_give_the_same_bytes(built, tmp_path):
    """EDGESMITH_FORKSERVER=0 starts every stage as a plain `python -m` child, where the session's build forked
    them from the preloaded stage server (recipes/wiring/stage_process.py). Building the static int8 model that
    way (data, fine-tuning, export, calibration and quantization) gives the very same bytes."""
    base = built[0]
    static = next((base / "build" / "stages").glob("onnx-int8-static-*/model.onnx")).relative_to(base)
    teacher = next((base / "build" / "stages").glob("teacher-*/model.safetensors")).relative_to(base)
    project = make_project(tmp_path / "plain")
    proc = scons(project, "-j2", *built[1], static.as_posix(), env={"EDGESMITH_FORKSERVER": "0"})
    assert {"finetune", "export", "quantize"} <= {s for s, _ in stages_run(proc)}
    for rel in (static, teacher):
        assert (project / rel).read_bytes() == (base / rel).read_bytes(), rel


def test_reading_the_build_files_imports_nothing_heavy(built):
    project, args, _ = built
    proc = subprocess.run([sys.executable, "-X", "importtime", SCONS, "-n", "-Q", *args], cwd=project,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = set(re.findall(r"\|\s+([\w.]+)$", proc.stderr, re.M))
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_manifest_layout_matches_golden(built):
    from golden import check

    manifest = json.loads((built[0] / "build" / "tiny" / "bundle" / "manifest.json").read_text())
    layout = {
        "keys": sorted(manifest),
        "files": [f["path"] for f in manifest["files"]],
        "artifacts": [{k: v for k, v in a.items() if k not in ("sha256", "size")} for a in manifest["artifacts"]],
        "inputs": manifest["inputs"],
        "outputs": manifest["outputs"],
        "tokenizer": manifest["tokenizer"],
        "toolchain": sorted(manifest["toolchain"]),
        "default_artifact": manifest["default_artifact"],
    }
    check("tiny_manifest_layout.json", json.dumps(layout, indent=2, sort_keys=True) + "\n")
