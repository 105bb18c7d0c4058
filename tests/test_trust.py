"""Nothing corrupt, mislabelled or half-trained ships with a manifest that vouches for it (build side).

One test per class of silent failure: a corrupt cache entry, a stage output
changed after it was built, a config that disagrees with its weights, an
archive that packs what running the bundle left behind, a teacher that
learned nothing, and stage directories keyed by path instead of content.
(Dataset labels: tests/test_trust_data.py; runtime limits: tests/test_trust_runtime.py;
out-of-range parameters: tests/test_params.py.)
"""
from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from conftest import make_project, scons, stages_run
from recipes.errors import ModelError
from tiny_model import demo_rows, make_checkpoint, write_csv

TAR = "tiny-tiny-bert.tar.gz"


def warnings_of(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("edgesmith: warning:")]


@pytest.fixture(scope="module")
def built(tiny_built):
    project, args, _, cache = tiny_built
    return project, args, cache


# -- 1. cache entries and stage outputs are verified before use ---------------------

@pytest.mark.slow
def test_corrupt_cache_entry_is_evicted_reported_and_rebuilt(built, tmp_path):
    project, args, cache = built
    model = next((project / "build" / "stages").glob("onnx-int8-dynamic-*/model.onnx"))
    entry = next(p for p in cache.rglob("*") if p.is_file() and p.stat().st_size == model.stat().st_size
                 and p.read_bytes() == model.read_bytes())
    corrupt = tmp_path / "cache"
    shutil.copytree(cache, corrupt)
    bad = corrupt / entry.relative_to(cache)
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0x01
    bad.write_bytes(bytes(data))

    second = make_project(tmp_path / "second")
    proc = scons(second, *args, f"cache={corrupt}")
    lines = warnings_of(proc)
    # The model's bytes are cached twice (the quantize stage's output and its copy in the bundle);
    # whichever entry was flipped, exactly its stage runs again.
    assert len(lines) == 1 and "is not used" in lines[0] and ".onnx" in lines[0], proc.stderr
    assert [s for s, _ in stages_run(proc)] in (["quantize"], ["bundle"])
    assert not bad.exists() or bad.read_bytes() != bytes(data)  # evicted (and re-pushed intact)
    assert (second / "dist" / TAR).read_bytes() == (project / "dist" / TAR).read_bytes()


@pytest.mark.slow
def test_stage_output_changed_after_the_build_is_rebuilt_not_shipped(built, tmp_path):
    _, args, _ = built
    project = tmp_path / "p"
    shutil.copytree(built[0], project, symlinks=True)
    weights = next((project / "build" / "stages").glob("teacher-*/model.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0x10
    weights.write_bytes(bytes(data))
    proc = scons(project, *args)
    lines = warnings_of(proc)
    assert len(lines) == 1 and "model.safetensors" in lines[0] and "changed since the finetune stage wrote it" in lines[0]
    assert "finetune" in [s for s, _ in stages_run(proc)]
    assert (project / "dist" / TAR).read_bytes() == (built[0] / "dist" / TAR).read_bytes()


def test_unwritable_cache_is_a_warning(built, tmp_path):
    project, args, _ = built
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    for extra in ((), ("--cache-readonly",)):
        proc = scons(project, *args, f"cache={blocker / 'cache'}", *extra)
        assert "Traceback" not in proc.stderr and stages_run(proc) == []
        if not extra:
            assert len(warnings_of(proc)) == 1 and "cannot write to it" in warnings_of(proc)[0]


# -- 2. a config that disagrees with its weights ------------------------------------

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_rows) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("mismatch") / "m", [r["text"] for r in tiny_rows])


@pytest.mark.parametrize("key, value, fragment", [
    ("num_hidden_layers", 4, "no tensor bert.encoder.layer.2."),
    ("num_hidden_layers", 1, "tensor encoder.layer.1."),
    ("hidden_size", 64, "but the config needs ["),
    ("max_position_embeddings", 512, "bert.embeddings.position_embeddings.weight has shape"),
    ("vocab_size", 100, "vocab_size = 100, but"),
])
def test_config_that_disagrees_with_its_weights_is_one_line(checkpoint, tmp_path, key, value, fragment):
    from recipes.models.hf import load_classifier

    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    config = json.loads((bad / "config.json").read_text())
    config[key] = value
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError) as e:
        load_classifier(bad, new_head=True, num_labels=2)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_only_a_missing_head_is_initialised(checkpoint):
    from recipes.models.hf import load_classifier

    assert load_classifier(checkpoint, new_head=True, num_labels=2) is not None
    with pytest.raises(ModelError, match="no tensor classifier"):
        load_classifier(checkpoint, num_labels=2)


# -- 3. the archive holds exactly the manifest's files ------------------------------

def test_archive_packs_only_the_manifest_files(tmp_path):
    from recipes.package.archive import ArchiveArgs, build

    bundle = tmp_path / "bundle"
    (bundle / "runtime" / "__pycache__").mkdir(parents=True)
    (bundle / "run.py").write_text("print('hi')\n")
    (bundle / "runtime" / "__init__.py").write_text("")
    (bundle / "manifest.json").write_text(json.dumps({"files": [{"path": "run.py"}, {"path": "runtime/__init__.py"}]}))
    build(ArchiveArgs(bundle, tmp_path / "a.tar.gz"))
    (bundle / "runtime" / "__pycache__" / "__init__.cpython-311.pyc").write_bytes(b"left by running the bundle")
    build(ArchiveArgs(bundle, tmp_path / "b.tar.gz"))
    with tarfile.open(tmp_path / "b.tar.gz") as tar:
        assert tar.getnames() == ["manifest.json", "run.py", "runtime/__init__.py"]
    assert (tmp_path / "a.tar.gz").read_bytes() == (tmp_path / "b.tar.gz").read_bytes()


# -- 4. a teacher that learned nothing ----------------------------------------------

def test_teacher_gate_and_majority_warning(tmp_path):
    from recipes.measure.report import teacher_checks

    metrics = {"accuracy": 0.5, "majority_accuracy": 0.5, "examples": 10}
    failures, warnings = teacher_checks({"min_accuracy": 0.8}, metrics)
    assert failures == ["teacher: accuracy 0.500 < min_teacher_accuracy 0.8"]
    assert len(warnings) == 1 and "no better than always answering the most frequent label" in warnings[0]
    assert teacher_checks({"min_accuracy": 0.4}, {**metrics, "accuracy": 0.9}) == ([], [])


# -- 5. the opset that is recorded is the one used ---------------------------------

def test_exported_opset_is_the_profiles(tmp_path, tiny_rows):
    import onnx

    from recipes.formats.onnx_export import ExportParams, export_onnx

    checkpoint = make_checkpoint(tmp_path / "m", [r["text"] for r in tiny_rows], with_head=True)
    names = ("input_ids", "attention_mask", "token_type_ids")
    report = export_onnx(checkpoint, tmp_path / "m.onnx", tmp_path / "export.json", ExportParams(opset=20), names, 4, 64)
    used = [o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import if o.domain in ("", "ai.onnx")]
    assert used == [20] and report["opset"] == 20


# -- 7. stage directories keyed by content; clean removes what the last build made ----

@pytest.mark.slow
def test_switching_data_back_and_forth_reuses_stages(built, tmp_path):
    _, args, _ = built
    project = tmp_path / "p"
    shutil.copytree(built[0], project, symlinks=True)
    other = write_csv(tmp_path / "other.csv", demo_rows(30))
    with_other = [a if not a.startswith("data=") else f"data={other}" for a in args]
    assert "data" in [s for s, _ in stages_run(scons(project, "-j2", *with_other))]
    again = scons(project, "-j2", *args)
    # Every stage directory of A is reused as it is; only the target's own products
    # (build/tiny/: latency, report, stubs, bundle; dist/) are made again from them.
    rerun = [(s, t) for s, t in stages_run(again) if t.startswith("build/stages/")]
    assert rerun == [], again.stdout
    assert {s for s, _ in stages_run(again)} <= {"latency", "memory", "report", "stub", "bundle", "archive"}


@pytest.mark.slow
def test_clean_removes_what_the_last_build_made(built, tmp_path):
    _, args, _ = built
    project = tmp_path / "p"
    shutil.copytree(built[0], project, symlinks=True)
    scons(project, "-c", "target=tiny")  # no model= or data=: the last build's
    assert not (project / "dist" / TAR).exists()
    assert not list((project / "build" / "stages").glob("teacher-*/model.safetensors"))
