"""The stage table: what each build stage runs, and what its output depends on.

SCons reads `modules` to make each stage depend on the recipe files it runs
(editing recipes/quantize_onnx.py rebuilds the quantized models), and
`recipes.stage_main` reads `entry` to run the stage in a child process. Both
are plain strings, so reading this table imports nothing heavy.
"""
from __future__ import annotations

from dataclasses import dataclass

COMMON = ("errors", "fsutil", "stage_main", "stages", "profile", "schema")
# What evaluate and latency import to run any artifact format.
RUNNER_MODULES = ("runners", "nf4_runner", "mobile_runners", "textenc", "data", "hf", "slim", "archs")


@dataclass(frozen=True)
class Stage:
    entry: str                      # "module:function" in recipes/
    modules: tuple[str, ...]        # recipe modules whose code shapes the output
    packages: tuple[str, ...] = ()  # libraries whose version shapes the output
    # "exclusive" stages (latency) run with no other stage running, so timings
    # are not disturbed by a parallel (-j) build.
    lock: str = "shared"


STAGES: dict[str, Stage] = {
    "data": Stage("data:prepare_stage", ("data",)),
    "finetune": Stage("finetune:finetune_stage", ("finetune", "model_dir", "checkpoint", "hf", "slim", "archs", "textenc", "data"),
                      ("torch", "transformers", "tokenizers")),
    "teacher_logits": Stage("teacher_logits:teacher_logits_stage", ("teacher_logits", "hf", "textenc", "data", "slim", "archs"),
                            ("torch", "transformers", "tokenizers")),
    "distill": Stage("distill:distill_stage", ("distill", "model_dir", "checkpoint", "teacher_logits", "slim", "archs", "hf", "textenc", "data"),
                     ("torch", "transformers", "tokenizers")),
    "prune": Stage("prune:prune_stage", ("prune", "model_dir", "checkpoint", "slim", "archs", "hf", "textenc", "data"),
                   ("torch", "transformers", "tokenizers")),
    "export": Stage("onnx_export:export_stage", ("onnx_export", "model_io", "hf", "slim", "archs"),
                    ("torch", "transformers", "onnx", "onnxscript", "onnxruntime")),
    "fuse": Stage("fuse_onnx:fuse_stage", ("fuse_onnx", "model_io"), ("onnx", "onnxscript", "onnx-ir", "onnxruntime")),
    "quantize": Stage("quantize_onnx:quantize_stage", ("quantize_onnx", "textenc", "data"),
                      ("onnx", "onnxruntime")),
    "quantize_nf4": Stage("quantize_nf4:quantize_nf4_stage", ("quantize_nf4", "nf4_runner", "hf", "slim", "textenc", "data", "archs", "checkpoint"),
                          ("torch", "transformers", "bitsandbytes", "accelerate", "safetensors", "tokenizers")),
    "ptl": Stage("mobile_export:ptl_stage", ("mobile_export", "quantize_torch", "mobile_runners", "hf", "slim", "archs", "model_io"),
                 ("torch", "transformers")),
    "pte": Stage("mobile_export:pte_stage", ("mobile_export", "quantize_torch", "mobile_runners", "hf", "slim", "archs", "model_io"),
                 ("torch", "transformers", "executorch", "torchao")),
    "torch_int8": Stage("quantize_torch:torch_int8_stage", ("quantize_torch", "mobile_runners", "hf", "slim", "archs", "model_io"),
                        ("torch", "transformers")),
    "engine": Stage("tensorrt_engine:engine_stage", ("tensorrt_engine",), ("onnx",)),
    "evaluate": Stage("evaluate:evaluate_stage", ("evaluate",) + RUNNER_MODULES,
                      ("torch", "transformers", "onnxruntime", "tokenizers", "bitsandbytes", "executorch")),
    "latency": Stage("latency:latency_stage", ("latency",) + RUNNER_MODULES, lock="exclusive"),
    "report": Stage("report:report_stage", ("report",), ("matplotlib",)),
    "stub": Stage("stubs:stub_stage", ("stubs", "wordpiece"), ("jinja2",)),
    "bundle": Stage("bundle:bundle_stage", ("bundle", "model_io"), ("onnx",)),
    "archive": Stage("bundle:archive_stage", ("bundle", "model_io")),
}


def module_files(stage: str) -> list[str]:
    """Recipe source files (relative to the repo root) a stage depends on."""
    names = sorted(set(COMMON) | set(STAGES[stage].modules))
    # fsutil hashes with the runtime's sha256 helper; textenc tokenizes with
    # the runtime's encoder.
    runtime = ["runtime/integrity.py"] + (["runtime/tokenize.py"] if "textenc" in STAGES[stage].modules else [])
    return [f"recipes/{name}.py" for name in names] + runtime
