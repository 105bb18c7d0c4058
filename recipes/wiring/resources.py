"""What a stage asks of the node it runs on under `executor=ray`: CPUs, GPUs, memory, and the device.

Defaults are one CPU per stage and no memory reservation, so every stage fits a small node (a laptop, a
Jetson); a profile raises them per stage in a `[resources.<stage>]` table for a real pool, e.g.

    [resources.finetune]
    cpus = 8
    memory_gb = 16

Device-bound stages (the latency and peak-memory measurements of the profile's artifacts, and a TensorRT
engine build) also ask for the custom resource `device:<device.name>`, which only the device's own node
offers (`ray start --address=HEAD --resources='{"device:jetson-orin": 1}'`). A measurement also takes every
CPU of that node, so no other stage runs beside it and disturbs the timings (locally it holds the build's
exclusive lock for the same reason).

None of this enters a stage's signature: where a stage runs does not change its bytes (the worker refuses
to run when its libraries differ from the signature's; recipes/wiring/ray_task.py).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

from recipes.errors import ProfileError
from recipes.params import bounded

DEVICE_BOUND = frozenset({"latency", "memory", "engine"})
# Measurements take the whole device node (all its CPUs), as the latency stage holds the build's exclusive lock
# locally: another stage on the same cores would disturb the timings.
WHOLE_NODE = frozenset({"latency", "memory"})
# Stages whose code can use a CUDA GPU: a TensorRT engine build, and measuring or evaluating an artifact whose
# runtime runs on one (TensorRT, the nf4 checkpoint with bitsandbytes). Training (fine-tuning, distillation,
# recovery, QAT) runs on the CPU in this version (recipes/models/training.py), so a GPU asked for it would sit idle
# while the stage ran on the CPU; the profile is refused instead.
GPU_CAPABLE = frozenset({"engine", "latency", "memory", "evaluate", "quantize_nf4"})


@dataclass(frozen=True)
class StageResources:
    cpus: float = bounded(1.0, min=0.0, max=4096.0)
    gpus: float = bounded(0.0, min=0.0, max=64.0)
    # Ray's `memory` resource: a reservation the scheduler honours, not a limit it enforces.
    memory_gb: float = bounded(0.0, min=0.0, max=65536.0)


@dataclass(frozen=True)
class Resources:
    """[resources.<stage>] tables: the stages a profile can size (the others take StageResources())."""
    data: Optional[StageResources] = None
    finetune: Optional[StageResources] = None
    teacher_logits: Optional[StageResources] = None
    distill: Optional[StageResources] = None
    prune: Optional[StageResources] = None
    qat: Optional[StageResources] = None
    export: Optional[StageResources] = None
    fuse: Optional[StageResources] = None
    quantize: Optional[StageResources] = None
    quantize_nf4: Optional[StageResources] = None
    torch_int8: Optional[StageResources] = None
    openvino: Optional[StageResources] = None
    ptl: Optional[StageResources] = None
    pte: Optional[StageResources] = None
    engine: Optional[StageResources] = None
    evaluate: Optional[StageResources] = None
    latency: Optional[StageResources] = None
    memory: Optional[StageResources] = None
    ops: Optional[StageResources] = None

    def for_stage(self, stage: str) -> StageResources:
        return getattr(self, stage, None) or StageResources()


def check(resources: Resources, source: str) -> None:
    """One line for a GPU asked of a stage that cannot use one."""
    for f in fields(resources):
        r = getattr(resources, f.name)
        if r is not None and r.gpus > 0 and f.name not in GPU_CAPABLE:
            raise ProfileError(f"{source}: resources.{f.name}.gpus = {r.gpus:g}: the {f.name} stage runs on the CPU in "
                               f"this version, so a GPU would sit idle; remove the key (stages that use a GPU: "
                               f"{', '.join(sorted(GPU_CAPABLE))})")


def request(resources: Resources, stage: str, device: str, device_required: bool = False) -> dict:
    """The Ray resource request of `stage` for a profile whose device is named `device` (JSON-able).
    `device_required`: the stage may not fall back to the scons host when no node offers the device."""
    r = resources.for_stage(stage)
    return {"num_cpus": r.cpus, "num_gpus": r.gpus, "memory": int(r.memory_gb * 2**30),
            "device": f"device:{device}" if stage in DEVICE_BOUND else "", "whole_node": stage in WHOLE_NODE,
            "device_required": device_required}
