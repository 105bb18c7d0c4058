"""What a build makes: a text classifier or a sentence-embedding model.

`task = "classification" | "embedding"` comes from the command line (task=), else the profile's `task` key,
else the checkpoint: a sentence-transformers directory without a classification head is an embedding model,
anything else a classifier. The shipped device profiles say `task = "classification"` (the demo fine-tunes
the packaged MiniLM into a sentiment classifier), and targets/*_embedding.toml say "embedding".

A profile is then checked against its task: a gate, table or format that means nothing for it is one line
naming the key, never silently ignored.
"""
from __future__ import annotations

from recipes.errors import ConfigError, ProfileError
from recipes.inputs.checkpoint import CheckpointInfo
from recipes.tasks import TASKS


class NotThisCheckpoint(ConfigError):
    """The profile's task cannot be built from this checkpoint (an embedding profile, a checkpoint without
    sentence-transformers files): `target=all` passes over such a profile with a note."""


def detect(info: CheckpointInfo) -> str:
    return "embedding" if info.sentence_transformers_files and not info.has_head else "classification"


def resolve(argument: str, profile, info: CheckpointInfo) -> str:
    """The build's task, checked against the checkpoint."""
    if argument and argument not in TASKS:  # SConstruct's EnumVariable checks the command line first
        raise ConfigError(f"task={argument}: use one of {', '.join(TASKS)}")
    task = argument or profile.task or detect(info)
    where = f"task={argument}" if argument else (f"{profile.source}: task = {profile.task!r}" if profile.task else
                                                   f"model={info.root} (detected)")
    if task == "embedding" and not info.sentence_transformers_files:
        raise NotThisCheckpoint(f"{where}: an embedding build needs the checkpoint's sentence-transformers files "
                          f"(modules.json and its pooling config), and {info.root} has none; save the model with "
                          "SentenceTransformer.save(), or build a classifier (task=classification)")
    if task == "embedding" and info.has_head:
        raise ConfigError(f"{where}: {info.root} has a trained classification head; its embedding would not be the "
                          "sentence-transformers model's; use the checkpoint without the head, or task=classification")
    return task


def check_profile(profile, task: str, given_by: str) -> None:
    """Reject what `profile` sets that its task cannot use."""
    src = profile.source
    right = TASKS[task].gates
    wrong = tuple(g for other in TASKS.values() if other.name != task for g in other.gates)
    tables = [("gates", profile.gates)] + [(f"artifacts[{i}].gates", a.gates) for i, a in enumerate(profile.artifacts)]
    for key, gates in tables:
        for name in wrong:
            value = getattr(gates, name)
            if value is None:
                continue
            other = "classification" if task == "embedding" else "embedding"
            raise ProfileError(f"{src}: {key}.{name} = {value} judges a {'classifier' if task == 'embedding' else 'sentence embedding'}, "
                               f"and this build makes {'an embedding model' if task == 'embedding' else 'a classifier'} "
                               f"({given_by}); use {', '.join(right)}, or build the other task (task={other})")
    spec = TASKS[task]
    for i, name in enumerate(profile.stubs.templates):
        if spec.templates is not None and name not in spec.templates:
            raise ProfileError(f"{src}: stubs.templates[{i}] = {name!r} has no {task} version yet; use "
                               f"{', '.join(spec.templates)}")
    for i, a in enumerate(profile.artifacts):
        if spec.formats is not None and a.format not in spec.formats:
            raise ProfileError(f"{src}: artifacts[{i}].format = {a.format!r} has no {task} build yet; use one of "
                               f"{', '.join(spec.formats)}")
    if task == "embedding":
        check_embedding(profile, src)


def check_embedding(profile, src: str) -> None:
    """What only classifiers have yet: the [budget] and [search] (they choose by accuracy or agreement),
    students, and quantizers held to label agreement."""
    for key, value in (("budget", profile.budget), ("search", profile.search)):
        if value is not None:
            raise ProfileError(f"{src}: [{key}] is not available for embedding builds yet (it chooses by accuracy or "
                               "agreement); remove it, or build a classifier")
    if profile.models:
        raise ProfileError(f"{src}: models[0] ({profile.models[0].name}): distilled and pruned embedding models are not "
                           "built yet; remove [[models]] and ship the teacher's formats")
    for i, a in enumerate(profile.artifacts):
        method = getattr(a.quantize, "method", None)
        if method == "nncf_ptq" and a.quantize.accuracy_control:
            raise ProfileError(f"{src}: artifacts[{i}].quantize.accuracy_control = true holds the model to label "
                               "agreement, which an embedding has not; set accuracy_control = false")
        if getattr(a.quantize, "min_agreement", None) is not None:
            raise ProfileError(f"{src}: artifacts[{i}].quantize.min_agreement holds static int8 to label agreement, "
                               "which an embedding has not; remove it")
