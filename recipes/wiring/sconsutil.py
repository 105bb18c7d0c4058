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
from recipes.wiring.graph import Graph, Inputs
from recipes.wiring.profile import load_profile, profile_names


# The command-line variables that choose what a build reads (and so which stage outputs it makes).
INPUT_VARIABLES = ("model", "data", "eval_data", "text_column", "label_column", "eval_fraction")


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


def declare_targets(env, root: Path, target: str, budget_overrides: dict[str, str] | None = None) -> list:
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
    inputs = Inputs(model=info, data=data, eval_data=eval_data, data_params=params, git_revision=git_revision(root))
    graph = Graph(env, root, inputs)
    return [env.Alias(prof.name, graph.target(prof)) for prof in loaded]
