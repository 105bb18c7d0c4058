"""The stage table: what each build stage runs, and what its output depends on.

SCons reads `modules` to make each stage depend on the recipe files it runs
(editing recipes/formats/quantize_onnx.py rebuilds the quantized models), and
`recipes.wiring.stage_runner` reads `entry` to run the stage in a child process. Both
are plain strings, so reading this table imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass

COMMON = ("errors", "fsutil", "wiring.stage_runner", "wiring.stage_table", "wiring.profile", "wiring.schema")
# What evaluate and latency import to run any artifact format.
RUNNER_MODULES = ("measure.runners", "measure.nf4_runner", "measure.mobile_runners", "textenc", "inputs.data", "models.hf", "models.slim", "models.archs")


@dataclass(frozen=True)
class Stage:
    entry: str                      # "module:function" in recipes/
    modules: tuple[str, ...]        # recipe modules whose code shapes the output
    packages: tuple[str, ...] = ()  # libraries whose version shapes the output
    # "exclusive" stages (latency) run with no other stage running, so timings
    # are not disturbed by a parallel (-j) build.
    lock: str = "shared"


STAGES: dict[str, Stage] = {
    "data": Stage("inputs.data:prepare_stage", ("inputs.data",)),
    "finetune": Stage("models.finetune:finetune_stage", ("models.finetune", "models.model_dir", "inputs.checkpoint", "models.hf", "models.slim", "models.archs", "textenc", "inputs.data"),
                      ("torch", "transformers", "tokenizers")),
    "teacher_logits": Stage("models.teacher_logits:teacher_logits_stage", ("models.teacher_logits", "models.hf", "textenc", "inputs.data", "models.slim", "models.archs"),
                            ("torch", "transformers", "tokenizers")),
    "distill": Stage("models.distill:distill_stage", ("models.distill", "models.model_dir", "inputs.checkpoint", "models.teacher_logits", "models.slim", "models.archs", "models.hf", "textenc", "inputs.data"),
                     ("torch", "transformers", "tokenizers")),
    "prune": Stage("models.prune:prune_stage", ("models.prune", "models.model_dir", "inputs.checkpoint", "models.slim", "models.archs", "models.hf", "textenc", "inputs.data"),
                   ("torch", "transformers", "tokenizers")),
    "export": Stage("formats.onnx_export:export_stage", ("formats.onnx_export", "formats.model_io", "models.hf", "models.slim", "models.archs"),
                    ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")),
    "fuse": Stage("formats.fuse_onnx:fuse_stage", ("formats.fuse_onnx", "formats.model_io"), ("onnx", "onnxscript", "onnx-ir", "onnxruntime")),
    "quantize": Stage("formats.quantize_onnx:quantize_stage", ("formats.quantize_onnx", "textenc", "inputs.data"),
                      ("onnx", "onnxruntime")),
    "quantize_nf4": Stage("formats.quantize_nf4:quantize_nf4_stage", ("formats.quantize_nf4", "measure.nf4_runner", "models.hf", "models.slim", "textenc", "inputs.data", "models.archs", "inputs.checkpoint"),
                          ("torch", "transformers", "bitsandbytes", "accelerate", "safetensors", "tokenizers")),
    "ptl": Stage("formats.mobile_export:ptl_stage", ("formats.mobile_export", "formats.quantize_torch", "measure.mobile_runners", "models.hf", "models.slim", "models.archs", "formats.model_io"),
                 ("torch", "transformers")),
    "pte": Stage("formats.mobile_export:pte_stage", ("formats.mobile_export", "formats.quantize_torch", "measure.mobile_runners", "models.hf", "models.slim", "models.archs", "formats.model_io"),
                 ("torch", "transformers", "executorch", "torchao")),
    "torch_int8": Stage("formats.quantize_torch:torch_int8_stage", ("formats.quantize_torch", "measure.mobile_runners", "models.hf", "models.slim", "models.archs", "formats.model_io"),
                        ("torch", "transformers")),
    "engine": Stage("formats.tensorrt_engine:engine_stage", ("formats.tensorrt_engine",), ("onnx",)),
    "evaluate": Stage("measure.evaluate:evaluate_stage", ("measure.evaluate",) + RUNNER_MODULES,
                      ("torch", "transformers", "onnxruntime", "tokenizers", "bitsandbytes", "executorch")),
    "latency": Stage("measure.latency:latency_stage", ("measure.latency",) + RUNNER_MODULES, lock="exclusive"),
    "report": Stage("measure.report:report_stage", ("measure.report",), ("matplotlib",)),
    "stub": Stage("package.stubs:stub_stage", ("package.stubs", "package.wordpiece"), ("jinja2",)),
    "bundle": Stage("package.bundle:bundle_stage", ("package.bundle", "formats.model_io"), ("onnx",)),
    "archive": Stage("package.bundle:archive_stage", ("package.bundle", "formats.model_io")),
}


def module_files(stage: str) -> list[str]:
    """Recipe source files (relative to the repo root) a stage depends on."""
    names = sorted(set(COMMON) | set(STAGES[stage].modules))
    # fsutil hashes with the runtime's sha256 helper; textenc tokenizes with
    # the runtime's encoder.
    runtime = ["runtime/integrity.py"] + (["runtime/tokenize.py"] if "textenc" in STAGES[stage].modules else [])
    return [f"recipes/{name.replace('.', '/')}.py" for name in names] + runtime
