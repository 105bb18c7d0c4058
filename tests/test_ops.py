"""MAC counts from the ONNX graph, the CPU peak table, and the report's arithmetic columns (no timings)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from recipes.measure import peak as peak_table
from recipes.measure.ops import count
from recipes.measure.peak import macs_per_cycle, peak, tier_for
from recipes.measure.report import build_report, compute_precisions, render_html, render_markdown

NAMES = ("input_ids", "attention_mask", "token_type_ids")


def closed_form(cfg: dict, batch: int, seq: int) -> tuple[int, int]:
    """(linear, attention) MACs of a BERT classifier: per layer per token 4h^2 (Q, K, V, output) + 2h*ffn,
    attention 2*seq*h per token (Q.K^T and probabilities.V over all heads); the pooler (h^2) and the
    classifier (h * labels) once per example."""
    h, f, layers, labels = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], len(cfg["id2label"])
    linear = batch * (layers * seq * (4 * h * h + 2 * h * f) + h * h + h * labels)
    attention = batch * layers * seq * 2 * seq * h
    return linear, attention


@pytest.fixture(scope="module")
def exported(tmp_path_factory, exported_classifier):
    root = exported_classifier(3, tmp_path_factory.mktemp("ops"))
    return json.loads((root / "m" / "config.json").read_text()), root / "fp32.onnx"


def test_mac_count_of_a_tiny_bert_is_the_closed_form(exported, tmp_path):
    cfg, onnx_path = exported
    out = count(onnx_path, (1, 3), 40, tmp_path / "ops.json")
    assert json.loads((tmp_path / "ops.json").read_text()) == out
    for b in (1, 3):
        got = out["batches"][str(b)]
        linear, attention = closed_form(cfg, b, 40)
        assert (got["linear_macs"], got["attention_macs"]) == (linear, attention)
        assert got["macs"] == linear + attention and got["ops"] == 2 * (linear + attention)
        # per layer: Q, K, V, output, two FFN MatMuls, Q.K^T, probabilities.V; the pooler and classifier Gemms
        assert got["contractions"] == {"MatMul": 8 * cfg["num_hidden_layers"], "Gemm": 2} and got["uncounted"] == {}
        assert got["elementwise_elements"] > 0
    assert out["per_example"]["macs"] == sum(closed_form(cfg, 1, 40))


def test_attention_grows_with_the_square_of_the_sequence(exported, tmp_path):
    cfg, onnx_path = exported
    short = count(onnx_path, (1,), 16, tmp_path / "a.json")["batches"]["1"]
    long = count(onnx_path, (1,), 32, tmp_path / "b.json")["batches"]["1"]
    assert long["attention_macs"] == 4 * short["attention_macs"]
    assert (long["linear_macs"], short["linear_macs"]) == (closed_form(cfg, 1, 32)[0], closed_form(cfg, 1, 16)[0])


X86_AVX2 = {"sse4_2", "avx", "avx2", "fma", "f16c"}
X86_SKX = X86_AVX2 | {"avx512f", "avx512bw", "avx512vl"}
X86_CLX = X86_SKX | {"avx512_vnni"}
X86_SPR = X86_CLX | {"avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16"}


def mpc(precision: str, features: set[str], arch: str = "x86_64", name: str = "") -> float:
    return macs_per_cycle(arch, precision, features, name)[0]


def test_int8_tiers_order_amx_over_vnni_over_avx2():
    assert mpc("int8", X86_SPR) == 1024 > mpc("int8", X86_CLX) == 128 > mpc("int8", X86_SKX) > mpc("int8", X86_AVX2) == 32
    assert mpc("int8", X86_AVX2 | {"avx_vnni"}) == 64
    assert mpc("bf16", X86_SPR) == 512 > mpc("bf16", X86_CLX | {"avx512_bf16"}) == 64
    assert mpc("fp32", X86_SPR) == mpc("fp32", X86_SKX) == 32 > mpc("fp32", X86_AVX2) == 16
    assert mpc("int8", {"asimd", "asimddp", "i8mm"}, "arm64") == 64 > mpc("int8", {"asimd", "asimddp"}, "arm64") == 32
    assert mpc("int8", {"asimd"}, "arm64") < mpc("int8", {"asimd", "asimddp"}, "arm64")


def test_missing_features_give_the_lower_tier():
    assert mpc("int8", X86_SPR - {"amx_tile"}) == 128          # AMX needs the tile unit too
    assert mpc("int8", X86_AVX2 | {"avx512f"}) == 32            # AVX-512 without BW or VNNI: the AVX2 path
    assert mpc("fp32", {"avx", "avx2"}) == 8                    # no FMA
    assert mpc("fp32", set()) == 4
    value, how = macs_per_cycle("x86_64", "bf16", X86_AVX2)
    assert value == 16 and how.startswith("no bf16 instructions, runs as fp32")
    assert tier_for("x86_64", "bf16", X86_AVX2).precision == "fp32"
    assert mpc("bf16", {"asimd"}, "arm64") == mpc("fp32", {"asimd"}, "arm64")
    # Zen 4 runs 512-bit instructions on 256-bit datapaths; Zen 5 (with AVX-VNNI) does not.
    assert mpc("fp32", X86_CLX, name="AMD EPYC 9654 96-Core Processor") == 16
    assert mpc("fp32", X86_CLX | {"avx_vnni"}, name="AMD EPYC 9755 128-Core Processor") == 32
    assert mpc("fp32", X86_AVX2, name="AMD EPYC") == 16


def test_peak_uses_threads_capped_at_physical_cores_and_the_clock():
    host = {"arch": "x86_64", "model_name": "Intel(R) Xeon(R) Platinum 8480+", "features": sorted(X86_SPR),
            "clock_ghz": 2.0, "clock_source": "test", "physical_cores": 56}
    assert peak(host, "int8", 8)["gops"] == 8 * 2.0 * 1024 * 2
    assert peak(host, "fp32", 112)["cores"] == 56
    assert peak({**host, "features": None}, "fp32", 4)["gops"] is None
    assert peak({**host, "clock_ghz": None}, "fp32", 4)["gops"] is None


def test_host_description_reads_without_error():
    host = peak_table.host_cpu()
    assert host["physical_cores"] >= 1 and host["arch"]
    assert host["features"] is None or set(host["features"]) <= set(peak_table.relevant_features(host["arch"]))


def test_compute_precision_is_that_of_the_arithmetic():
    assert compute_precisions("fp32", None) == {"linear": "fp32", "attention": "fp32"}
    assert compute_precisions("fp16", {"method": "fp16"}) == {"linear": "fp32", "attention": "fp32"}
    assert compute_precisions("int8", {"method": "dynamic"}) == {"linear": "int8", "attention": "fp32"}
    assert compute_precisions("int8", {"method": "static", "op_types": ["MatMul"]}) == {"linear": "int8", "attention": "int8"}
    assert compute_precisions("int4", {"method": "weight_only", "accuracy_level": 4})["linear"] == "int8"
    assert compute_precisions("int4", {"method": "weight_only", "accuracy_level": 1})["linear"] == "fp32"
    assert compute_precisions("nf4", {"method": "nf4"})["linear"] == "fp32"
    assert compute_precisions("bf16", None) == {"linear": "bf16", "attention": "bf16"}
    assert compute_precisions("int8", {"method": "nncf_ptq"}) == {"linear": "int8", "attention": "int8"}
    assert compute_precisions("int8", {"method": "weight_compression", "mode": "int8_asym"})["linear"] == "fp32"


def _write(path: Path, value) -> str:
    path.write_text(json.dumps(value))
    return str(path)


def test_report_rows_carry_gops_and_percent_of_peak_with_the_formula(tmp_path):
    metrics = {"examples": 10, "accuracy": 0.9, "majority_accuracy": 0.5, "size_bytes": 4_000_000, "compressed_bytes": 3_000_000}
    host = {"arch": "x86_64", "model_name": "Test CPU", "features": sorted(X86_CLX), "clock_ghz": 2.5,
            "clock_source": "test", "physical_cores": 4}
    latency = {"threads": 2, "sequence_length": 128, "repeats": 3, "warmup": 1, "rounds": 3, "host": host,
               "median_ms": {"teacher": {"1": 10.0, "32": 200.0}, "fp32": {"1": 8.0, "32": 160.0},
                             "int8": {"1": 4.0, "32": 50.0}, "trt": {"1": 1.0, "32": 2.0}}}
    batches = {b: {"batch": int(b), "sequence_length": 128, "macs": int(b) * 1_000_000_000, "ops": int(b) * 2_000_000_000,
                   "linear_macs": int(b) * 900_000_000, "attention_macs": int(b) * 100_000_000, "conv_macs": 0,
                   "elementwise_elements": int(b) * 10_000_000, "uncounted": {}} for b in ("1", "32")}
    ops = {"sequence_length": 128, "batches": batches, "uncounted": {},
           "per_example": {k: batches["1"][k] for k in ("macs", "ops", "linear_macs", "attention_macs", "elementwise_elements")}}
    common = {"model": "teacher", "lineage": "teacher", "path": "x", "note": "", "details": None, "gates": {},
              "metrics": _write(tmp_path / "m.json", metrics)}
    artifacts = [
        {**common, "name": "fp32", "format": "onnx", "precision": "fp32", "runtime": "onnxruntime", "runner": "onnx",
         "quantization": None},
        {**common, "name": "int8", "format": "onnx", "precision": "int8", "runtime": "onnxruntime", "runner": "onnx",
         "quantization": {"method": "dynamic"}},
        {**common, "name": "trt", "format": "tensorrt", "precision": "fp16", "runtime": "tensorrt", "runner": "tensorrt_gpu",
         "quantization": {"method": "fp16"}},
    ]
    report = build_report("t", "targets/t.toml", {"format": "torch", "metrics": common["metrics"]}, artifacts,
                          _write(tmp_path / "latency.json", latency), {}, {"teacher": _write(tmp_path / "ops.json", ops)})
    rows = {r["name"]: r for r in report["artifacts"]}
    fp32_peak = 2 * 2.5 * 32 * 2           # 2 threads x 2.5 GHz x 32 MACs/cycle x 2 ops = 320 GOPS
    int8_peak = 2 * 2.5 * 128 * 2          # VNNI: 1280 GOPS
    assert report["compute"]["peaks"]["fp32"]["gops"] == fp32_peak and report["compute"]["peaks"]["int8"]["gops"] == int8_peak
    assert rows["fp32"]["gops"] == {"1": 250.0, "32": 400.0}                      # 2 G ops / 8 ms; 64 G ops / 160 ms
    assert rows["fp32"]["pct_of_peak"]["1"] == pytest.approx(250.0 / fp32_peak)
    assert rows["teacher"]["gops"]["1"] == 200.0 and rows["teacher"]["compute_precision"]["linear"] == "fp32"
    # Dynamic int8: linear layers at the int8 peak, attention at fp32's.
    floor_s = 2 * 0.9e9 / (int8_peak * 1e9) + 2 * 0.1e9 / (fp32_peak * 1e9)
    assert rows["int8"]["floor_ms"]["1"] == pytest.approx(floor_s * 1e3, rel=1e-4)
    assert rows["int8"]["pct_of_peak"]["1"] == pytest.approx(floor_s * 1e3 / 4.0, rel=1e-3)
    assert rows["int8"]["compute_precision"] == {"linear": "int8", "attention": "fp32"}
    assert rows["trt"]["on_host_cpu"] is False and rows["trt"]["gops"] == {}

    md = render_markdown(report)
    assert "## Arithmetic peak" in md and "Achieved GOPS = 2 x MACs(batch, sequence) / median latency" in md
    assert "Peak GOPS = cores x clock (GHz) x MACs/cycle/core(precision, CPU features) x 2" in md
    assert "Test CPU" in md and "avx512_vnni" in md and "2.5 GHz" in md
    assert "| GOPS b1 / b32 | % of peak b1 / b32 |" in md
    assert "| 250.0 / 400.0 | 78.1% / 125.0% |" in md          # a peak that is beaten says the model is wrong: shown as is
    assert "not on the host CPU" in md
    header, rule = [line for line in md.splitlines() if line.startswith("| artifact") or line.startswith("|---")][:2]
    assert header.count("|") == rule.count("|")
    png = tmp_path / "r.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    page = render_html(report, png)
    assert "Arithmetic peak" in page and "% of peak b1 / b32" in page


def test_clock_prefers_the_nominal_clock(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("model name\t: Intel(R) Xeon(R) Platinum 8480+ @ 2.00GHz\ncpu MHz\t\t: 3800.000\n")
    assert peak_table.clock_ghz(cpuinfo, tmp_path / "none") == (2.0, "the nominal clock in the CPU's model name")
    cpuinfo.write_text("model name\t: AMD EPYC 9654 96-Core Processor\ncpu MHz\t\t: 3700.000\n")
    (tmp_path / "cpu0" / "cpufreq").mkdir(parents=True)
    assert peak_table.clock_ghz(cpuinfo, tmp_path)[0] == 3.7          # no nominal clock: cpu MHz as read
    (tmp_path / "cpu0" / "cpufreq" / "amd_pstate_nominal_freq").write_text("2400000\n")
    assert peak_table.clock_ghz(cpuinfo, tmp_path) == (2.4, "cpufreq amd_pstate_nominal_freq")
