"""A [search] space (recipes/wiring/search.py): expanded into ordinary candidates, screened on random-weight
stand-ins before training (recipes/measure/screen.py), and built in phases (recipes/wiring/sconsutil.py).

The expansion, the screening and halving rules and Optuna's planner run on values (fast, exact). One build
shows that a candidate the budget rules out before training is never trained, that the bundle ships only the
winner, and that widening the space builds only the new candidates. Optuna's rounds are tested with the nested
run replaced by what it writes (a real round in this build cost the suite ~45 s; it was run by hand)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import make_project, scons, stages_run
from recipes.errors import GateError, ProfileError
from recipes.measure.budget import Budget
from recipes.measure.screen import ScreenArgs, ScreenedCandidate, screen
from recipes.wiring.profile import load_profile
from recipes.wiring.search import CandidateShape, check_space
from tiny_model import REPO

FIXTURE = REPO / "tests" / "fixtures" / "tiny_search.toml"


def edited(tmp_path: Path, old: str, new: str) -> Path:
    text = FIXTURE.read_text()
    assert old in text, old
    path = tmp_path / "tiny_search.toml"
    path.write_text(text.replace(old, new))
    return path


def test_the_space_becomes_ordinary_models_and_artifacts():
    p = load_profile(FIXTURE, REPO / "templates")
    assert [m.name for m in p.models] == ["student1", "ffn50"]
    assert p.model("student1").distill.layers == 1 and p.model("student1").distill.epochs == 1
    assert p.model("ffn50").prune.keep_ratio == 0.5 and p.model("ffn50").recover.epochs == 1
    assert [a.name for a in p.artifacts] == ["teacher-fp32", "teacher-int8", "student1-fp32", "student1-int8",
                                             "ffn50-fp32", "ffn50-int8"]
    assert p.artifact("ffn50-int8").model == "ffn50" and p.artifact("ffn50-int8").quantize.method == "dynamic"
    shapes = {c.artifact: c.shape for c in p.candidates}
    assert shapes["student1-int8"] == CandidateShape(layers=1)
    assert shapes["ffn50-fp32"] == CandidateShape(ffn_keep_ratio=0.5)


def test_chains_prune_the_students_too(tmp_path):
    p = load_profile(edited(tmp_path, "chains = false", "chains = true"), REPO / "templates")
    assert [m.name for m in p.models] == ["student1", "ffn50", "student1-ffn50"]
    assert p.model("student1-ffn50").base == "student1"
    assert {c.artifact: c.shape for c in p.candidates}["student1-ffn50-int8"] == CandidateShape(layers=1, ffn_keep_ratio=0.5)


@pytest.mark.parametrize("old, new, message", [
    ("[budget]\naccuracy_ratio = 0.5\n", "", r"search: a search space needs a \[budget\] to choose from it"),
    ('name = "int8"\n', 'name = "int8"\nmodel = "teacher2"\n', r"search.artifacts\[1\].model = 'teacher2': the search builds"),
    ("ffn_keep_ratios = [0.5]", "ffn_keep_ratios = [0.5, 0.5]", r"search.ffn_keep_ratios = \[0.5, 0.5\]: a value is listed twice"),
    ("ffn_keep_ratios = [0.5]", "ffn_keep_ratios = [1.5]", r"search.ffn_keep_ratios = \[1.5\]: need"),
    ('name = "int8"\n', 'name = "fp32"\n', r"search.artifacts\[1\].name = 'fp32' is used twice"),
    ("[search]\n", "[bundle]\nartifacts = [\"x\"]\n\n[search]\n", r"bundle.artifacts: with a \[search\], the bundle ships"),
    ('format = "onnx"\nprecision = "fp32"\n', 'format = "onnx"\nprecision = "int4"\n',
     r"search.artifacts\[0\].quantize.method = None: onnx int4 needs quantize.method 'weight_only'"),
])
def test_search_mistakes_are_one_line(tmp_path, old, new, message):
    with pytest.raises(ProfileError, match=message) as err:
        load_profile(edited(tmp_path, old, new), REPO / "templates")
    assert "\n" not in str(err.value)


def test_a_student_as_deep_as_the_teacher_is_refused():
    p = load_profile(FIXTURE, REPO / "templates")
    with pytest.raises(ProfileError, match=r"search.student_layers: 2 is not fewer than the teacher's 2 layers"):
        check_space(type(p)(**{**p.__dict__, "search": type(p.search)(**{**p.search.__dict__, "student_layers": (2,)})}), 2)


def screen_args(tmp_path, budget, latency=None, memory=None, on_device=()):
    """Three stand-ins: a (1 MB), b (3 MB), c (2 MB), with latency and memory records as given."""
    sizes = {}
    for name, mb in (("a", 1), ("b", 3), ("c", 2)):
        sizes[name] = tmp_path / f"{name}.onnx"
        sizes[name].write_bytes(b"\0" * (mb * 1_000_000))
    paths = {}
    for key, record in (("latency", latency), ("memory", memory)):
        if record is not None:
            paths[key] = tmp_path / f"{key}.json"
            paths[key].write_text(json.dumps(record))
    import numpy as np
    from safetensors.numpy import save_file

    weights = tmp_path / "model.safetensors"
    save_file({"w": np.zeros((3, 5), dtype=np.float32)}, str(weights))
    candidates = tuple(ScreenedCandidate(n, f"m_{n}", f"stand-in {n}", weights, (sizes[n],), n in on_device) for n in "abc")
    return ScreenArgs(budget, 0.1, candidates, paths.get("latency"), paths.get("memory"), 4,
                      tmp_path / "screen.json")


LATENCY = {"median_ms": {"stand-in a": {"1": 2.0, "4": 5.0}, "stand-in b": {"1": 1.0, "4": 3.0},
                         "stand-in c": {"1": 1.05, "4": 2.0}}, "not_measured": {}}


def test_screening_skips_what_misses_a_shape_budget_with_the_measured_reason(tmp_path):
    out = screen(screen_args(tmp_path, Budget(latency_b1_ms=1.0, size_mb=2.5), latency=LATENCY))
    status = {c["name"]: c["status"] for c in out["candidates"]}
    assert status["a"] == "skipped before training: batch-1 latency 2 ms > latency_b1_ms 1 (+10% slack)"
    assert status["b"] == "skipped before training: size 3 MB > size_mb 2.5"   # size is held exactly
    assert status["c"] == "kept"   # 1.05 ms: inside the 10% slack for timing noise
    assert out["kept"] == ["c"] and out["models_kept"] == ["m_c"]
    assert all(c["parameters"] == 15 for c in out["candidates"])
    assert json.loads((tmp_path / "screen.json").read_text()) == out


def test_screening_checks_size_only_where_latency_cannot_be_measured(tmp_path):
    out = screen(screen_args(tmp_path, Budget(latency_b1_ms=1.0), latency=LATENCY, on_device={"a"}))
    assert out["kept"] == ["a", "b", "c"]
    assert out["candidates"][0]["values"]["latency_b1_ms"].startswith("not measurable on this build host")


def test_when_screening_keeps_nothing_the_selection_fails_in_one_line_naming_the_closest(tmp_path):
    from recipes.measure.budget import SelectArgs, build

    screened = screen(screen_args(tmp_path, Budget(size_mb=0.5)))
    assert screened["kept"] == []   # a round that keeps nothing is not an error by itself (Optuna's rounds)
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"batches": ["1", "4"], "artifacts": [
        {"name": "teacher", "format": "torch", "precision": "fp32", "model": "teacher", "accuracy": 0.9,
         "agreement": 1.0, "size_bytes": 9_000_000, "latency_ms": {"1": 1.0, "4": 2.0}, "peak_memory_mb": 10.0}]}))
    args = SelectArgs("t", "p.toml", Budget(size_mb=0.5), (), (), report, tmp_path / "s.json", tmp_path / "s.md",
                      tmp_path / "s.png", (tmp_path / "screen.json",), ("a", "b", "c"))
    with pytest.raises(GateError) as err:
        build(args)
    assert str(err.value) == ("p.toml: budget not met by any of 3 candidates; screening skipped every one before "
                              f"training; closest is a: size 1 MB > size_mb 0.5; see {(tmp_path / 's.md').as_posix()}")
    assert "Nothing meets the budget" in (tmp_path / "s.md").read_text()


def test_accuracy_screening_drops_only_what_cannot_reach_the_budget():
    from recipes.measure.accuracy_screen import subset_indices, verdict

    assert subset_indices(10, 0.25) == [0, 4, 8] and subset_indices(3, 0.01) == [0]
    budget = Budget(accuracy_ratio=0.97, agreement=0.9)
    # 400 examples: 0.80 / 0.90 = 0.889 of the teacher; two standard errors (0.04) cannot lift it to 0.97.
    ok, why = verdict({"examples": 400, "accuracy": 0.80, "teacher_accuracy": 0.90, "agreement": 0.95}, budget)
    assert not ok and "accuracy 0.889 x teacher on 400 eval examples" in why and "< accuracy_ratio 0.97" in why
    # 0.86 / 0.90 = 0.956, but 0.86 + 2 * 0.0173 = 0.895 -> 0.994 of the teacher: it may still make it.
    assert verdict({"examples": 400, "accuracy": 0.86, "teacher_accuracy": 0.90, "agreement": 0.95}, budget) == (True, "")
    ok, why = verdict({"examples": 400, "accuracy": 0.90, "teacher_accuracy": 0.90, "agreement": 0.80}, budget)
    assert not ok and why.startswith("agreement 0.800 on 400 eval examples")
    # Few examples: wide bounds, nothing dropped; not measurable here: kept, and said so.
    assert verdict({"examples": 4, "accuracy": 0.5, "teacher_accuracy": 0.9, "agreement": 0.5}, budget)[0]
    assert verdict({"examples": 4, "accuracy": None, "teacher_accuracy": 0.9}, budget) == (True, "not measurable on this build host")


def test_optuna_chooses_max_candidates_in_rounds_reproducibly(tmp_path):
    from recipes.wiring.search_optuna import Planner

    path = edited(tmp_path, "chains = false", "chains = true\nhead_fractions = [0.5]\nmax_candidates = 5\ntrials_per_round = 2")
    p = load_profile(path, REPO / "templates")
    assert len(p.candidates) == 12   # teacher, student1, ffn50, heads50, student1-ffn50, student1-heads50; 2 formats

    def run() -> tuple[list[list[str]], dict]:
        planner, rounds = Planner(p), []
        while batch := planner.next_round():
            rounds.append(batch)
            # What a screening round records: the smaller the model, the faster; int8 faster than fp32.
            planner.tell({"candidates": [{"name": n, "kept": True, "parameters": 1000 - 10 * len(n),
                                          "values": {"latency_b1_ms": len(n) / (2 if n.endswith("int8") else 1),
                                                     "size_mb": 1.0, "peak_memory_mb": "not measured",
                                                     "latency_bmax_ms": 1.0}} for n in batch]})
        return rounds, planner.record()

    rounds, record = run()
    assert [len(r) for r in rounds] == [2, 2, 1]
    screened = [n for r in rounds for n in r]
    assert len(set(screened)) == 5 and set(screened) <= {c.artifact for c in p.candidates}
    assert record["not_screened"] == [c.artifact for c in p.candidates if c.artifact not in screened]
    assert run()[0] == rounds   # seeded: the same measurements give the same choice


def test_optuna_rounds_are_planned_screened_and_recorded(tmp_path):
    """sconsutil's loop: each round is written to rounds.json before its nested screening run, and what that
    run recorded is told to Optuna before the next round (the nested run is replaced by what it writes)."""
    from recipes.wiring import sconsutil

    path = edited(tmp_path, "chains = false", "chains = true\nhead_fractions = [0.5]\nmax_candidates = 5\ntrials_per_round = 2")
    p = load_profile(path, REPO / "templates")
    calls = []

    def nested(phase, extra, label):
        tag = extra[0].split("=", 1)[1]
        planned = json.loads(sconsutil.rounds_file(tmp_path, p).read_text())
        names = dict(planned["rounds"])[tag]
        calls.append((phase, tag, label, names))
        rows = [{"name": n, "model": "m", "kept": n.endswith("int8"), "shortfall": 0.0, "parameters": 100,
                 "values": {"latency_b1_ms": 1.0, "latency_bmax_ms": 1.0, "size_mb": 1.0, "peak_memory_mb": 1.0}}
                for n in names]
        out = tmp_path / "build" / p.name / "screen" / tag / "screen.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"candidates": rows, "kept": [r["name"] for r in rows if r["kept"]]}))

    assert sconsutil.optuna_plans(p)
    sconsutil.plan_and_screen(tmp_path, p, {}, nested)
    assert [(c[0], c[1]) for c in calls] == [("screen", "round1"), ("screen", "round2"), ("screen", "round3")]
    assert calls[-1][2] == "screen round3 (5 of 5)"
    state = sconsutil.search_state(tmp_path, p, "select")
    screened = [n for c in calls for n in c[3]]
    assert [tag for tag, _ in state.rounds] == ["round1", "round2", "round3"]
    assert state.kept == frozenset(n for n in screened if n.endswith("int8"))


@pytest.mark.slow
def test_a_skipped_candidate_never_trains_and_a_widened_space_builds_only_the_new(tmp_path, tiny_model, tiny_data,
                                                                                    tiny_built):
    project = make_project(tmp_path / "p")
    profile = project / "targets" / "tiny_search.toml"
    shutil.copy2(FIXTURE, profile)
    # The teacher's stages are the tiny build's (same fine-tuning, data and model): read from its cache.
    # Objective size: screening then measures size only (no latency stage).
    args = ("target=tiny_search", f"model={tiny_model}", f"data={tiny_data}", f"cache={tiny_built[3]}",
            "--cache-readonly", "budget.size_mb=0.13", "budget.objective=size")

    # Only the 1-layer student fits 0.13 MB (as int8, 0.11 MB; the next smallest, ffn50-int8, is 0.16 MB): the
    # FFN-pruned teacher is never pruned or recovered.
    proc = scons(project, "-j2", *args, timeout=900)
    run = stages_run(proc)
    kinds = [s for s, _ in run]
    assert "prune" not in kinds and [t for s, t in run if s == "distill"] == [t for s, t in run if "/student-" in t]
    assert kinds.count("shape") == 2 and kinds.count("screen") == 1   # stand-ins: the student's and ffn50's shapes
    assert "edgesmith: search (tiny_search): phase screen" in proc.stdout
    assert "phase rank (accuracy on an eval subset)" in proc.stdout and kinds.count("rank") == 1
    assert kinds.count("quick_eval") == 1   # the one candidate screening kept
    selection = json.loads((project / "build" / "tiny_search" / "selection.json").read_text())
    assert selection["winner"] == "student1-int8"
    assert {c["name"] for c in selection["skipped"]} == {"teacher-fp32", "teacher-int8", "student1-fp32", "ffn50-fp32",
                                                         "ffn50-int8"}
    assert all(c["status"].startswith("skipped before training: size ") for c in selection["skipped"])
    assert selection["search"]["models_never_trained"] == ["ffn50"] and selection["search"]["models_trained"] == ["student1"]
    manifest = json.loads((project / "build" / "tiny_search" / "bundle" / "manifest.json").read_text())
    assert [a["name"] for a in manifest["artifacts"]] == ["student1-int8"] and manifest["default_artifact"] == "student1-int8"
    assert "Skipped on their random-weight stand-ins" in (project / "build" / "tiny_search" / "selection.md").read_text()

    # Widening the space (a smaller FFN keep ratio) builds only the new candidates' stand-ins: they miss the size
    # budget too, so nothing is trained, and no stage of the earlier candidates runs again (the screening and the
    # selection, which read every candidate, do). Chains are expanded and tested on values above; training a new
    # candidate without retraining the others is test_compression_build's rebuild test.
    profile.write_text(profile.read_text().replace("ffn_keep_ratios = [0.5]", "ffn_keep_ratios = [0.5, 0.25]"))
    proc = scons(project, "-j2", *args, timeout=900)
    run = stages_run(proc)
    assert [s for s, _ in run].count("shape") == 1, run
    assert not {s for s, _ in run} & {"finetune", "distill", "prune", "recover", "quick_eval", "evaluate", "latency",
                                      "memory"}, run
    assert {s for s, _ in run} >= {"export", "quantize", "screen", "select"}, run
    selection = json.loads((project / "build" / "tiny_search" / "selection.json").read_text())
    assert selection["search"]["models_never_trained"] == ["ffn25", "ffn50"]
    assert selection["search"]["models_trained"] == ["student1"] and selection["winner"] == "student1-int8"
    assert {"ffn25-fp32", "ffn25-int8"} <= {c["name"] for c in selection["skipped"]}

    # Nothing changed: every phase is up to date, and nothing runs.
    proc = scons(project, *args)
    assert stages_run(proc) == [], proc.stdout
