"""What SConstruct does between reading variables and declaring the graph.

Validates the command line (target, model, data and its options), loads the
profiles and hands them to recipes.wiring.graph. Cheap: json/toml reading only.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from recipes.inputs.checkpoint import default_model_dir, inspect
from recipes.inputs.data import DataParams, check_path
from recipes.errors import ConfigError
from recipes.wiring.graph import Graph, Inputs, SearchPhase, accuracy_screened
from recipes.wiring.profile import load_profile, profile_names


# The command-line variables that choose what a build reads (and so which stage outputs it makes).
INPUT_VARIABLES = ("model", "data", "eval_data", "text_column", "label_column", "eval_fraction", "task")


def _last_inputs_file(root: Path) -> Path:
    return root / "build" / ".last-inputs.json"


def remember_inputs(root: Path, values: dict) -> None:
    """Record the inputs of this build, for `scons -c` (written only when they change)."""
    path = _last_inputs_file(root)
    text = json.dumps({k: str(v) for k, v in values.items()}, sort_keys=True) + "\n"
    try:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError:
        pass  # only a convenience for cleaning; never fail a build over it


def last_inputs(root: Path, arguments: dict) -> dict:
    """`arguments` with the last build's inputs filled in where this command line does not give them."""
    try:
        last = json.loads(_last_inputs_file(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(arguments)
    return {**{k: v for k, v in last.items() if k in INPUT_VARIABLES}, **arguments}


def budget_overrides(arguments: dict) -> dict[str, str]:
    """`budget.NAME=VALUE` command-line arguments, as {NAME: VALUE} (checked when the profile is loaded)."""
    return {k[len("budget."):]: v for k, v in arguments.items() if k.startswith("budget.")}


def budget_help() -> str:
    from recipes.measure.budget import MEASURES

    lines = ["budget.NAME=VALUE: override the profile's [budget] (the build ships the cheapest artifact that meets it, as",
             "the bundle's default; a profile's [bundle] default_artifact gives way):"]
    for name, (is_max, unit, what) in MEASURES.items():
        lines.append(f"    budget.{name}: {'maximum' if is_max else 'minimum'} {what}" + (f" ({unit})" if unit else ""))
    lines.append("    budget.objective: what is minimised among the artifacts that meet it: "
                 "latency_b1 (default), latency_bmax, size or peak_memory")
    return "\n".join(lines) + "\n"


def reject_unknown_variables(unknown: dict, known: list[str]) -> None:
    if unknown:
        name = sorted(unknown)[0]
        raise ConfigError(f"unknown variable {name}={unknown[name]}; known variables: {', '.join(known)} (see scons -h)")


def git_revision(root: Path) -> str:
    """HEAD's commit, with '+dirty' when tracked files differ from it."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root, capture_output=True, timeout=10)
        return head.stdout.strip() + ("+dirty" if dirty.returncode == 1 else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def resolve_targets(root: Path, name: str) -> list[Path]:
    """Profile files for target=NAME: a targets/ name, 'all', or a path to a .toml file."""
    known = profile_names(root / "targets")
    if name == "all":
        return [root / "targets" / f"{n}.toml" for n in known]
    if name.endswith(".toml"):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else root / path
        if not path.is_file():
            raise ConfigError(f"target={name}: no such profile file")
        if path.stem in known and path.resolve() != (root / "targets" / f"{path.stem}.toml").resolve():
            raise ConfigError(f"target={name}: its name {path.stem!r} is taken by targets/{path.stem}.toml; rename the file")
        return [path]
    if name not in known:
        raise ConfigError(f"target={name}: no such profile; known targets: {', '.join(known)}, all, list, "
                          f"or a path to a profile file (profiles live in targets/*.toml)")
    return [root / "targets" / f"{name}.toml"]


def parse_fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        raise ConfigError(f"eval_fraction={text}: use a number between 0 and 1, e.g. eval_fraction=0.2")
    return value


def declare_targets(env, root: Path, target: str, budget_overrides: dict[str, str] | None = None,
                    arguments: dict[str, str] | None = None, options: dict | None = None) -> list:
    """The Default aliases of the target(s). `arguments` and `options`: the command line's variables and
    SCons options, which the nested phases of a [search] profile run with."""
    options = options or {}
    loaded = [load_profile(path, root / "templates", budget_overrides) for path in resolve_targets(root, target)]

    model_dir = Path(env["model"]).expanduser() if env["model"] else default_model_dir()
    info = inspect(model_dir.absolute())
    data = Path(env["data"]).expanduser()
    if not data.is_absolute():
        data = root / data if (root / data).exists() or not data.exists() else data.absolute()
    check_path(data, "data")
    eval_data = None
    if env["eval_data"]:
        eval_data = Path(env["eval_data"]).expanduser().absolute()
        check_path(eval_data, "eval_data")
    params = DataParams(
        text_column=env["text_column"],
        label_column=env["label_column"],
        eval_fraction=parse_fraction(env["eval_fraction"]),
        model_labels=info.id2label,
    )
    loaded = profiles_for_task(loaded, target, env.get("task", ""), info)
    inputs = Inputs(model=info, data=data, eval_data=eval_data, data_params=params, git_revision=git_revision(root))
    graph = Graph(env, root, inputs)
    if not options.get("clean") and not options.get("no_exec"):
        record_placement_at_exit(root, env, graph.stages_of)
    phase, screening_round = env.get("edgesmith_phase", ""), env.get("edgesmith_round", "")
    searching = [prof for prof in loaded if prof.search is not None]
    if phase:  # a nested run of one search phase: only the search profiles, up to that phase
        return [env.Alias(prof.name, graph.target(prof, search_state(root, prof, phase, screening_round)))
                for prof in searching]
    if searching and not options.get("clean") and not options.get("help"):
        run_search_phases(root, searching, arguments or {}, options)

    def final(prof):
        # `scons -c` cleans every candidate, whatever the last build screened and selected.
        return search_state(root, prof, "") if prof.search and not options.get("clean") else None

    return [env.Alias(prof.name, graph.target(prof, final(prof))) for prof in loaded]


def profiles_for_task(loaded: list, target: str, argument: str, info) -> list:
    """Each profile with its task resolved. `target=all` builds the profiles this checkpoint can make and names,
    in one note each, those it cannot (an embedding profile, a checkpoint without sentence-transformers files);
    a profile asked for by name that cannot be built is an error."""
    from recipes.wiring.task import NotThisCheckpoint

    kept = []
    for prof in loaded:
        try:
            kept.append(with_task(prof, argument, info))
        except NotThisCheckpoint as e:
            if target != "all":
                raise
            print(f"edgesmith: note: target=all passes over {prof.name}: {str(e).split(': ', 1)[1]}", flush=True)
    return kept


def with_task(prof, argument: str, info):
    """`prof` with its task resolved (recipes/wiring/task.py) and checked against what it sets."""
    import dataclasses

    from recipes.wiring import task as tasks

    resolved = tasks.resolve(argument, prof, info)
    given_by = (f"task={argument}" if argument else f"task = {prof.task!r} in the profile" if prof.task
                else f"detected from model={info.root}")
    tasks.check_profile(prof, resolved, given_by)
    return dataclasses.replace(prof, task=resolved)


def record_placement_at_exit(root: Path, env, stages_of: dict[str, list[tuple[str, str]]]) -> None:
    """When SCons exits: cancel Ray tasks still in flight (Ctrl-C, a failure elsewhere without -k), and write
    build/<target>/placement.json for each target whose stages this run declared (`stages_of`, filled in as the
    graph is declared; recipes/wiring/placement.py)."""
    import atexit

    def at_exit():
        if env["EDGESMITH_EXECUTION"]["executor"] == "ray":
            from recipes.wiring import ray_executor

            ray_executor.cancel_inflight()
        from recipes.wiring import placement

        for name, stages in stages_of.items():
            placement.write(str(root), root / "build" / name, stages)

    atexit.register(at_exit)


class PhaseFailed(Exception):
    """A nested scons run of a [search] phase failed; it has printed its own error. (Not in recipes/errors.py:
    every stage's signature includes that module, and this is SConstruct's business only.)"""

    def __init__(self, code: int):
        super().__init__(f"a search phase failed (exit {code})")
        self.code = code


# A [search] profile is built in phases, because what the later ones declare depends on what the
# earlier ones measured, and SCons declares its whole graph before it builds anything:
#   1. "screen": the candidates' random-weight stand-ins are built, measured and held to the budget
#      (build/<target>/screen.json lists the candidates kept);
#   2. "rank" (when the budget limits accuracy or agreement): only the kept candidates are trained and
#      built, and evaluated on a subset of the eval split (build/<target>/accuracy_screen.json);
#   3. "select": the candidates still in are evaluated in full and measured, and the budget selects among
#      them (build/<target>/selection.json names the winner);
#   4. the bundle of the winner.
# The first phases are nested scons runs of the same command line (same -j, -k, -n, cache and variables),
# so every stage stays an ordinary cached SCons node, and a skipped candidate is never declared, let
# alone trained. A no-op build of a search profile pays for one extra scons start-up per nested phase
# (and per Optuna round).


def optuna_plans(prof) -> bool:
    """Whether Optuna chooses which candidates of the space to screen (it is larger than max_candidates)."""
    space = prof.search
    return bool(space.screen and space.max_candidates and len(prof.candidates) > space.max_candidates)


def rounds_file(root: Path, prof) -> Path:
    return root / "build" / prof.name / "screen" / "rounds.json"


def search_state(root: Path, prof, phase: str, screening_round: str = "") -> SearchPhase:
    """The phase's view of the search: the screening rounds, the candidates they kept and the winner, as the
    finished phases recorded them (in a dry run they may be missing: then every candidate is declared)."""
    tdir = root / "build" / prof.name
    kept = winner = None
    planned = _read_json(rounds_file(root, prof)) if optuna_plans(prof) else None
    rounds = tuple((tag, tuple(names)) for tag, names in planned["rounds"]) if planned else ()
    if phase != "screen" and prof.search.screen:
        paths = [tdir / "screen" / tag / "screen.json" for tag, _ in rounds] if optuna_plans(prof) else [tdir / "screen.json"]
        screened = [_read_json(p) for p in paths]
        if paths and all(s is not None for s in screened):
            kept = frozenset(name for s in screened for name in s["kept"])
    ranked = None
    if phase in ("select", "") and accuracy_screened(prof):
        ranking = _read_json(tdir / "accuracy_screen.json")
        ranked = frozenset(ranking["kept"]) if ranking is not None else None
    if phase == "":
        selection = _read_json(tdir / "selection.json")
        winner = selection.get("winner") if selection is not None else None
    return SearchPhase(phase, kept, winner, rounds, screening_round, ranked)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def run_search_phases(root: Path, searching: list, arguments: dict, options: dict) -> None:
    """Run the search phases as nested scons runs; a failed phase ends this build with its exit code."""
    import sys
    import time

    command = [sys.executable, "-m", "SCons", "-C", str(root), f"-j{options.get('num_jobs', 1)}"]
    command += [flag for key, flag in (("keep_going", "-k"), ("no_exec", "-n"), ("silent", "-s"),
                                       ("no_progress", "-Q"), ("cache_readonly", "--cache-readonly"),
                                       ("cache_disable", "--cache-disable")) if options.get(key)]
    command += [f"{k}={v}" for k, v in arguments.items()]
    timings: dict[str, float] = {}
    names = ", ".join(prof.name for prof in searching)

    def nested(phase: str, extra: list[str], label: str) -> None:
        print(f"edgesmith: search ({names}): phase {label}", flush=True)
        started = time.monotonic()
        code = subprocess.call(command + [f"edgesmith_phase={phase}"] + extra, cwd=root)
        timings[phase] = round(timings.get(phase, 0.0) + time.monotonic() - started, 3)
        if code != 0:
            raise PhaseFailed(code)

    for prof in searching:
        if optuna_plans(prof):
            plan_and_screen(root, prof, options, nested)
    if any(prof.search.screen and not optuna_plans(prof) for prof in searching):
        nested("screen", ["edgesmith_round=all"], "screen")
    if any(accuracy_screened(prof) for prof in searching):
        nested("rank", [], "rank (accuracy on an eval subset)")
    nested("select", [], "select")
    if not options.get("no_exec"):
        for prof in searching:
            log = root / "build" / prof.name / "search_phases.json"
            log.write_text(json.dumps({"wall_s": timings, "note": "wall time of each nested phase of the last build "
                                       "(a no-op phase costs one scons start-up)"}, indent=2) + "\n", encoding="utf-8")
    print("edgesmith: search phases took " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()), flush=True)


def plan_and_screen(root: Path, prof, options: dict, nested) -> None:
    """Optuna's rounds over a space larger than max_candidates, each screened by a nested run before the
    next is proposed (recipes/wiring/search_optuna.py); the plan is kept in build/<target>/screen/rounds.json."""
    from recipes.wiring.search_optuna import Planner

    planner = Planner(prof)
    path = rounds_file(root, prof)
    rounds: list[tuple[str, list[str]]] = []
    while True:
        batch = planner.next_round()
        if not batch:
            break
        tag = f"round{len(rounds) + 1}"
        rounds.append((tag, batch))
        if not options.get("no_exec"):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"rounds": rounds, **planner.record()}, indent=2) + "\n", encoding="utf-8")
        nested("screen", [f"edgesmith_round={tag}"], f"screen {tag} ({len(planner.tried)} of {prof.search.max_candidates})")
        screened = _read_json(path.parent / tag / "screen.json")
        if screened is None:  # a dry run: the round's stand-ins are not built, so there is nothing to learn from
            break
        planner.tell(screened)
