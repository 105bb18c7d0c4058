"""PyTorch-side model preparation shared by the host int8 and mobile stages.

A classifier becomes a plain `logits = f(input_ids, attention_mask[,
token_type_ids])` module (transformers 5 has no `torchscript=` switch any
more; `return_dict=False` and eager attention make it traceable/exportable),
then optionally:

- dynamic int8 with the eager-mode API (`torch.ao.quantization.quantize_dynamic`):
  int8 weights, per-batch uint8 activations, for nn.Linear ("MatMul") and
  optionally 8-bit row-wise embedding tables ("Gather"). Quantized modules
  hold packed params that safetensors cannot store, so the artifact is a
  traced TorchScript file; the packed weights are unpacked on save and
  repacked for whatever kernel backend loads them (fbgemm/x86 here,
  QNNPACK on a phone).
- 8-bit dynamic activations / 4-bit grouped weights with torchao, for
  ExecuTorch's XNNPACK backend (see mobile_export.py).

Every artifact is checked against the teacher as PyTorch serves it (default
attention) on padded batches of several shapes, including shapes that differ
from the trace example, so a trace that baked in a shape fails the stage.
"""
from __future__ import annotations

import contextlib
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

# numpy is imported inside functions: SCons imports this module while reading the build files.

from recipes.errors import ConfigError, StageError
from recipes.formats.dynamic_int8 import DynamicInt8
from recipes.formats.model_io import VERIFY_SHAPES, verification_inputs
from recipes.fsutil import atomic_path, write_json
from recipes.wiring.stage import Stage

if TYPE_CHECKING:  # SCons-side types only; importing them would put the graph in this stage's signature
    from recipes.wiring.graph import Built, Graph, Model

# ONNX op names in DynamicInt8.op_types mapped onto the PyTorch modules they
# stand for, so one quantize table means the same thing in both formats.
TORCH_OP_TYPES = {"MatMul": "Linear", "Gather": "Embedding"}
# ONNX Runtime fusions with no PyTorch module of their own: the fused
# Attention's projections are nn.Linear, quantized under "MatMul".
ONNX_ONLY_OP_TYPES = ("Attention",)
# The trace/export example; check_trace and verification also use other shapes.
TRACE_SHAPE = VERIFY_SHAPES[0]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the deprecation chatter of the legacy TorchScript / torch.ao path.

    torch 2.13 marks torch.ao.quantization, torch.jit.trace and the lite
    interpreter deprecated; the warnings repeat per module and say nothing
    about this model. Real problems surface as exceptions or failed checks.
    """
    with warnings.catch_warnings():
        for category in (DeprecationWarning, FutureWarning, UserWarning):
            warnings.simplefilter("ignore", category)
        try:
            from torch.jit import TracerWarning

            # Only transformers' mask-length check triggers it (a value that
            # is always 0 for our inputs); verification covers the rest.
            warnings.simplefilter("ignore", TracerWarning)
        except ImportError:  # pragma: no cover
            pass
        yield


def logits_module(model, input_names: tuple[str, ...]):
    """Wrap a *ForSequenceClassification model as positional inputs -> logits."""
    import torch

    expected = ("input_ids", "attention_mask", "token_type_ids")[: len(input_names)]
    if tuple(input_names) != expected:
        raise ValueError(f"input_names {list(input_names)} must be a prefix of {list(expected)}")

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
            return self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=False, **kwargs)[0]

    return Logits(model).eval()


def load_logits_module(model_dir: Path, input_names: tuple[str, ...]):
    """The checkpoint with eager attention (plain matmul/softmax), wrapped."""
    import torch

    from recipes.models.hf import load_classifier

    torch.manual_seed(0)
    model = load_classifier(model_dir, attention="eager")
    return logits_module(model, input_names), int(model.config.vocab_size)


def example_args(vocab: int, input_names: tuple[str, ...], batch: int, seq: int, seed: int) -> tuple:
    import torch

    feeds = verification_inputs(vocab, input_names, batch, seq, seed)
    return tuple(torch.from_numpy(feeds[n]) for n in input_names)


def dynamic_int8(module, spec: DynamicInt8):
    """Eager-mode dynamic quantization; returns (quantized module, report info)."""
    import torch
    from torch.ao.quantization import (
        default_dynamic_qconfig,
        float_qparams_weight_only_qconfig,
        per_channel_dynamic_qconfig,
        quantize_dynamic,
    )

    unknown = [t for t in spec.op_types if t not in TORCH_OP_TYPES and t not in ONNX_ONLY_OP_TYPES]
    if unknown or not any(t in TORCH_OP_TYPES for t in spec.op_types):
        raise ConfigError(f"quantize.op_types = {list(spec.op_types)}: PyTorch dynamic int8 quantizes "
                          f"{' and '.join(f'{k!r} ({v})' for k, v in TORCH_OP_TYPES.items())}"
                          + (f"; remove {', '.join(map(repr, unknown))}" if unknown else "; name at least one"))
    qconfig: dict[Any, Any] = {}
    if "MatMul" in spec.op_types:
        qconfig[torch.nn.Linear] = per_channel_dynamic_qconfig if spec.per_channel else default_dynamic_qconfig
    if "Gather" in spec.op_types:
        # Row-wise 8-bit tables with float scale/zero point per row.
        qconfig[torch.nn.Embedding] = float_qparams_weight_only_qconfig
    with quiet():
        quantized = quantize_dynamic(module, qconfig, dtype=torch.qint8, inplace=False)
    info = {"method": "dynamic", "api": "torch.ao.quantization.quantize_dynamic",
            "weights": "Linear: qint8 per " + ("channel" if spec.per_channel else "tensor") + "; Embedding: quint8 per row",
            "activations": "Linear: uint8, range computed per call", "per_channel": spec.per_channel,
            "modules": sorted(TORCH_OP_TYPES[t] for t in spec.op_types if t in TORCH_OP_TYPES),
            "not_applicable_op_types": [t for t in spec.op_types if t in ONNX_ONLY_OP_TYPES],
            # PyTorch's dynamic Linear picks reduce_range per kernel backend itself.
            "reduce_range": "backend default"}
    return quantized, info


def trace(module, vocab: int, input_names: tuple[str, ...]):
    """torch.jit.trace with check_trace on shapes other than the example."""
    import torch

    example = example_args(vocab, input_names, *TRACE_SHAPE, seed=0)
    others = [example_args(vocab, input_names, b, s, seed=50 + i) for i, (b, s) in enumerate(((1, 7), (3, 11)))]
    with quiet(), torch.inference_mode():
        try:
            return torch.jit.trace(module, example, check_trace=True, check_inputs=others, strict=False)
        except torch.jit.TracingCheckError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise StageError(f"torch.jit.trace gave a graph that differs on other shapes ({first}); "
                             "this model cannot be shipped as TorchScript") from e


@contextlib.contextmanager
def torchscript_file(script_module, dst: Path, lite: bool) -> Iterator[Path]:
    """Save to a temporary file, yield it for verification, then rename onto dst.

    The zip's root folder is the saved file's stem, so the module is saved
    under a fixed name and copied, not saved into atomic_path's random name:
    that keeps the bytes reproducible.
    """
    with tempfile.TemporaryDirectory() as work, atomic_path(dst) as tmp:
        path = Path(work) / ("model.ptl" if lite else "model.pt")
        with quiet():
            if lite:
                script_module._save_for_lite_interpreter(str(path))
            else:
                script_module.save(str(path))
        without_source_paths(path, Path(work) / "clean" / path.name)
        shutil.copyfile(Path(work) / "clean" / path.name, tmp)
        yield tmp


def without_source_paths(src: Path, dst: Path) -> None:
    """Rewrite a TorchScript archive without its code/*.debug_pkl records.

    Those records hold the source ranges of the traced code: absolute paths of the checkout's recipes and of
    the interpreter's site-packages. So the same model exported from two checkouts (two teammates, a Ray node's
    working directory) had different bytes, and the archive's serialization_id, derived from its content, too.
    They only serve TorchScript's error messages; loading and running do not read them (the saved file is
    verified after this, by loading it). Written with torch's own archive writer, so the records keep the
    alignment and layout torch.jit.load and the lite interpreter expect, and it derives serialization_id
    from what remains."""
    import zipfile

    import torch

    with zipfile.ZipFile(src) as archive:
        infos = archive.infolist()
        root = infos[0].filename.split("/", 1)[0]
        records = [(info.filename[len(root) + 1:], archive.read(info.filename)) for info in infos]
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer = torch._C.PyTorchFileWriter(str(dst))  # names the archive's root folder after dst's stem, as src's
    for name, data in records:
        if not name.endswith(".debug_pkl") and name != ".data/serialization_id":
            writer.write_record(name, data, len(data))
    writer.write_end_of_file()


def reference_model(model_dir: Path):
    from recipes.models.hf import load_classifier

    return load_classifier(model_dir)  # the teacher as PyTorch serves it


def verify(run: Callable[[dict[str, np.ndarray]], np.ndarray], reference, vocab: int, input_names: tuple[str, ...],
           max_sequence: int, atol: float | None, what: str) -> dict[str, Any]:
    """Compare `run` with the reference on padded batches; fail above `atol` (None: report only)."""
    import numpy as np
    import torch

    checks = []
    for i, (b, s) in enumerate(VERIFY_SHAPES):
        s = min(s, max_sequence)
        feeds = verification_inputs(vocab, input_names, b, s, seed=100 + i)
        with torch.inference_mode():
            ref = reference(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.float().numpy()
        out = np.asarray(run(feeds), dtype=np.float32)
        if out.shape != ref.shape or not np.isfinite(out).all():
            raise StageError(f"{what}: output shape {out.shape} (expected {ref.shape}) or non-finite logits at batch {b}, "
                             f"sequence {s}; the artifact is broken, do not ship it")
        diff = float(np.abs(out - ref).max())
        median = float(np.median(np.abs(out - ref)))
        checks.append({"batch": b, "sequence": s, "max_abs_diff": diff, "median_abs_diff": median,
                       "argmax_agreement": float((out.argmax(-1) == ref.argmax(-1)).mean())})
        if atol is not None and not diff <= atol:
            raise StageError(f"{what}: logits differ from PyTorch by {diff:.3g} at batch {b}, sequence {s} "
                             f"(tolerance {atol}); the export is wrong, do not ship it")
    return {"checks": checks, "max_abs_diff": max(c["max_abs_diff"] for c in checks), "atol": atol}


def versions(*names: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "absent"
    return out


def torch_int8(model_dir: Path, dst: Path, report_path: Path, spec: DynamicInt8, input_names: tuple[str, ...],
               max_sequence: int) -> dict[str, Any]:
    """Host artifact: a dynamic-int8 TorchScript file (load with torch.jit.load)."""

    from recipes.measure.mobile_runners import TorchScriptRunner

    module, vocab = load_logits_module(model_dir, input_names)
    quantized, info = dynamic_int8(module, spec)
    scripted = trace(quantized, vocab, input_names)
    with torchscript_file(scripted, dst, lite=False) as tmp:
        runner = TorchScriptRunner(tmp, input_names)
        checks = verify(runner, reference_model(model_dir), vocab, input_names, max_sequence, None, dst.name)
    report = {"format": "torchscript", "precision": "int8", "quantize": info, "attention": "eager",
              "shapes": {"batch": "dynamic", "sequence": "dynamic"}, "verified_with_engine": runner.engine,
              "toolchain": versions("torch", "transformers"), **checks}
    write_json(report_path, report)
    return report


@dataclass(frozen=True)
class TorchInt8Args:
    model_dir: Path
    dst: Path
    report: Path
    params: DynamicInt8
    input_names: tuple[str, ...]
    max_sequence: int


def build(args: TorchInt8Args) -> dict[str, Any]:
    return torch_int8(args.model_dir, args.dst, args.report, args.params, args.input_names, args.max_sequence)


STAGE = Stage("torch_int8", TorchInt8Args, build,
              modules=("formats.quantize_torch", "formats.dynamic_int8", "measure.mobile_runners", "models.hf", "models.embedding", "models.slim",
                       "models.archs", "formats.model_io"),
              packages=("torch", "transformers"))


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    """A dynamic-int8 TorchScript file of `model`, for PyTorch serving on the host."""
    max_sequence = g.profile.shapes.sequence.max
    identity = {"model_dir": model.dir, "params": spec.quantize, "input_names": g.input_names, "max_sequence": max_sequence}
    out = g.stage_dir(f"torch-{spec.precision}", identity)
    args = TorchInt8Args(model_dir=model.dir, dst=out / "model.pt", report=out / "torch_int8.json", params=spec.quantize,
                         input_names=g.input_names, max_sequence=max_sequence)
    g.stage(STAGE, [args.dst, args.report], model.weights + [model.tokenizer], args)
    return g.file_artifact(spec, model, args.dst, args.report, "pt", "torchscript", "")
