"""Each stage lists the recipe modules its output depends on (`Stage.modules`).

SCons rebuilds a stage when one of those files changes, so a module the stage
imports but the table forgets is a stale-build bug that no other test sees
until someone edits that module. This reads the real imports instead.
Imports under `if TYPE_CHECKING:` (the graph types a stage's `declare`
annotates with) never run in the stage's process and do not count.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import importlib

from recipes.wiring.stage import Stage
from recipes.wiring.stage_table import COMMON, module_files

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def all_stages() -> dict[str, Stage]:
    """Every STAGE defined by a module under recipes/, by stage name."""
    found = {}
    for path in sorted(RECIPES.rglob("*.py")):
        module = importlib.import_module("recipes." + ".".join(path.relative_to(RECIPES).with_suffix("").parts))
        stage = getattr(module, "STAGE", None)
        if isinstance(stage, Stage) and stage.build.__module__ == module.__name__:
            assert stage.name not in found, f"two stages are named {stage.name}"
            found[stage.name] = stage
    return found


STAGES = all_stages()


def module_path(module: str) -> Path:
    if module.startswith("runtime."):
        return RECIPES.parent / "runtime" / (module.split(".", 1)[1] + ".py")
    return RECIPES / (module.replace(".", "/") + ".py")


def recipe_imports(module: str) -> set[str]:
    """Modules `module` imports: recipes/ ones dotted below recipes/, the bundle runtime's as "runtime.<name>".

    Imports under `if TYPE_CHECKING:` do not run and do not count; a package's
    __init__ is not followed (importing runtime.integrity does not make every
    runtime module part of the stage)."""
    found = set()
    package = module.rsplit(".", 1)[0] if "." in module else ""
    tree = ast.parse(module_path(module).read_text(encoding="utf-8"))
    type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
                 for n in ast.walk(block)}
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            parts = package.split(".") if package else []
            base = parts[: len(parts) - (node.level - 1)]
            names = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith(("recipes.", "runtime")):
            sub = node.module.split(".", 1)[1] if node.module.startswith("recipes.") else node.module
            names = [sub] + [f"{sub}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".", 1)[1] if a.name.startswith("recipes.") else a.name
                     for a in node.names if a.name.startswith(("recipes.", "runtime."))]
        else:
            continue
        found.update(n.strip(".") for n in names if module_path(n.strip(".")).is_file())
    return found


def closure(module: str) -> set[str]:
    seen, pending = set(), [module]
    while pending:
        m = pending.pop()
        if m not in seen:
            seen.add(m)
            pending.extend(recipe_imports(m))
    return seen


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_depends_on_exactly_the_modules_it_imports(name):
    stage = STAGES[name]
    imported = closure(stage.build.__module__.removeprefix("recipes.")) - set(COMMON)
    assert set(stage.modules) == imported, (
        f"stage {name}: missing {sorted(imported - set(stage.modules))}, "
        f"not imported {sorted(set(stage.modules) - imported)}")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_listed_file_exists(name):
    root = RECIPES.parent
    missing = [f for f in module_files(STAGES[name]) if not (root / f).is_file()]
    assert not missing, f"stage {name} lists files that do not exist: {missing}"
