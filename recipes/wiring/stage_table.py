"""What a stage's output depends on, as files SCons can watch.

Each stage module lists the recipe (and bundle runtime) modules its code runs (`Stage.modules`,
checked against the real imports by tests/test_stage_table.py); every stage
also runs the pieces below, which carry it across the process boundary.
Editing one of them rebuilds every stage. The profile loader, the schema and
the graph are not among them: they decide the stage's arguments, which enter
its signature as values, so editing how a profile is validated rebuilds
nothing whose resolved parameters did not change.
"""
from __future__ import annotations

from recipes.wiring.stage import Stage

# fsutil hashes with the runtime's sha256 helper (runtime.integrity).
COMMON = ("errors", "fsutil", "wiring.stage", "wiring.stage_runner", "runtime.integrity", "runtime.errors")


def module_file(name: str) -> str:
    """recipes/<dotted>.py, or runtime/<name>.py for the bundle runtime's modules (named "runtime.<name>")."""
    if name.startswith("runtime."):
        return f"runtime/{name.split('.', 1)[1]}.py"
    return f"recipes/{name.replace('.', '/')}.py"


def module_files(stage: Stage) -> list[str]:
    """Source files (relative to the repo root) `stage` depends on."""
    return [module_file(name) for name in sorted(set(COMMON) | set(stage.modules))]
