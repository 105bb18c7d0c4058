"""Shared fixtures: a tiny checkpoint, a tiny dataset, and throwaway project copies."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tiny_model import REPO, demo_rows, make_checkpoint, write_csv

PROJECT_PARTS = ("SConstruct", "recipes", "targets", "templates", "runtime", "data")
SCONS = str(Path(sys.executable).with_name("scons"))
STAGE_LINE = re.compile(r"^\[(\w+)\] (\S+)$", re.M)


@pytest.fixture(scope="session")
def tiny_rows():
    return demo_rows(40)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_rows) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("models") / "tiny-bert", [r["text"] for r in tiny_rows])


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_rows) -> Path:
    return write_csv(tmp_path_factory.mktemp("data") / "tiny.csv", tiny_rows)


def make_project(dst: Path) -> Path:
    """A copy of the build system (no build outputs) with the tiny test profile."""
    dst.mkdir(parents=True, exist_ok=True)
    for part in PROJECT_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / part)
    for name in ("tiny.toml", "tiny_compress.toml"):
        shutil.copy2(REPO / "tests" / "fixtures" / name, dst / "targets" / name)
    return dst


def scons(project: Path, *args: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1")
    proc = subprocess.run([SCONS, "-Q", *args], cwd=project, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"scons {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def stages_run(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(stage, first target) for every stage SCons executed."""
    return STAGE_LINE.findall(proc.stdout)


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project")


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory, tiny_model, tiny_data):
    """One full `target=tiny` build, shared by the modules that only read it or clone it.

    Built with a fresh cache=DIR, so it also fills a cache for the tests that need one.
    Returns (project, args, first build's CompletedProcess, cache dir)."""
    project = make_project(tmp_path_factory.mktemp("built") / "project")
    cache = tmp_path_factory.mktemp("cache") / "cache"
    args = ("target=tiny", f"model={tiny_model}", f"data={tiny_data}")
    first = scons(project, *args, f"cache={cache}")
    return project, args, first, cache


@pytest.fixture(scope="session")
def all_targets_built(tmp_path_factory, tiny_model, tiny_data):
    """`scons -j2 target=all` over the shipped device profiles on the tiny model, once per session
    (test_targets_build and test_openvino read it). Returns (project, CompletedProcess)."""
    project = make_project(tmp_path_factory.mktemp("all") / "project")
    for extra in ("tiny.toml", "tiny_compress.toml"):  # target=all means the device profiles here
        (project / "targets" / extra).unlink()
    proc = scons(project, "-j2", "target=all", f"model={tiny_model}", f"data={tiny_data}", timeout=1200)
    return project, proc
