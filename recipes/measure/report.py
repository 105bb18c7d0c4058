"""The target's report: accuracy, agreement, size, latency and peak memory against the teacher.

For every artifact timed on the host CPU it also says how close the measured
latency is to the CPU's arithmetic floor: achieved operations per second
(2 x the model's MACs, recipes/measure/ops.py, over the median latency) against
the host's peak for the precision the artifact computes in (recipes/measure/peak.py).

Writes report.json (for tools), report.md and report.html (for people, the
HTML with a plot of accuracy against latency and size), then enforces the
profile's quality gates: a failing gate fails the build, after the report
has been written with the failure marked, so the numbers can be read.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from recipes.errors import GateError
from recipes.fsutil import atomic_path, write_json
from recipes.measure.parity import format_parity, parity_failures, parity_html, parity_markdown
from recipes.measure.peak import PRECISIONS, host_cpu, peak
from recipes.params import bounded
from recipes.tasks import TASKS
from recipes.wiring.stage import Stage


@dataclass(frozen=True)
class Gates:
    # Accuracy of the artifact divided by the teacher's accuracy.
    min_accuracy_ratio: Optional[float] = bounded(None, min=0.0, max=10.0)
    # Fraction of eval examples where the artifact predicts the teacher's label.
    min_agreement: Optional[float] = bounded(None, min=0.0, max=1.0)
    max_size_mb: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e7)
    # Median latency at batch 1 and at the largest evaluation batch, where the
    # artifact can run on the build host.
    max_latency_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    max_batch_latency_ms: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    # Resident memory that loading the artifact and running the largest evaluation batch adds to a fresh
    # process (recipes/measure/memory.py), in MiB, where the artifact runs on the build host.
    max_peak_memory_mb: Optional[float] = bounded(None, min=0.0, min_exclusive=True, max=1e8)
    # The teacher's own eval accuracy (absolute): every other gate is relative to the teacher,
    # so nothing else catches a teacher that learned nothing. Profile-wide [gates] only.
    min_teacher_accuracy: Optional[float] = bounded(None, min=0.0, max=1.0)
    # Artifacts of one QAT model in different formats (recipes/measure/parity.py): the lowest share of
    # eval examples on which this one predicts the same label as a sibling. The same int8 program in
    # another runtime; below this, an export or a lowering is wrong.
    min_format_agreement: Optional[float] = bounded(0.98, min=0.0, max=1.0)
    # Embedding builds (task = "embedding"; recipes/measure/embedding_metrics.py): the mean cosine similarity of
    # the artifact's vectors to the teacher's, and recall@10 of its nearest neighbours against the teacher's.
    min_cosine: Optional[float] = bounded(None, min=-1.0, max=1.0)
    min_recall_at_10: Optional[float] = bounded(None, min=0.0, max=1.0)

MB = 1_000_000


def _load(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def measured(row: dict[str, Any]) -> bool:
    """Whether the artifact ran on this host (else its quality and speed are not measured, only its size)."""
    return row.get("accuracy") is not None or row.get("cosine_mean") is not None


def check_gates(row: dict[str, Any], gates: dict[str, Any], teacher_accuracy: float, largest_batch: str) -> list[str]:
    """Failed gates of one artifact, each 'measure value < or > limit'."""
    failures = []
    if not measured(row):  # not measured on this host: only what does not need running it is checked
        gates = {k: v for k, v in gates.items() if k == "max_size_mb"}
    if gates.get("min_cosine") is not None and row["cosine_mean"] < gates["min_cosine"]:
        failures.append(f"mean cosine {row['cosine_mean']:.4f} < min_cosine {gates['min_cosine']}")
    if gates.get("min_recall_at_10") is not None and row["recall_at_10"] < gates["min_recall_at_10"]:
        failures.append(f"recall@10 {row['recall_at_10']:.3f} < min_recall_at_10 {gates['min_recall_at_10']}")
    if gates.get("min_accuracy_ratio") is not None and teacher_accuracy > 0:
        ratio = row["accuracy"] / teacher_accuracy
        if ratio < gates["min_accuracy_ratio"]:
            failures.append(f"accuracy {ratio:.3f}x teacher < min_accuracy_ratio {gates['min_accuracy_ratio']}")
    if gates.get("min_agreement") is not None and row.get("agreement") is not None:
        if row["agreement"] < gates["min_agreement"]:
            failures.append(f"agreement {row['agreement']:.3f} < min_agreement {gates['min_agreement']}")
    if gates.get("max_size_mb") is not None and row["size_bytes"] / MB > gates["max_size_mb"]:
        failures.append(f"size {row['size_bytes'] / MB:.1f} MB > max_size_mb {gates['max_size_mb']}")
    latency = row.get("latency_ms") or {}
    if gates.get("max_latency_ms") is not None and "1" in latency and latency["1"] > gates["max_latency_ms"]:
        failures.append(f"batch-1 latency {latency['1']:.2f} ms > max_latency_ms {gates['max_latency_ms']}")
    if gates.get("max_batch_latency_ms") is not None and largest_batch in latency and latency[largest_batch] > gates["max_batch_latency_ms"]:
        failures.append(f"batch-{largest_batch} latency {latency[largest_batch]:.2f} ms > max_batch_latency_ms {gates['max_batch_latency_ms']}")
    peak = row.get("peak_memory_mb")
    if gates.get("max_peak_memory_mb") is not None and peak is not None and peak > gates["max_peak_memory_mb"]:
        failures.append(f"peak memory {peak:.1f} MiB > max_peak_memory_mb {gates['max_peak_memory_mb']}")
    return failures


def gate_status(row: dict[str, Any], gates: dict[str, Any]) -> str:
    """pass, FAIL: ..., or which gates could not be checked because the artifact was not measured here."""
    if row["gates"]:
        return "FAIL: " + "; ".join(row["gates"])
    if not measured(row):
        skipped = [k for k, v in gates.items() if v is not None and k != "max_size_mb"]
        return f"unchecked ({', '.join(skipped) or 'no gates'}): not measured on this build host"
    if gates.get("max_peak_memory_mb") is not None and row.get("peak_memory_mb") is None:
        return "pass (max_peak_memory_mb unchecked: peak memory not measured on this build host)"
    return "pass"


def build_note(details: dict[str, Any]) -> str:
    """What the report must say about how an artifact was made (from its stage record)."""
    notes = []
    if details.get("optimized") is False:
        notes.append(f"not optimized for mobile ({details.get('reason') or 'no XNNPACK in this torch'})")
    delegation = details.get("delegation")
    if delegation:
        notes.append(f"XNNPACK runs {delegation['delegated_nodes']} of "
                     f"{delegation['delegated_nodes'] + delegation['non_delegated_nodes']} graph nodes")
    q = details.get("quantization") or {}
    if q.get("method") == "nncf_ptq":
        text = f"NNCF int8 calibrated on {q['calibration_samples']} train examples"
        if q.get("accuracy_control"):
            text += (f"; accuracy control held agreement with the float model to >= {1 - q['max_drop']:.3f} on "
                     f"{q['validation_samples']} held-out train examples (reached {q['validation_agreement']:.3f})")
        notes.append(text + f"; {q['fake_quantize_nodes']} quantized operations")
    return "; ".join(notes)


def model_summary(record: dict[str, Any]) -> str:
    """One line on what a distillation or pruning stage did, from its record."""
    if "method" in record:  # pruning.json
        parts = [f"{record['parameters_after']:,} of {record['parameters_before']:,} parameters"]
        if record["method"] == "magnitude":
            parts.append(f"{100 * record['encoder_linear_sparsity']:.1f}% of encoder weights zero "
                         f"({100 * record['model_sparsity']:.1f}% of all); dense kernels do not skip zeros")
        elif record["method"] == "heads":
            parts.append(f"{record['heads_removed']} of {record['heads_total']} heads removed; heads per layer "
                         f"{record['heads_per_layer']}")
        elif record["method"] == "ffn":
            parts.append(f"FFN width {record['intermediate_size_before']} -> {record['intermediate_size_after']}")
        elif record["method"] == "movement" and record.get("speeds_up_dense_kernels"):
            parts.append(f"movement pruning (structured, {record['steps']} steps against the teacher): FFN width "
                         f"{record['intermediate_size_before']} -> {record['intermediate_size_after']}, "
                         f"{record['heads_removed']} of {record['heads_total']} heads removed")
        elif record["method"] == "movement":
            parts.append(f"movement pruning (unstructured, {record['steps']} steps against the teacher): "
                         f"{100 * record['encoder_linear_sparsity']:.1f}% of encoder weights zero; dense kernels do not skip zeros")
        return "; ".join(parts)
    if "placement" in record and "quantized_linears" in record:  # qat.json
        last = record["history"][-1] if record.get("history") else {}
        return (f"QAT int8 ({record['placement']}): {record['quantized_linears']} linear layers, {record['steps']} steps, "
                f"activation ranges frozen at step {record['observers_frozen_at_step']}, final loss {last.get('loss', 'n/a')}")
    if "layer_ids" in record:  # training.json of a distillation
        last = record["history"][-1] if record.get("history") else {}
        n = len(record["layer_ids"])
        return (f"{n} layer{'s' if n != 1 else ''} (from base layers {record['layer_ids']}), "
                f"{record['parameters']:,} parameters, {record['steps']} steps, final loss {last.get('loss', 'n/a')}")
    return ""


# recipes.measure.runners keys, and runtimes, whose latency is measured on the build host's CPU.
# (A TensorRT artifact whose engine is not timed here runs as its ONNX on ONNX Runtime's CPU provider: runner "onnx".)
CPU_RUNNERS = frozenset({"torch", "onnx", "nf4", "ptl", "pte", "torchscript", "openvino"})
CPU_RUNTIMES = frozenset({"onnxruntime", "openvino", "pytorch", "pytorch_lite", "executorch"})


def _both(precision: str) -> dict[str, str]:
    return {"linear": precision, "attention": precision}


def compute_precisions(precision: str, quantization: dict[str, Any] | None) -> dict[str, str]:
    """The precision the CPU computes an artifact's linear layers and its attention in.

    Only the arithmetic counts, not the storage: weight-only int4, nf4 and
    weight-compressed OpenVINO models dequantize their weights and multiply in
    fp32, and an fp16 graph on the CPU runs its MatMuls as fp32 (ONNX Runtime's
    x86 CPU provider has no fp16 GEMM), so they are held to the fp32 peak.
    Dynamic int8 (ONNX Runtime, PyTorch, .ptl) and 8-bit-activation int4
    (8da4w) quantize the weight MatMuls only: attention, between two
    activations, stays fp32 (ONNX Runtime's dynamic quantizer sets
    MatMulConstBOnly); so does QAT, which quantizes every nn.Linear. Static int8 and NNCF's post-training quantization
    quantize every MatMul they are given, attention included (NNCF's accuracy
    control may revert some to float: the floor is then optimistic).
    MatMulNBits' accuracy_level 4 computes in int8, 3 in bf16."""
    q = quantization or {}
    method = q.get("method")
    if precision == "bf16":
        return _both("bf16")
    if method in ("static", "nncf_ptq"):
        return _both("int8") if "MatMul" in q.get("op_types", ("MatMul",)) else _both("fp32")
    if method in ("dynamic", "8da4w", "qat"):
        return {"linear": "int8", "attention": "fp32"}
    if method == "weight_only":
        return {"linear": {4: "int8", 3: "bf16"}.get(q.get("accuracy_level"), "fp32"), "attention": "fp32"}
    return _both("fp32")  # fp32, fp16 on the CPU, nf4, weight_compression


def on_host_cpu(art: dict[str, Any]) -> bool:
    runner = art.get("runner")
    return runner in CPU_RUNNERS if runner else art.get("runtime") in CPU_RUNTIMES


def arithmetic(row: dict[str, Any], ops: dict[str, Any] | None, peaks: dict[str, dict[str, Any]],
               on_cpu: bool, quantization: dict[str, Any] | None) -> dict[str, Any]:
    """A row's arithmetic fields: ops, achieved GOPS, the floor and % of peak, per batch.

    floor = 2 x linear MACs / peak(linear precision) + 2 x attention MACs / peak(attention precision);
    % of peak = floor / measured latency (with one precision: achieved GOPS / peak GOPS)."""
    out: dict[str, Any] = {"on_host_cpu": on_cpu, "ops": {}, "gops": {}, "peak_gops": {}, "floor_ms": {}, "pct_of_peak": {}}
    if not on_cpu or ops is None:
        return out
    compute = compute_precisions(row["precision"], quantization)
    out["compute_precision"] = compute
    for b, ms in row["latency_ms"].items():
        counted = ops["batches"].get(b)
        if counted is None or not ms or ms <= 0:
            continue
        out["ops"][b] = counted["ops"]
        out["gops"][b] = round(counted["ops"] / (ms / 1e3) / 1e9, 3)
        floor_s = 0.0
        for part, macs in (("linear", counted["linear_macs"]), ("attention", counted["attention_macs"])):
            gops = peaks[compute[part]]["gops"]
            if not gops:
                floor_s = None
                break
            floor_s += 2 * macs / (gops * 1e9)
        if floor_s:
            out["floor_ms"][b] = round(floor_s * 1e3, 4)
            out["peak_gops"][b] = round(counted["ops"] / floor_s / 1e9, 3)
            out["pct_of_peak"][b] = round(floor_s * 1e3 / ms, 5)
    return out


def compute_summary(latency: dict[str, Any], ops: dict[str, Any]) -> dict[str, Any]:
    """The host, its peak per precision and each model's MAC count: what the formula paragraph prints."""
    host = latency.get("host") or host_cpu()  # the latency stage's record of its host, where it keeps one
    threads = int(latency["threads"])
    peaks = {p: peak(host, p, threads) for p in PRECISIONS}
    models = {name: {"sequence_length": o["sequence_length"], "per_example": o["per_example"],
                     "macs": {b: v["macs"] for b, v in o["batches"].items()},
                     "uncounted": o.get("uncounted", {})} for name, o in ops.items()}
    return {"host": host, "threads": threads, "peaks": peaks, "models": models}


def build_report(target: str, profile_source: str, teacher: dict[str, Any], artifacts: list[dict[str, Any]],
                 latency_path: str, models: dict[str, str] | None = None, ops: dict[str, str] | None = None,
                 parity_groups: dict[str, list[dict[str, Any]]] | None = None,
                 memory_path: str | None = None, task: str = "classification") -> dict[str, Any]:
    latency = _load(latency_path)
    memory = _load(memory_path) if memory_path else {"peak_mb": {}, "not_measured": {}}
    batches = [str(b) for b in sorted(int(b) for b in next(iter(latency["median_ms"].values())))]
    largest = batches[-1]
    t_metrics = _load(teacher["metrics"])
    t_latency = latency["median_ms"].get("teacher", {})
    counted = {name: _load(str(path)) for name, path in (ops or {}).items()}
    compute = compute_summary(latency, counted)
    rows = [{"name": "teacher", "format": teacher["format"], "precision": "fp32", "runtime": "pytorch",
             "model": "teacher", "lineage": "teacher",
             **t_metrics, **({"agreement": 1.0, "max_abs_logit_diff": 0.0} if task == "classification" else {}),
             "latency_ms": t_latency,
             "speedup": {b: 1.0 for b in t_latency}, "peak_memory_mb": memory["peak_mb"].get("teacher"),
             "gates": [], "gate_status": "-", "built": True}]
    rows[0].update(arithmetic(rows[0], counted.get("teacher"), compute["peaks"], True, None))
    # Sizes are compared with the teacher's fp32 ONNX model when the target
    # builds one, else with the teacher's checkpoint (nearly the same bytes).
    reference = next((a for a in artifacts if a["format"] == "onnx" and a["precision"] == "fp32"
                      and a.get("model", "teacher") == "teacher"), None)
    reference_size = _load(reference["metrics"])["size_bytes"] if reference else t_metrics["size_bytes"]
    reference_name = f"{reference['name']} (the teacher's fp32 ONNX)" if reference else "the teacher's fp32 checkpoint"
    failures, warnings = teacher_checks(teacher, t_metrics)
    for art in artifacts:
        m = _load(art["metrics"])
        lat = latency["median_ms"].get(art["name"], {})
        row = {"name": art["name"], "format": art["format"], "precision": art["precision"], "runtime": art["runtime"],
               "model": art.get("model", "teacher"), "lineage": art.get("lineage", "teacher"), "path": art.get("path"),
               "note": art.get("note", ""), **m, "latency_ms": lat, "built": True,
               "size_vs_fp32": round(m["size_bytes"] / reference_size, 4), "peak_memory_mb": memory["peak_mb"].get(art["name"]),
               "speedup": {b: round(t_latency[b] / lat[b], 3) for b in lat if b in t_latency and lat[b] > 0}}
        row.update(arithmetic(row, counted.get(row["model"]), compute["peaks"], on_host_cpu(art), art.get("quantization")))
        if art.get("details"):
            row["build"] = _load(art["details"])
            row["note"] = "; ".join(n for n in (row["note"], build_note(row["build"])) if n)
        if m.get("measured") is False:
            row.update({key: None for _, key, _ in TASKS[task].quality})
            row["note"] = "; ".join(n for n in (m["not_measured"], row["note"]) if n)
        elif art["name"] in memory.get("not_measured", {}):
            row["note"] = "; ".join(n for n in (row["note"], "peak memory " + memory["not_measured"][art["name"]]) if n)
        row["gates"] = check_gates(row, art["gates"], t_metrics.get("accuracy", 0.0), largest)
        row["gate_status"] = gate_status(row, art["gates"])
        failures += [f"{art['name']}: {g}" for g in row["gates"]]
        rows.append(row)
    parity = format_parity(parity_groups or {})
    failures += parity_failures(parity, {a["name"]: a["gates"].get("min_format_agreement") for a in artifacts})
    return {
        "target": target,
        "profile": profile_source,
        "task": task,
        "eval_examples": t_metrics["examples"],
        # Where the numbers came from, so tools (bench/sst2.py) can compare more artifacts on the same inputs.
        "inputs": {"teacher_dir": teacher.get("model_dir"), "data_dir": teacher.get("data_dir"),
                   "teacher_eval_dir": str(Path(teacher["metrics"]).parent)},
        "latency": {k: latency[k] for k in ("threads", "sequence_length", "repeats", "warmup")},
        "memory": {k: memory[k] for k in ("batch", "sequence_length", "threads", "method", "measured_on") if k in memory},
        # The machine latency was measured on (the build host, or the device's Ray node): the manifest's measured_on.
        "measured_on": latency.get("measured_on"),
        "batches": batches,
        "size_reference": reference_name,
        "models": {name: {"record": _load(path), "summary": model_summary(_load(path))} for name, path in (models or {}).items()},
        "compute": compute,
        "artifacts": rows,
        "parity": parity,
        "gate_failures": failures,
        "warnings": warnings,
    }


def teacher_checks(teacher: dict[str, Any], t_metrics: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The teacher's absolute gate, and loud warnings: a teacher no better than the majority class, the data stage's warnings."""
    failures, warnings = [], []
    floor = teacher.get("min_accuracy")
    if "accuracy" not in t_metrics:  # an embedding teacher: the reference itself, nothing to judge it by
        floor = None
    if floor is not None and t_metrics["accuracy"] < floor:
        failures.append(f"teacher: accuracy {t_metrics['accuracy']:.3f} < min_teacher_accuracy {floor}")
    majority = t_metrics.get("majority_accuracy")
    if majority is not None and t_metrics["accuracy"] <= majority:
        warnings.append(f"the teacher scores {t_metrics['accuracy']:.3f}, no better than always answering the most frequent "
                        f"label ({majority:.3f}): it learned nothing, and every gate relative to it is meaningless; check the "
                        "data and stages.finetune (epochs, learning_rate)")
    data_json = Path(teacher["data_dir"]) / "data.json" if teacher.get("data_dir") else None
    if data_json is not None and data_json.is_file():
        warnings += [str(w) for w in _load(str(data_json)).get("warnings", [])]
    return failures, warnings


def _diff(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def arithmetic_head(b: list[str]) -> list[str]:
    span = f"b{b[0]}" if len(b) == 1 else f"b{b[0]} / b{b[-1]}"
    return ["compute (linear/attn)", f"GOPS {span}", f"% of peak {span}"]


def arithmetic_cells(r: dict[str, Any], b: list[str]) -> list[str]:
    """The compute precision, achieved GOPS and % of peak cells of a row, at the first and last batch."""
    if not r.get("on_host_cpu"):
        return ["not on the host CPU", "-", "-"]
    ends = [b[0]] if len(b) == 1 else [b[0], b[-1]]
    compute = r.get("compute_precision")
    c = "-" if not compute else (compute["linear"] if compute["linear"] == compute["attention"]
                                 else f"{compute['linear']}/{compute['attention']}")
    gops = " / ".join(f"{r['gops'][x]:.1f}" if x in r.get("gops", {}) else "n/a" for x in ends)
    pct = " / ".join(f"{100 * r['pct_of_peak'][x]:.1f}%" if x in r.get("pct_of_peak", {}) else "n/a" for x in ends)
    return [c, gops, pct]


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _g(n: float) -> str:
    return f"{n / 1e9:.3f} G" if n >= 1e8 else f"{n / 1e6:.3f} M"


def arithmetic_text(report: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """(paragraphs, peak table rows, one line per model) of the report's arithmetic section."""
    c = report["compute"]
    host, peaks = c["host"], c["peaks"]
    fp32 = peaks["fp32"]
    features = ", ".join(host["features"]) if host.get("features") is not None else "unknown (not readable on this OS)"
    clock = f"{host['clock_ghz']} GHz ({host['clock_source']})" if host.get("clock_ghz") else "unknown"
    paragraphs = [
        "Achieved GOPS = 2 x MACs(batch, sequence) / median latency, with the MACs counted on each model's fp32 ONNX graph. "
        "Peak GOPS = cores x clock (GHz) x MACs/cycle/core(precision, CPU features) x 2. "
        "% of peak = arithmetic floor / median latency, where floor = 2 x linear-layer MACs / peak GOPS(precision of the "
        "linear layers) + 2 x attention MACs / peak GOPS(precision of the attention MatMuls); with one precision throughout "
        "this is achieved GOPS / peak GOPS. Compute: the precision the CPU multiplies in (linear/attention), not the storage "
        "precision: weight-only int4, nf4 and fp16 graphs on the CPU multiply in fp32; dynamic int8 leaves attention in fp32.",
        f"Host: {host.get('model_name', 'unknown')} ({host.get('arch')}); features used: {features}; "
        f"{_n(fp32['cores'], 'core')} counted ({_n(c['threads'], 'thread')} timed, {host.get('physical_cores')} physical "
        f"cores on the host); clock {clock}. "
        "The clock is nominal: turbo raises the real clock, AVX-512 and AMX frequency licences lower it, so % of peak is "
        "approximate. MACs/cycle assume two vector FMA units per core (arm64: two 128-bit pipes); the table's sources and "
        "assumptions are in recipes/measure/peak.py.",
        "Reading it: near 100%, the kernels already run the arithmetic at the hardware's rate, and the next gain is in the "
        "graph (fewer MACs: a smaller, distilled or pruned model, shorter sequences) or a cheaper precision. Far below, the "
        "time goes elsewhere (memory traffic, elementwise ops, framework overhead, kernels that miss the widest "
        "instructions), and the next gain is in the kernels and the runtime.",
    ]
    table = [[p, f"{v['macs_per_cycle']:g}" if v.get("macs_per_cycle") else "n/a",
              f"{v['gops']:.1f}" if v.get("gops") else "n/a", v.get("basis", "")] for p, v in peaks.items()]
    models = []
    for name, m in c["models"].items():
        e = m["per_example"]
        line = (f"`{name}`: {_g(e['macs'])} MACs per example at sequence {m['sequence_length']} (linear {_g(e['linear_macs'])}, "
                f"attention {_g(e['attention_macs'])}) = {_g(e['ops'])} ops; not counted: {_g(e['elementwise_elements'])} "
                "output elements of elementwise ops (embedding lookups, LayerNorm, softmax, GELU, bias and residual adds)")
        if m.get("uncounted"):
            line += f"; contractions not understood, left out: {m['uncounted']}"
        models.append(line)
    return paragraphs, table, models


def measured_where(report: dict[str, Any]) -> str:
    """Where latency was measured, for the report's prose: the build host (its CPU), or the Ray node that
    measured it (executor=ray sends measurements to the device's node)."""
    on = report.get("measured_on") or {}
    cpu = f" ({on['cpu']}, {on['arch']})" if on.get("cpu") else ""
    return f"{on['node']}{cpu}" if on.get("node") else f"the build host{cpu}"


def render_markdown(report: dict[str, Any]) -> str:
    b = report["batches"]
    lat = report["latency"]
    lines = [
        f"# edgesmith report: {report['target']}",
        "",
        f"Profile `{report['profile']}`; {report['eval_examples']} eval examples. Latency: median of "
        f"{lat['repeats']} runs after {lat['warmup']} warm-up runs, sequence length {lat['sequence_length']}, "
        f"{lat['threads']} threads, all artifacts timed side by side in interleaved rounds on {measured_where(report)}, "
        "each runtime in its own process." + _memory_sentence(report),
        "",
        "| artifact | model | format | precision | " + " | ".join(h for h, _, _ in TASKS[_task(report)].quality)
        + " | size MB | gzip MB | size vs fp32 | peak MiB | "
        + " | ".join(f"b{x} ms" for x in b) + " | " + " | ".join(f"speed-up b{x}" for x in b) + " | "
        + " | ".join(arithmetic_head(b)) + " | gates |",
        "|" + "---|" * (11 + 2 * len(b) + len(arithmetic_head(b)) + 1),
    ]
    lines[2:2] = [f"**WARNING: {w}**\n" for w in report.get("warnings", [])]
    for r in report["artifacts"]:
        cells = [
            r["name"], r["model"], r["format"], r["precision"], *quality_cells(report, r),
            f"{r['size_bytes'] / MB:.1f}", f"{r['compressed_bytes'] / MB:.1f}",
            f"{r['size_vs_fp32']:.2f}" if "size_vs_fp32" in r else "-", _mib(r.get("peak_memory_mb")),
        ]
        cells += [f"{r['latency_ms'][x]:.2f}" if x in r["latency_ms"] else "n/a" for x in b]
        cells += [f"{r['speedup'][x]:.2f}x" if x in r["speedup"] else "n/a" for x in b]
        cells += arithmetic_cells(r, b)
        cells.append(r.get("gate_status") or "-")
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", TASKS[_task(report)].quality_note + " "
              f"Size vs fp32: against {report['size_reference']}. Speed-up: teacher latency (PyTorch) / artifact latency.", ""]
    notes = [f"- `{r['name']}`: {r['note']}" for r in report["artifacts"] if r.get("note")]
    if notes:
        lines += ["## Notes", ""] + notes + [""]
    if report.get("compute"):
        paragraphs, peaks, models = arithmetic_text(report)
        lines += ["## Arithmetic peak", ""] + [p + "\n" for p in paragraphs]
        lines += ["| precision | MACs/cycle/core | peak GOPS | from |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(row) + " |" for row in peaks] + [""]
        lines += [f"- {m}" for m in models] + [""]
    lines += parity_markdown(report.get("parity") or {})
    lines += ["## Models", ""] + [f"- `{m}`: {lineage}" + _summary(report, m) for m, lineage in _lineages(report)] + [""]
    if report["gate_failures"]:
        lines += ["## Gate failures", ""] + [f"- {f}" for f in report["gate_failures"]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _task(report: dict[str, Any]) -> str:
    return report.get("task") or "classification"


def quality_cells(report: dict[str, Any], r: dict[str, Any]) -> list[str]:
    shown = {"pct": _pct, "diff": _diff}
    return [shown[how](r.get(key)) for _, key, how in TASKS[_task(report)].quality]


def _mib(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}"


def _memory_sentence(report: dict[str, Any]) -> str:
    mem = report.get("memory") or {}
    if "batch" not in mem:
        return ""
    return (f" Peak memory: resident memory (MiB) that loading the artifact and running batch {mem['batch']} at sequence "
            f"length {mem['sequence_length']} twice adds to a fresh process, over its baseline after importing the runtime "
            f"({'; '.join(mem.get('method') or [])}).")


def _summary(report: dict[str, Any], model: str) -> str:
    summary = report.get("models", {}).get(model, {}).get("summary")
    return f" ({summary})" if summary else ""


def _lineages(report: dict[str, Any]) -> list[tuple[str, str]]:
    seen: dict[str, str] = {}
    for r in report["artifacts"]:
        seen.setdefault(r["model"], r["lineage"])
    return list(seen.items())


def plot_png(report: dict[str, Any], dst: Path) -> None:
    """Accuracy (an embedding's recall@10) against batch-1 latency, size and peak memory, one point per artifact."""
    import matplotlib

    matplotlib.use("Agg")  # no display on build hosts
    import matplotlib.pyplot as plt

    fig, (ax_lat, ax_size, ax_mem) = plt.subplots(1, 3, figsize=(15, 4.5), dpi=100)
    key, label = TASKS[_task(report)].headline
    for r in report["artifacts"]:
        if r.get(key) is None:
            continue  # not measured on this host
        acc = 100 * r[key]
        marker = "*" if r["name"] == "teacher" else ("x" if r["gates"] else "o")
        if "1" in r["latency_ms"]:
            ax_lat.scatter(r["latency_ms"]["1"], acc, marker=marker, s=60)
            ax_lat.annotate(r["name"], (r["latency_ms"]["1"], acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        ax_size.scatter(r["size_bytes"] / MB, acc, marker=marker, s=60)
        ax_size.annotate(r["name"], (r["size_bytes"] / MB, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
        if r.get("peak_memory_mb") is not None:
            ax_mem.scatter(r["peak_memory_mb"], acc, marker=marker, s=60)
            ax_mem.annotate(r["name"], (r["peak_memory_mb"], acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax_lat.set_xlabel("batch-1 latency (ms, build host)")
    ax_size.set_xlabel("size (MB)")
    ax_mem.set_xlabel("peak memory (MiB over the runtime's baseline)")
    for ax in (ax_lat, ax_size, ax_mem):
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{report['target']}: {label.split(' (')[0]} vs latency, size and peak memory ({report['eval_examples']} eval examples; x = gate failed)")
    fig.tight_layout()
    with atomic_path(dst) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)


def render_html(report: dict[str, Any], png: Path) -> str:
    """A self-contained page: the plot inlined, then the markdown table as HTML."""
    import base64
    import html

    b = report["batches"]
    head = ["artifact", "model", "format", "precision", *(h for h, _, _ in TASKS[_task(report)].quality), "size MB",
            "gzip MB", "size vs fp32", "peak MiB"] + [f"b{x} ms" for x in b] + [f"speed-up b{x}" for x in b] + arithmetic_head(b) + ["gates"]
    rows = []
    for r in report["artifacts"]:
        cells = [r["name"], r["model"], r["format"], r["precision"], *quality_cells(report, r), f"{r['size_bytes'] / MB:.1f}", f"{r['compressed_bytes'] / MB:.1f}",
                 f"{r['size_vs_fp32']:.2f}" if "size_vs_fp32" in r else "-", _mib(r.get("peak_memory_mb"))]
        cells += [f"{r['latency_ms'][x]:.2f}" if x in r["latency_ms"] else "n/a" for x in b]
        cells += [f"{r['speedup'][x]:.2f}x" if x in r["speedup"] else "n/a" for x in b]
        cells += arithmetic_cells(r, b)
        cells.append(r.get("gate_status") or "-")
        cls = ' class="fail"' if r["gates"] else ""
        rows.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    lat = report["latency"]
    image = base64.b64encode(png.read_bytes()).decode("ascii")
    lineages = "".join(f"<li><code>{html.escape(m)}</code>: {html.escape(l + _summary(report, m))}</li>" for m, l in _lineages(report))
    failures = "".join(f"<li>{html.escape(f)}</li>" for f in report["gate_failures"])
    notes = "".join(f"<li><code>{html.escape(r['name'])}</code>: {html.escape(r['note'])}</li>" for r in report["artifacts"] if r.get("note"))
    notes_html = f"<h2>Notes</h2><ul>{notes}</ul>" if notes else ""
    arithmetic_html = ""
    if report.get("compute"):
        paragraphs, peaks, models = arithmetic_text(report)
        arithmetic_html = ("<h2>Arithmetic peak</h2>" + "".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
                           + "<table><tr><th>precision</th><th>MACs/cycle/core</th><th>peak GOPS</th><th>from</th></tr>"
                           + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in peaks)
                           + "</table><ul>" + "".join(f"<li>{html.escape(m)}</li>" for m in models) + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgesmith report: {html.escape(report['target'])}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child,td:nth-child(2){{text-align:left}}tr.fail{{background:#fdd}}</style></head><body>
<h1>edgesmith report: {html.escape(report['target'])}</h1>
<p>Profile <code>{html.escape(report['profile'])}</code>; {report['eval_examples']} eval examples. Latency: median of {lat['repeats']} runs
after {lat['warmup']} warm-up runs, sequence length {lat['sequence_length']}, {lat['threads']} threads, all artifacts timed side by side
in interleaved rounds on {html.escape(measured_where(report))}.{html.escape(_memory_sentence(report))}</p>
<img alt="accuracy against latency and size" src="data:image/png;base64,{image}">
<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>
{chr(10).join(rows)}
</table>
<p>{html.escape(TASKS[_task(report)].quality_note)} Size vs fp32: against {html.escape(report['size_reference'])}.
Speed-up: teacher latency (PyTorch) / artifact latency.</p>
{notes_html}{arithmetic_html}{parity_html(report.get("parity") or {})}<h2>Models</h2><ul>{lineages}</ul>
{'<h2>Gate failures</h2><ul>' + failures + '</ul>' if failures else ''}
</body></html>
"""


@dataclass(frozen=True)
class ReportArgs:
    target: str
    profile_source: Path
    # {"format", "metrics": Path, "model_dir": Path, "data_dir": Path}
    teacher: dict
    # One row per artifact: name, format, precision, runtime, runner (recipes.measure.runners key),
    # quantization (its quantize table or None), model, lineage, path,
    # note, details (Path or None), metrics (Path), gates (Gates as a table).
    artifacts: tuple[dict, ...]
    latency: Path
    memory: Path  # recipes/measure/memory.py's record: each artifact's peak memory
    # model name -> the training/pruning record of the stage that made it
    models: dict
    # model name -> its MAC count (recipes/measure/ops.py), for every model in the report, "teacher" included
    ops: dict
    # QAT model name -> its artifacts [{"name", "format", "metrics": Path, "note"}], when it ships in two or more formats
    parity_groups: dict
    out_json: Path
    out_md: Path
    out_html: Path
    out_png: Path
    task: str = "classification"


def build(args: ReportArgs) -> dict[str, Any]:
    source = args.profile_source.as_posix()
    report = build_report(args.target, source, args.teacher, list(args.artifacts), str(args.latency), args.models, args.ops,
                          args.parity_groups, str(args.memory), args.task)
    for warning in report["warnings"]:
        print(f"edgesmith: WARNING: {warning}", file=sys.stderr)
    write_json(args.out_json, report)
    with atomic_path(args.out_md) as tmp:
        tmp.write_text(render_markdown(report), encoding="utf-8")
    plot_png(report, args.out_png)
    with atomic_path(args.out_html) as tmp:
        tmp.write_text(render_html(report, args.out_png), encoding="utf-8")
    if report["gate_failures"]:
        first = report["gate_failures"][0]
        more = f" (and {len(report['gate_failures']) - 1} more)" if len(report["gate_failures"]) > 1 else ""
        raise GateError(f"{source}: quality gate failed: {first}{more}; see {args.out_md.as_posix()}")
    return report


STAGE = Stage("report", ReportArgs, build, modules=("measure.report", "measure.parity", "measure.peak", "params", "tasks",
                                                    "runtime.cpu_features"),
              packages=("matplotlib",))
