"""A profile's [search] table expanded into ordinary [[models]] and [[artifacts]].

Each candidate is a model (the teacher, a distilled student, a pruned model, or a student pruned
after distillation) built in one of the device's allowed formats. The expansion writes exactly the
ModelSpec and ArtifactSpec entries a user would have listed by hand, so every candidate is the same
cached stage graph as a hand-listed artifact: a second search with another budget re-runs only the
selection, and widening the space builds only the new candidates (their stage directories are keyed
by what determines them, not by their place in the list).

Names say what a candidate is: `student3` (3 teacher layers, distilled), `ffn50` (the teacher with
50% of its FFN neurons kept, recovered), `student3-heads25` (the student with 25% of its heads
removed, recovered), and an artifact `<model>-<format name>`, e.g. `student3-int8_dynamic`.

The shape each candidate will have (layers, FFN width, heads) is known before any training, which is
what screening needs (recipes/models/random_init.py, recipes/measure/screen.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from recipes.errors import ProfileError
from recipes.models.prune import FfnPrune, HeadPrune


@dataclass(frozen=True)
class CandidateShape:
    """What a candidate model looks like before it is trained: the input to a random-weight stand-in."""
    layers: Optional[int] = None          # None: the teacher's layer count
    ffn_keep_ratio: Optional[float] = None
    head_fraction: Optional[float] = None


@dataclass(frozen=True)
class Candidate:
    artifact: str    # the artifact's name
    model: str       # the model's name ("teacher" or a generated [[models]] entry)
    template: str    # the [[search.artifacts]] entry it was built from
    shape: CandidateShape


def percent(value: float) -> str:
    return f"{value * 100:g}".replace(".", "p")


def expand(profile: Any) -> tuple[tuple[Any, ...], tuple[Any, ...], tuple[Candidate, ...]]:
    """(models, artifacts, candidates) of the profile with its [search] space added after its own entries."""
    from recipes.wiring.profile import ModelSpec

    space = profile.search
    src = profile.source
    bases: list[tuple[str, CandidateShape]] = []  # every candidate model, with the shape it will have
    models: list[Any] = []
    if space.include_teacher:
        bases.append(("teacher", CandidateShape()))
    students = []
    for layers in space.student_layers:
        name = f"student{layers}"
        distill = dataclasses.replace(space.distill, layers=layers, layer_ids=())
        models.append(ModelSpec(name=name, base="teacher", distill=distill))
        students.append((name, CandidateShape(layers=layers)))
    bases += students
    for base_name, base_shape in [("teacher", CandidateShape())] + (students if space.chains else []):
        prefix = "" if base_name == "teacher" else base_name + "-"
        for keep in space.ffn_keep_ratios:
            name = f"{prefix}ffn{percent(keep)}"
            prune = FfnPrune(method="ffn", keep_ratio=keep, samples=space.prune_samples, max_length=space.recover.max_length)
            models.append(ModelSpec(name=name, base=base_name, prune=prune, recover=space.recover))
            bases.append((name, dataclasses.replace(base_shape, ffn_keep_ratio=keep)))
        for fraction in space.head_fractions:
            name = f"{prefix}heads{percent(fraction)}"
            prune = HeadPrune(method="heads", fraction=fraction, samples=space.prune_samples,
                              max_length=space.recover.max_length)
            models.append(ModelSpec(name=name, base=base_name, prune=prune, recover=space.recover))
            bases.append((name, dataclasses.replace(base_shape, head_fraction=fraction)))
    artifacts, candidates = [], []
    for model_name, shape in bases:
        for template in space.artifacts:
            name = f"{model_name}-{template.name}"
            artifacts.append(dataclasses.replace(template, name=name, model=model_name))
            candidates.append(Candidate(name, model_name, template.name, shape))
    taken = {m.name for m in profile.models} | {"teacher"}
    for m in models:
        if m.name in taken:
            raise ProfileError(f"{src}: search: the candidate model {m.name!r} has the name of a [[models]] entry; "
                               "rename that entry")
        taken.add(m.name)
    names = {a.name for a in profile.artifacts}
    for a in artifacts:
        if a.name in names:
            raise ProfileError(f"{src}: search: the candidate artifact {a.name!r} has the name of an [[artifacts]] entry "
                               "or of another candidate (two values that round to the same percentage?); rename or "
                               "remove one")
        names.add(a.name)
    if not candidates:
        raise ProfileError(f"{src}: search: the space has no candidates; give [[search.artifacts]] and at least one model "
                           "(include_teacher, student_layers, ffn_keep_ratios or head_fractions)")
    return tuple(models), tuple(artifacts), tuple(candidates)


def check_space(profile: Any, teacher_layers: int | None = None) -> None:
    """What the space can be checked for before the checkpoint is read, in one line each."""
    space, src = profile.search, profile.source
    if profile.budget is None:
        raise ProfileError(f"{src}: search: a search space needs a [budget] to choose from it; add one (or list the "
                           "artifacts you want in [[artifacts]] instead)")
    if not space.artifacts:
        raise ProfileError(f"{src}: search.artifacts: the space allows no format; add [[search.artifacts]] tables "
                           "(like [[artifacts]], without `model`)")
    for i, template in enumerate(space.artifacts):
        if template.model != "teacher":
            raise ProfileError(f"{src}: search.artifacts[{i}].model = {template.model!r}: the search builds every "
                               "candidate model in every allowed format; remove model")
    for key in ("student_layers", "ffn_keep_ratios", "head_fractions"):
        values = list(getattr(space, key))
        if len(values) != len(set(values)):
            raise ProfileError(f"{src}: search.{key} = {values}: a value is listed twice")
    if teacher_layers is not None:
        for layers in space.student_layers:
            if layers >= teacher_layers:
                raise ProfileError(f"{src}: search.student_layers: {layers} is not fewer than the teacher's "
                                   f"{teacher_layers} layers; a student keeps fewer (use include_teacher for the teacher)")

