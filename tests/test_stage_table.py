"""The stage table lists, for each stage, the recipe modules its output depends on.

SCons rebuilds a stage when one of those files changes, so a module the stage
imports but the table forgets is a stale-build bug that no other test sees
until someone edits that module. This reads the real imports instead.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from recipes.wiring.stage_table import COMMON, STAGES, module_files

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def module_path(module: str) -> Path:
    return RECIPES / (module.replace(".", "/") + ".py")


def recipe_imports(module: str) -> set[str]:
    """Recipe modules `module` imports (dotted, below recipes/), at top level or inside functions."""
    found = set()
    package = module.rsplit(".", 1)[0] if "." in module else ""
    for node in ast.walk(ast.parse(module_path(module).read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if package else []
            names = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("recipes."):
            sub = node.module.split(".", 1)[1]
            names = [sub] + [f"{sub}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name.split(".", 1)[1] for a in node.names if a.name.startswith("recipes.")]
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
    imported = closure(stage.entry.split(":")[0]) - set(COMMON)
    assert set(stage.modules) == imported, (
        f"stage {name}: missing {sorted(imported - set(stage.modules))}, "
        f"not imported {sorted(set(stage.modules) - imported)}")


@pytest.mark.parametrize("name", sorted(STAGES))
def test_every_listed_file_exists(name):
    root = RECIPES.parent
    missing = [f for f in module_files(name) if not (root / f).is_file()]
    assert not missing, f"stage {name} lists files that do not exist: {missing}"
