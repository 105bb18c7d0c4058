"""The `openvino` artifact format: OpenVINO IR for CPU targets.

    [[artifacts]]
    name = "ov_int8"
    format = "openvino"
    precision = "int8"          # fp32 | bf16 | int8 | int4
    quantize = { method = "nncf_ptq", calibration_samples = 300 }

- fp32: the IR of the verified fp32 ONNX (or of the PyTorch model, profile
  [openvino] source), run with OpenVINO's inference precision pinned to f32
  (on an AMX CPU OpenVINO would otherwise run it in bf16).
- bf16: the same graph run in bf16. Only where the device has AMX or
  avx512_bf16 (device.cpu_features says so; never guessed at run time):
  elsewhere OpenVINO silently runs it in fp32.
- int8: NNCF post-training quantization (`nncf_ptq`), by default with NNCF's
  accuracy control holding agreement with the float model to the artifact's
  min_agreement gate; or int8 weight compression (`weight_compression`).
- int4: NNCF int4 weight compression.

The conversion and quantization run in recipes/formats/openvino_ir.py (its own
stage, with openvino and nncf versions in its signature); this module only
declares, and imports nothing heavy.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from recipes.errors import ProfileError
from recipes.formats import onnx_export, openvino_ir
from recipes.formats.openvino_params import NncfPtq, WeightCompression
from recipes.wiring.stage import Format
from runtime.cpu_features import host_features, lacking

if TYPE_CHECKING:
    from recipes.wiring.graph import Built, Graph, Model

# CPU features an artifact needs to run as built and measured, by architecture and kind.
# bf16: without AMX or avx512_bf16 OpenVINO compiles a bf16 model as fp32.
# int8 (NNCF, int8 activations): without VNNI or AMX OpenVINO's int8 kernels are
# slower than its fp32 ones (1.3x on an AVX2-only EPYC, bench/results/cpu_runtimes.md).
# Compressed weights on arm64: OpenVINO's Arm kernels for them (KleidiAI, openvino
# PR #29067) use the dot-product instructions (bench/results/arm64.md). On x86-64
# compressed weights are unpacked to float and run anywhere.
REQUIREMENTS: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("x86_64", "bf16"): (("amx_bf16", "avx512_bf16"), "OpenVINO runs bf16 as fp32 without them"),
    ("x86_64", "int8"): (("amx_int8", "avx512_vnni", "avx_vnni"), "OpenVINO's int8 kernels are slower than fp32 without them"),
    ("arm64", "weights"): (("asimddp",), "OpenVINO's Arm kernels for compressed weights use the dot-product instructions"),
}
INFERENCE_PRECISION = {"bf16": "bf16"}   # everything else runs its float parts in f32


def requirements(arch: str, precision: str, quantize: Any) -> tuple[tuple[str, ...], str]:
    """(CPU features of which one is needed, why) for an artifact; ((), "") when it runs anywhere."""
    kind = ("bf16" if precision == "bf16" else "int8" if isinstance(quantize, NncfPtq)
            else "weights" if isinstance(quantize, WeightCompression) else "")
    return REQUIREMENTS.get((arch, kind), ((), ""))


def check_spec(p: Any, spec: Any, key: str) -> None:
    """Profile checks for an openvino artifact (called from profile.check_consistency)."""
    arch, features = p.device.arch, set(p.device.cpu_features)
    if spec.precision == "bf16":
        if arch != "x86_64":
            raise ProfileError(f"{p.source}: {key}.precision = 'bf16': OpenVINO runs bf16 on x86-64 CPUs with AMX or "
                               "avx512_bf16 only; use fp32 or int8 on arm64")
        needs, _ = REQUIREMENTS[(arch, "bf16")]
        if not features & set(needs):
            raise ProfileError(f"{p.source}: {key}.precision = 'bf16' needs a device with {' or '.join(needs)}; "
                               f"device.cpu_features = {sorted(features)} lists neither (add them if the device has them)")
    q = spec.quantize
    if isinstance(q, NncfPtq) and arch != "x86_64":
        raise ProfileError(f"{p.source}: {key}.quantize.method = 'nncf_ptq': OpenVINO runs int8-activation models in "
                           "simulation on arm64 (slower than fp32); use method = 'weight_compression' there")
    if isinstance(q, WeightCompression):
        bits = q.mode[:4]
        if bits != spec.precision:
            raise ProfileError(f"{p.source}: {key}.quantize.mode = {q.mode!r} does not make precision {spec.precision!r}; "
                               f"use an {spec.precision}_* mode")
    if isinstance(q, NncfPtq) and q.accuracy_control and p.gates_for(spec).min_agreement is None:
        raise ProfileError(f"{p.source}: {key}.quantize.accuracy_control = true holds the model to min_agreement, which "
                           "is not set; set gates.min_agreement (profile or artifact) or accuracy_control = false")


def declare_artifact(g: "Graph", spec: Any, model: "Model") -> "Built":
    p = g.profile
    needs, why = requirements(p.device.arch, spec.precision, spec.quantize)
    hint = INFERENCE_PRECISION.get(spec.precision, "f32")
    args = openvino_ir.declare(g, spec, model, needs, why, hint,
                               onnx_export.declare(g, model, p.stages.export) if p.openvino.source == "onnx" else None)
    name = spec.name
    files = [args.model_xml, args.model_xml.with_suffix(".bin"), args.config]
    bundle = [(f, f"models/{name}/{f.name}") for f in files] + [(args.record, f"models/{name}/openvino.json")]
    note = ""
    if lacking(needs, host_features()) and spec.precision not in INFERENCE_PRECISION:
        # (An artifact this host cannot run at its precision is not measured; its evaluation says why.)
        note = (f"measured on a build host without {' or '.join(needs)} ({why}): the device's latency differs, "
                "and the bundle's runtime runs another artifact on such a host")
    return g.built(spec, model, path=args.model_xml, files=files, runner="openvino", bundle=bundle,
                   entry=f"models/{name}/model.xml",
                   manifest={"requires_cpu_any": list(needs), "requires_why": why,
                             "inference_precision": hint,
                             "runtime_version": g.package_version("openvino"),
                             "record": f"models/{name}/openvino.json"},
                   note=note, details=args.record)


FORMAT = Format("openvino", "openvino",
                {"fp32": (), "bf16": (), "int8": ("nncf_ptq", "weight_compression"), "int4": ("weight_compression",)},
                declare_artifact)
