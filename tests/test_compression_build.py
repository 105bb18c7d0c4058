"""Real `scons` runs of the compression chains on a tiny model: distil, prune
(four ways, two with recovery), quantize each, and report them all."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from conftest import scons, stage_dirs_retrieved, stages_run

pytestmark = pytest.mark.slow


# The teacher's stages are tiny.toml's (same data, fine-tuning, export and evaluation): the same nodes as the
# session's target=tiny build, so compress_built takes them from its cache. Each one's stage directory, by prefix.
TEACHER_STAGES = {"data": "data", "teacher": "finetune", "onnx-fp32": "export", "ops": "ops", "eval": "evaluate"}


@pytest.fixture(scope="module")
def built(compress_built):
    return compress_built


def test_every_shared_stage_runs_once(built):
    retrieved = stage_dirs_retrieved(built[2])
    assert sorted(d.rsplit("-", 1)[0] for d in retrieved) == sorted(TEACHER_STAGES)
    # Run here or taken from the cache, every node is built once.
    counts = Counter(stage for stage, _ in stages_run(built[2])) + Counter(TEACHER_STAGES[d.rsplit("-", 1)[0]]
                                                                          for d in retrieved)
    assert counts == Counter({
        "data": 1, "finetune": 1,
        "teacher_logits": 1,       # one table serves the student, movement pruning and the recoveries
        "distill": 3,              # the student, and the FFN- and movement-pruned models' recoveries
        "prune": 4, "export": 6, "fuse": 1, "quantize": 5,
        "ops": 6,                  # MACs per model (teacher and five derived), for the report's % of peak
        "evaluate": 7,             # the teacher and six artifacts
        "latency": 1, "memory": 1, "report": 1, "stub": 1, "bundle": 1, "archive": 1,
    })


def test_report_covers_every_variant_with_a_plot(built):
    project = built[0]
    out = project / "build" / "tiny_compress"
    report = json.loads((out / "report.json").read_text())
    rows = {r["name"]: r for r in report["artifacts"]}
    assert set(rows) == {"teacher", "student_torch", "student_int8", "ffn_int8", "student_heads_int4", "sparse_fp16",
                         "moved_blocks_int8"}
    assert rows["ffn_int8"]["lineage"] == "teacher > prune ffn > recover"
    assert rows["moved_blocks_int8"]["lineage"] == "teacher > prune movement > recover"
    assert rows["student_heads_int4"]["lineage"] == "teacher > distill > prune heads"
    for row in rows.values():
        for key in ("accuracy", "agreement", "max_abs_logit_diff", "size_bytes", "compressed_bytes"):
            assert row[key] is not None
        assert set(row["latency_ms"]) == {"1", "4"} and set(row["speedup"]) == {"1", "4"}
    assert report["size_reference"] == "the teacher's fp32 checkpoint"
    png = (out / "report.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "student_heads_int4" in html and "teacher &gt; distill" in html


def test_models_have_the_shapes_their_recipes_promise(built):
    project = built[0]
    stages = project / "build" / "stages"
    configs = {p.parent.name.split("-")[0] + "-" + p.parent.name.split("-")[1]: json.loads(p.read_text())
               for p in stages.glob("*/config.json")}
    student = next(json.loads(p.read_text()) for p in stages.glob("student-*/config.json"))
    assert student["num_hidden_layers"] == 1
    heads = next(json.loads(p.read_text()) for p in stages.glob("prune-heads-*/config.json"))
    assert heads["edgesmith_attention_heads"] == [1] and heads["num_hidden_layers"] == 1
    ffn = next(json.loads(p.read_text()) for p in stages.glob("recover-*/config.json"))
    assert ffn["intermediate_size"] == 32
    sparse = next(json.loads(p.read_text()) for p in stages.glob("prune-magnitude-*/pruning.json"))
    assert abs(sparse["encoder_linear_sparsity"] - 0.5) < 0.01
    moved = next(json.loads(p.read_text()) for p in stages.glob("prune-movement-*/pruning.json"))
    assert moved["speeds_up_dense_kernels"] and moved["intermediate_size_after"] == 32 and moved["heads_per_layer"] == [1, 1]
    assert configs


def test_bundle_ships_only_the_chosen_artifacts_and_runs(built):
    project = built[0]
    bundle = project / "build" / "tiny_compress" / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["student_int8", "student_heads_int4"]
    assert manifest["artifacts"][1]["lineage"] == "teacher > distill > prune heads"
    assert sorted(p.name for p in (bundle / "models").iterdir()) == ["student_heads_int4.onnx", "student_int8.onnx"]
    for artifact in ("student_int8", "student_heads_int4"):
        out = subprocess.run([sys.executable, str(bundle / "run.py"), "--artifact", artifact, "--threads", "1", "good", "bad"],
                             capture_output=True, text=True, check=True)
        assert len(out.stdout.splitlines()) == 2


def test_changing_the_student_rebuilds_only_its_chain(built, tmp_path):
    project = tmp_path / "p"
    shutil.copytree(built[0], project, symlinks=True)
    profile = project / "targets" / "tiny_compress.toml"
    profile.write_text(profile.read_text().replace("temperature = 2.0, alpha = 0.5", "temperature = 3.0, alpha = 0.5"))
    ran = Counter(stage for stage, _ in stages_run(scons(project, "-j2", *built[1])))
    # The student and the head-pruned model built from it, their two ONNX
    # exports and quantizations; the teacher logits, the FFN and magnitude
    # chains are untouched.
    assert ran["teacher_logits"] == 0 and ran["finetune"] == 0
    assert ran["distill"] == 1 and ran["prune"] == 1 and ran["export"] == 2 and ran["quantize"] == 2 and ran["fuse"] == 1
    assert ran["evaluate"] == 3  # student_torch, student_int8, student_heads_int4
