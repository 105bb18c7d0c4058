"""Shared fixtures: a tiny checkpoint, a tiny dataset, throwaway project copies, and the run's big builds."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

import pytest
from filelock import FileLock

from tiny_model import REPO, demo_rows, make_checkpoint, make_sentence_transformers, write_csv

# Two xdist workers, each running builds with -j2, put up to four busy processes on a two-core machine; an
# OpenMP pool that spins while it waits then burns the core another process needs. Passive waiting changes
# no result, only how an idle thread waits (stage processes inherit it through SCons's environment).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PROJECT_PARTS = ("SConstruct", "recipes", "targets", "templates", "runtime", "data")
SCONS = str(Path(sys.executable).with_name("scons"))
STAGE_LINE = re.compile(r"^\[(\w+)\] (\S+)$", re.M)
RETRIEVED_LINE = re.compile(r"^Retrieved `([^']+)' from cache$", re.M)
NAMES = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="session")
def tiny_rows():
    return demo_rows(40)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_rows) -> Path:
    """One checkpoint for the run (every worker's builds name the same model= path, so they can share stages)."""
    return once_per_run(tmp_path_factory, "tiny_model",
                        lambda root: make_checkpoint(root / "tiny-bert", [r["text"] for r in tiny_rows]))


@pytest.fixture(scope="session")
def one_layer_model(tmp_path_factory, tiny_rows) -> Path:
    """The tiny checkpoint with one encoder layer, for the end-to-end builds whose cost grows with depth and whose
    checks do not (every shipped profile; QAT into three formats): ExecuTorch's lowering alone took minutes.
    Saved as a sentence-transformers model, as the packaged MiniLM is: the classification profiles say
    task = "classification" and fine-tune it, targets/cpu_embedding.toml builds its sentence vectors."""
    return once_per_run(tmp_path_factory, "one_layer_model",
                        lambda root: make_sentence_transformers(root / "tiny-bert", [r["text"] for r in tiny_rows], layers=1))


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_rows) -> Path:
    return once_per_run(tmp_path_factory, "tiny_data", lambda root: write_csv(root / "tiny.csv", tiny_rows))


@pytest.fixture(scope="session")
def exported_classifier(tmp_path_factory, tiny_rows):
    """copy_of(seed, dst, fused=False): a tiny BERT classifier with its head (dst/m) and its verified fp32 ONNX
    (dst/fp32.onnx, dst/export.json; with fused=True also ORT's fused graph, dst/fused.onnx and dst/fuse.json).

    The export is the slow part (seconds per model), so each seed is made and exported once per session and
    copied into `dst` for the module that asks, which then writes its own files beside the copy."""
    made: dict[int, Path] = {}

    def copy_of(seed: int, dst: Path, *, fused: bool = False) -> Path:
        from recipes.formats.onnx_export import ExportParams, export_onnx

        if seed not in made:
            root = tmp_path_factory.mktemp(f"classifier-seed{seed}")
            model = make_checkpoint(root / "m", [r["text"] for r in tiny_rows], with_head=True, seed=seed)
            export_onnx(model, root / "fp32.onnx", root / "export.json", ExportParams(), NAMES, 64, 64)
            made[seed] = root
        root = made[seed]
        if fused and not (root / "fused.onnx").exists():
            from recipes.formats.fuse_onnx import fuse

            vocab = json.loads((root / "m" / "config.json").read_text())["vocab_size"]
            fuse(root / "fp32.onnx", root / "fused.onnx", root / "fuse.json", NAMES, vocab, 1e-4, 64)
        shutil.copytree(root, dst, dirs_exist_ok=True)
        return dst

    return copy_of


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


def scons(project: Path, *args: str, check: bool = True, timeout: int = 600,
          env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS="ignore", TQDM_DISABLE="1", **(env or {}))
    proc = subprocess.run([SCONS, "-Q", *args], cwd=project, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"scons {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def stages_run(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(stage, first target) for every stage SCons executed (a stage taken from cache=DIR is not listed)."""
    return STAGE_LINE.findall(proc.stdout)


def stage_dirs_retrieved(proc: subprocess.CompletedProcess) -> list[str]:
    """The build/stages/ directories whose files SCons took from cache=DIR instead of running their stage."""
    return sorted({Path(path).parent.name for path in RETRIEVED_LINE.findall(proc.stdout)
                   if path.startswith("build/stages/")})


@pytest.fixture
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project")


# -- the session's big builds ---------------------------------------------------------------------
#
# Three builds are read by many tests: target=tiny (tiny_built), the compression chains (compress_built)
# and target=all (all_targets_built). `make test` runs the suite on two pytest-xdist workers, one module
# per worker at a time (--dist loadfile); each of these builds is made once for the whole run, by the
# first worker that asks, under a file lock that the other waits on, and read by both. The modules that
# read one run first (pytest_collection_modifyitems), so that the long builds start while the short,
# independent modules fill the other worker. Run without xdist, each build is made in the session.

SHARED_FIRST = (  # modules whose builds are the run's longest chains, in the order the two workers take them
    "test_build.py",             # tiny_built
    "test_targets_build.py",     # all_targets_built
    "test_compression_build.py",  # compress_built (waits for tiny_built: it reads its cache)
    "test_openvino.py",          # all_targets_built
    "test_qat_build.py",         # its own QAT build
    "test_search.py",            # four search builds over the tiny build's cache
    "test_ray.py",               # a Ray cluster and a build on it, compared with tiny_built's
    "test_embedding.py",         # its own embedding build
)


def pytest_collection_modifyitems(session, config, items):
    """SHARED_FIRST modules first, each in one piece; the rest keep their order. xdist (--no-loadscope-reorder)
    hands the modules out in this order."""
    def rank(item) -> int:
        name = Path(item.nodeid.split("::")[0]).name
        return SHARED_FIRST.index(name) if name in SHARED_FIRST else len(SHARED_FIRST)
    items.sort(key=rank)


def _encode(value: Any) -> Any:
    if isinstance(value, Path):
        return {"path": str(value)}
    if isinstance(value, subprocess.CompletedProcess):
        return {"proc": [list(value.args), value.returncode, value.stdout, value.stderr]}
    if isinstance(value, (tuple, list)):
        return {"tuple": [_encode(v) for v in value]}
    return {"value": value}


def _decode(blob: Any) -> Any:
    if "path" in blob:
        return Path(blob["path"])
    if "proc" in blob:
        return subprocess.CompletedProcess(*blob["proc"])
    if "tuple" in blob:
        return tuple(_decode(v) for v in blob["tuple"])
    return blob["value"]


def once_per_run(tmp_path_factory, name: str, produce: Callable[[Path], Any]) -> Any:
    """produce(an empty directory), made once for the whole run: under xdist the first worker to ask makes it
    while the others wait on a lock, then all read its record (paths and finished processes, as JSON). A
    failure is recorded too, so the other workers fail at once with the same message instead of repeating it."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return produce(tmp_path_factory.mktemp(name))
    shared = tmp_path_factory.getbasetemp().parent / "shared"
    shared.mkdir(exist_ok=True)
    record = shared / f"{name}.json"
    with FileLock(str(record) + ".lock"):
        if not record.exists():
            try:
                blob = {"ok": _encode(produce(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=shared))))}
            except Exception as e:
                blob = {"failed": f"{type(e).__name__}: {e}"}
            record.write_text(json.dumps(blob))
        blob = json.loads(record.read_text())
    if "failed" in blob:
        raise AssertionError(f"the shared {name} fixture failed (in another worker or here): {blob['failed']}")
    return _decode(blob["ok"])


@pytest.fixture(scope="session")
def tiny_built(tmp_path_factory, tiny_model, tiny_data):
    """One full `target=tiny` build (-j2), shared by the modules that only read it or clone it.

    Built with a fresh cache=DIR, so it also fills a cache: builds that share the tiny teacher's stages
    read it (with --cache-readonly, so it stays exactly this build's), and test_trust corrupts a copy.
    Returns (project, args, first build's CompletedProcess, cache dir)."""
    def produce(root: Path):
        project, cache = make_project(root / "project"), root / "cache"
        args = ("target=tiny", f"model={tiny_model}", f"data={tiny_data}")
        return project, args, scons(project, "-j2", *args, f"cache={cache}", timeout=900), cache
    return once_per_run(tmp_path_factory, "tiny_built", produce)


@pytest.fixture(scope="session")
def compress_built(tmp_path_factory, tiny_model, tiny_data, tiny_built):
    """`scons -j2 target=tiny_compress` (tests/fixtures/tiny_compress.toml) on the tiny model; the teacher's
    stages, the same nodes as tiny_built's, are taken from its cache. Returns (project, args, CompletedProcess)."""
    def produce(root: Path):
        project = make_project(root / "project")
        args = ("target=tiny_compress", f"model={tiny_model}", f"data={tiny_data}")
        # About forty stages, each in its own process: on a busy two-core machine this build outgrew ten minutes.
        return project, args, scons(project, "-j2", *args, f"cache={tiny_built[3]}", "--cache-readonly", timeout=1800)
    return once_per_run(tmp_path_factory, "compress_built", produce)


@pytest.fixture(scope="session")
def all_targets_built(tmp_path_factory, one_layer_model, tiny_data):
    """`scons -j2 target=all` over the shipped device profiles on the one-layer tiny model, once per run
    (test_targets_build and test_openvino read it). Returns (project, CompletedProcess)."""
    def produce(root: Path):
        project = make_project(root / "project")
        # target=all means the classification device profiles here. The embedding target's build is
        # tests/test_embedding.py's (its own tiny profile; there, `scons -n target=cpu_embedding` checks the
        # shipped one): the whole suite must fit CI's 15 minutes on two cores.
        for extra in ("tiny.toml", "tiny_compress.toml", "cpu_embedding.toml"):
            (project / "targets" / extra).unlink()
        return project, scons(project, "-j2", "target=all", f"model={one_layer_model}", f"data={tiny_data}", timeout=1800)
    return once_per_run(tmp_path_factory, "all_targets_built", produce)
