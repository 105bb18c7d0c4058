"""Budget-driven selection (recipes/measure/budget.py): the cheapest artifact that meets every budget ships.

The selection rules run on report rows (fast, exact); one build shows that a budget given on the command
line re-runs only the selection and the packaging, that the bundle's default is the winner and its
manifest records the margins, and that an impossible budget fails in one line and writes no bundle."""
from __future__ import annotations

import json
import shutil

import pytest

from conftest import scons, stages_run
from recipes.errors import ConfigError, ProfileError
from recipes.measure.budget import Budget, select
from recipes.wiring.profile import load_profile
from tiny_model import REPO


def row(name, accuracy, size_mb, b1, b8, peak, agreement=1.0, fmt="onnx"):
    return {"name": name, "format": fmt, "precision": "int8", "model": "teacher", "accuracy": accuracy,
            "agreement": agreement, "size_bytes": int(size_mb * 1e6), "latency_ms": {"1": b1, "8": b8},
            "peak_memory_mb": peak}


REPORT = {"batches": ["1", "8"], "artifacts": [
    row("teacher", 0.90, 90.0, 20.0, 90.0, 400.0),
    row("fp32", 0.90, 90.0, 10.0, 60.0, 200.0),
    row("int8", 0.89, 23.0, 5.0, 30.0, 90.0, agreement=0.98),
    row("student", 0.86, 12.0, 3.0, 15.0, 60.0, agreement=0.93),
    row("engine", 0.90, 30.0, 4.0, 20.0, 100.0, fmt="tensorrt"),
]}
CANDIDATES = ["fp32", "int8", "student", "engine"]


def test_the_winner_is_the_cheapest_candidate_that_meets_every_budget():
    chosen = select(REPORT, Budget(accuracy_ratio=0.97, size_mb=25), CANDIDATES, set())
    # student is faster and smaller but keeps 0.956 of the accuracy; engine is faster but over 25 MB.
    assert chosen["winner"] == "int8"
    status = {c["name"]: c["status"] for c in chosen["candidates"]}
    assert status["student"] == "rejected: accuracy 0.9556 x teacher < accuracy_ratio 0.97 (misses by 1%)"
    assert status["engine"] == "rejected: size 30 MB > size_mb 25 (misses by 20%)"
    assert status["fp32"].startswith("rejected: size 90 MB > size_mb 25")
    assert chosen["margins"]["size_mb"] == {"limit": 25, "value": 23.0, "status": "pass", "margin": 0.08}


def test_tightening_a_budget_picks_a_different_winner():
    loose = select(REPORT, Budget(accuracy_ratio=0.95), CANDIDATES, set())
    assert loose["winner"] == "student"  # 0.956 of the teacher: inside a 0.95 floor, and the fastest
    tight = select(REPORT, Budget(accuracy_ratio=0.97), CANDIDATES, set())
    assert tight["winner"] == "engine"   # 4 ms beats int8's 5 ms once student is out
    memory = select(REPORT, Budget(accuracy_ratio=0.97, peak_memory_mb=95), CANDIDATES, set())
    assert memory["winner"] == "int8"


def test_a_budget_the_host_cannot_check_is_unchecked_not_passed():
    chosen = select(REPORT, Budget(accuracy_ratio=0.97, latency_b1_ms=4.5), CANDIDATES, {"engine"})
    engine = next(c for c in chosen["candidates"] if c["name"] == "engine")
    assert engine["verdicts"]["latency_b1_ms"]["status"] == "unchecked" and engine["meets_budget"]
    # Its latency is unknown here, so a measured candidate that meets the budget ranks first...
    assert chosen["winner"] != "engine" or chosen["unchecked"]
    # ...and with no measured candidate left, it ships with the unchecked budget named in the record.
    only = select(REPORT, Budget(accuracy_ratio=0.97, latency_b1_ms=4.5), ["engine", "fp32"], {"engine"})
    assert only["winner"] == "engine" and "latency_b1_ms" in only["unchecked"]


def test_nothing_meets_the_budget_names_the_closest_miss():
    from recipes.measure.budget import closest_miss

    chosen = select(REPORT, Budget(size_mb=10, accuracy_ratio=0.99), CANDIDATES, set())
    assert chosen["winner"] is None
    line = closest_miss(chosen)
    assert line.startswith("closest is student: size 12 MB > size_mb 10 (misses by 20%)"), line


def test_objective_size_prefers_the_smallest():
    assert select(REPORT, Budget(accuracy_ratio=0.9, objective="size"), CANDIDATES, set())["winner"] == "student"


def test_budget_overrides_are_checked_in_one_line(tmp_path):
    profile = REPO / "tests" / "fixtures" / "tiny.toml"
    loaded = load_profile(profile, REPO / "templates", {"size_mb": "0.3", "objective": "size"})
    assert loaded.budget == Budget(size_mb=0.3, objective="size")
    with pytest.raises(ConfigError, match=r"^budget.size=1: no such budget; use one of latency_b1_ms"):
        load_profile(profile, REPO / "templates", {"size": "1"})
    with pytest.raises(ConfigError, match=r"^budget.size_mb=small: not a number"):
        load_profile(profile, REPO / "templates", {"size_mb": "small"})
    with pytest.raises(ProfileError, match=r"budget.size_mb = -1.0: need"):
        load_profile(profile, REPO / "templates", {"size_mb": "-1"})
    # The fixture fixes [bundle] default_artifact: a budget on the command line takes the choice over...
    assert load_profile(profile, REPO / "templates", {"size_mb": "1"}).bundle.default_artifact == ""
    # ...while a profile file that states both is contradicting itself.
    both = tmp_path / "p.toml"
    both.write_text(profile.read_text() + "\n[budget]\nsize_mb = 1\n")
    with pytest.raises(ProfileError, match="with a \\[budget\\], the build ships the cheapest"):
        load_profile(both, REPO / "templates")


@pytest.mark.slow
def test_a_budget_reruns_only_the_choice_and_an_impossible_one_writes_no_bundle(tiny_built, tmp_path):
    base, args, _, _ = tiny_built
    project = tmp_path / "p"
    shutil.copytree(base, project, symlinks=True)
    tar, bundle = project / "dist" / "tiny-tiny-bert.tar.gz", project / "build" / "tiny" / "bundle"
    shutil.rmtree(bundle)
    tar.unlink()

    # Nothing is 1 kB: one line naming the closest candidate; no model stage runs, and no bundle is written.
    proc = scons(project, *args, "budget.objective=size", "budget.size_mb=0.001", check=False)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("scons: ***")]
    assert proc.returncode != 0 and len(errors) == 1, proc.stderr
    assert "budget not met by any of 3 candidates; closest is int8_dynamic: size" in errors[0], errors[0]
    assert "> size_mb 0.001" in errors[0] and "selection.md" in errors[0]
    assert [s for s, _ in stages_run(proc)] == ["select"]
    assert not tar.exists() and not (bundle / "manifest.json").exists()

    proc = scons(project, *args, "budget.objective=size", "budget.size_mb=1")
    assert sorted(s for s, _ in stages_run(proc)) == ["archive", "bundle", "select", "stub"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["default_artifact"] == manifest["selection"]["winner"] == "int8_dynamic"  # the smallest
    assert manifest["selection"]["budget"] == {"size_mb": 1.0, "objective": "size"}
    assert manifest["selection"]["margins"]["size_mb"]["status"] == "pass"
    assert "DEFAULT_ARTIFACT = 'int8_dynamic'" in (bundle / "run.py").read_text()
    assert "Ships: `int8_dynamic`" in (project / "build" / "tiny" / "selection.md").read_text()
    assert tar.exists()
