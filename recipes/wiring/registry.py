"""The registries: artifact formats, model steps and artifact options, found by scanning.

A module under recipes/formats/ or recipes/models/ registers itself by what
it defines, so a new capability is one module (plus its test and its profile
documentation), never another branch in an if-chain:

- `FORMAT` (recipes.wiring.stage.Format): what `format = "..."` builds;
- `MODEL_STEPS` (ModelStep, ...): the `[[models]]` table keys it handles;
- `ARTIFACT_OPTIONS` (ArtifactOption, ...): optional passes an `[[artifacts]]`
  table can ask for by key.

Read while SCons reads the build files: these modules import nothing heavy.
"""
from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from recipes import formats, models
from recipes.wiring.stage import ArtifactOption, Format, ModelStep


def _modules(package: ModuleType) -> list[ModuleType]:
    return [importlib.import_module(f"{package.__name__}.{m.name}")
            for m in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name)]


_FOUND = _modules(formats) + _modules(models)

FORMATS: dict[str, Format] = {m.FORMAT.name: m.FORMAT for m in _FOUND if isinstance(getattr(m, "FORMAT", None), Format)}
MODEL_STEPS: tuple[ModelStep, ...] = tuple(sorted((s for m in _FOUND for s in getattr(m, "MODEL_STEPS", ())), key=lambda s: s.order))
ARTIFACT_OPTIONS: tuple[ArtifactOption, ...] = tuple(
    sorted((o for m in _FOUND for o in getattr(m, "ARTIFACT_OPTIONS", ())), key=lambda o: o.order))
