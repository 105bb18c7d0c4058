"""The bitsandbytes nf4 checkpoint: which layers are quantized, the reload round
trip, the runner, determinism, and serving it with the gpu_server serve.py.

Runs on the CPU (bitsandbytes has CPU nf4 kernels). Needs bitsandbytes and
accelerate (transformers requires accelerate for 4-bit loading).
"""
from __future__ import annotations

import importlib.util
import json
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from tiny_bundle import (
    VOCAB,
    make_tokenizer,
    read_manifest,
    refresh_files,
    write_bundle,
    write_manifest,
)

from recipes.errors import StageError
from recipes.formats.quantize_nf4 import BLOCKSIZE, OUT_ALIGN, skip_reasons

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TEXTS = ["a great movie", "the worst film", "i loved it !", "not very good", "awful and boring", "the best film",
         "it was fun", "i hate it", ""]
HEAD = ("classifier.",)


def test_skip_reasons():
    assert skip_reasons("bert.encoder.layer.0.attention.self.query", 384, 384, HEAD) == []
    assert skip_reasons("bert.encoder.layer.0.intermediate.dense", 384, 1536, HEAD) == []
    assert skip_reasons("bert.encoder.layer.0.output.dense", 1536, 384, HEAD) == []
    head = skip_reasons("classifier", 384, 2, HEAD)
    assert len(head) == 2 and head[0].startswith("classification head") and f"not a multiple of {OUT_ALIGN}" in head[1]
    assert skip_reasons("classifier.dense", 768, 768, HEAD)[0].startswith("classification head")  # RoBERTa's head
    assert skip_reasons("pre_classifier", 768, 768, ("classifier.", "pre_classifier.")) != []   # DistilBERT's
    assert skip_reasons("classifier_extra", 768, 768, HEAD) == []  # a prefix match needs the dot
    assert skip_reasons("x.dense", 32, 64, HEAD) == [f"in_features 32 is not a multiple of the 4-bit block size {BLOCKSIZE}"]


needs_nf4 = pytest.mark.skipif(
    not (importlib.util.find_spec("bitsandbytes") and importlib.util.find_spec("accelerate")),
    reason="needs bitsandbytes and accelerate (transformers loads bitsandbytes 4-bit models through accelerate)")


def make_model(directory: Path, *, hidden: int, intermediate: int, seed: int = 0) -> Path:
    """A one-off tiny BERT classifier on tiny_bundle's tokenizer (so it fits a tiny bundle)."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=len(VOCAB), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=intermediate, max_position_embeddings=64,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory, safe_serialization=True)
    make_tokenizer(directory, max_length=16)
    return directory


def write_eval(path: Path) -> Path:
    path.write_text("".join(json.dumps({"id": f"e{i}", "text": t, "label": "positive"}) + "\n" for i, t in enumerate(TEXTS)))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """hidden 64, intermediate 96: the FFN output layer (in_features 96) and the head stay full precision."""
    from recipes.formats.quantize_nf4 import Nf4, Nf4Args, build

    root = tmp_path_factory.mktemp("nf4")
    model = make_model(root / "fp32", hidden=64, intermediate=96)
    eval_jsonl = write_eval(root / "eval.jsonl")
    build(Nf4Args(model, root / "nf4", root / "nf4.json", Nf4("nf4", double_quant=True, samples=64), tuple(INPUTS),
                  model / "tokenizer.json", 16, eval_jsonl))
    return root, json.loads((root / "nf4.json").read_text())


@needs_nf4
def test_quantized_and_skipped_modules(built):
    root, report = built
    skipped = {s["name"]: s for s in report["skipped_modules"]}
    assert sorted(skipped) == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense", "classifier"]
    assert skipped["bert.encoder.layer.0.output.dense"]["reasons"] == [f"in_features 96 is not a multiple of the 4-bit block size {BLOCKSIZE}"]
    assert skipped["classifier"]["out_features"] == 2 and skipped["classifier"]["reasons"][0].startswith("classification head")
    layer = [f"bert.encoder.layer.0.{m}" for m in ("attention.output.dense", "attention.self.key", "attention.self.query",
                                                    "attention.self.value", "intermediate.dense")]
    assert set(layer) < set(report["quantized_modules"]) and "bert.pooler.dense" in report["quantized_modules"]
    assert len(report["quantized_modules"]) == 11
    config = json.loads((root / "nf4" / "config.json").read_text())["quantization_config"]
    assert config["bnb_4bit_quant_type"] == "nf4" and config["load_in_4bit"] is True
    assert config["bnb_4bit_use_double_quant"] is True and config["bnb_4bit_compute_dtype"] == "float16"
    assert sorted(config["llm_int8_skip_modules"]) == sorted(skipped)


@needs_nf4
def test_hidden_32_keeps_most_layers_in_full_precision(tmp_path):
    # tests/tiny_model.py's shape (hidden 32, intermediate 64): only the FFN output (in_features 64) can be nf4.
    from recipes.models.hf import load_classifier
    from recipes.formats.quantize_nf4 import plan_skips

    skipped, quantized = plan_skips(load_classifier(make_model(tmp_path / "m", hidden=32, intermediate=64)), HEAD)
    assert quantized == ["bert.encoder.layer.0.output.dense", "bert.encoder.layer.1.output.dense"]
    assert len(skipped) == 12  # 5 per layer, the pooler and the head


@needs_nf4
def test_output_directory_and_report(built):
    root, report = built
    out = root / "nf4"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "manifest.json", "model.safetensors",
                                                     "tokenizer.json", "tokenizer_config.json"]
    listed = {f["path"] for f in json.loads((out / "manifest.json").read_text())["files"]}
    assert listed == {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"}
    assert report["nf4_bytes"] == (out / "model.safetensors").stat().st_size < report["fp32_bytes"]
    assert report["reload_max_abs_diff"] <= 1e-5
    cpu = report["verification"]["cpu"]
    assert report["verification"]["texts"] == len(TEXTS) and cpu["compute_dtype"] == "float32"
    assert 0 <= cpu["max_abs_logit_diff"] < 0.5 and 0 <= cpu["mean_abs_logit_diff"] <= cpu["max_abs_logit_diff"]
    assert 0.5 <= cpu["agreement"] <= 1
    assert set(report["versions"]) == {"torch", "transformers", "bitsandbytes", "accelerate"}
    assert not list(root.glob(".*.tmp"))  # atomic_dir left no temporaries


@needs_nf4
def test_runner_reloads_the_checkpoint(built):
    import bitsandbytes as bnb
    import torch

    from recipes.measure.nf4_runner import Nf4Runner, linear_layers
    from recipes.measure.runners import TorchRunner
    from recipes.textenc import Encoder

    root, report = built
    runner = Nf4Runner(root / "nf4", INPUTS, threads=1)
    kinds = linear_layers(runner.model)
    assert sorted(n for n, k in kinds.items() if k == "nf4") == report["quantized_modules"]
    assert all(m.compute_dtype == torch.float32 for m in runner.model.modules() if isinstance(m, bnb.nn.Linear4bit))
    feeds = Encoder(root / "fp32" / "tokenizer.json", 16).encode(TEXTS, INPUTS)
    logits = runner(feeds)
    assert logits.shape == (len(TEXTS), 2) and logits.dtype == np.float32
    reference = TorchRunner(root / "fp32", INPUTS)(feeds)
    assert np.abs(logits - reference).max() == pytest.approx(report["verification"]["cpu"]["max_abs_logit_diff"], abs=1e-6)


@needs_nf4
def test_checkpoint_bytes_are_reproducible(built, tmp_path):
    from recipes.wiring.profile import Nf4
    from recipes.formats.quantize_nf4 import quantize_nf4

    root, _ = built
    again = tmp_path / "again"
    quantize_nf4(root / "fp32", again, tmp_path / "again.json", Nf4("nf4", double_quant=True), input_names=INPUTS,
                 tokenizer_json=root / "fp32" / "tokenizer.json", max_length=16, texts=TEXTS[:2])
    for name in ("model.safetensors", "config.json", "manifest.json"):
        assert (again / name).read_bytes() == (root / "nf4" / name).read_bytes(), name


@needs_nf4
def test_bad_arguments(built, tmp_path):
    from recipes.wiring.profile import Nf4
    from recipes.formats.quantize_nf4 import quantize_nf4

    root, _ = built
    common = dict(input_names=INPUTS, tokenizer_json=root / "fp32" / "tokenizer.json", max_length=16)
    with pytest.raises(StageError, match="compute_dtype 'int4'"):
        quantize_nf4(root / "fp32", tmp_path / "x", tmp_path / "x.json", Nf4("nf4"), texts=TEXTS, compute_dtype="int4", **common)
    with pytest.raises(StageError, match="no verification texts"):
        quantize_nf4(root / "fp32", tmp_path / "x", tmp_path / "x.json", Nf4("nf4"), texts=[], **common)
    with pytest.raises(StageError, match="no Linear layer .* can be quantized"):
        quantize_nf4(make_model(tmp_path / "narrow", hidden=32, intermediate=32), tmp_path / "x", tmp_path / "x.json",
                     Nf4("nf4"), texts=TEXTS, **common)
    assert not (tmp_path / "x").exists()


@needs_nf4
def test_serve_the_nf4_checkpoint(built, tmp_path):
    """The torch backend of serve.py: an nf4 artifact in a bundle, on the CPU."""
    from test_gpu_server_stub import start_server, stop_server, stub_context

    from recipes.measure.nf4_runner import Nf4Runner
    from recipes.package.stubs import render_to
    from recipes.textenc import Encoder
    from runtime.onnx_classifier import softmax

    root, _ = built
    bundle = write_bundle(tmp_path / "bundle")
    shutil.copytree(root / "nf4", bundle / "models" / "nf4", ignore=shutil.ignore_patterns("manifest.json"))
    manifest = read_manifest(bundle)
    manifest["artifacts"].append({"name": "nf4", "format": "torch", "precision": "nf4", "runtime": "pytorch",
                                  "path": "models/nf4/model.safetensors"})
    write_manifest(bundle, manifest)
    render_to("gpu_server/serve.py", stub_context(bundle), bundle / "serve.py")
    refresh_files(bundle)
    log = tmp_path / "server.log"
    proc, base = start_server(bundle, log, "--artifact", "nf4", "--artifact", "fp32", "--device", "cpu", "--threads", "1",
                              "--max-batch", "16")
    try:
        request = urllib.request.Request(base + "/predict", data=json.dumps({"texts": TEXTS}).encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.loads(response.read())
        with urllib.request.urlopen(base + "/metadata", timeout=60) as response:
            meta = {a["name"]: a for a in json.loads(response.read())["artifacts"]}
    finally:
        text = stop_server(proc, log)
    assert "Traceback" not in text
    assert body["artifact"] == "nf4" and len(body["predictions"]) == len(TEXTS)
    assert meta["nf4"]["backend"] == "torch" and meta["nf4"]["device"] == "cpu" and meta["nf4"]["quantization"] == "nf4"
    # The bundle's tokenizer is the model's (same vocabulary), so the runner sees the same ids.
    probs = softmax(Nf4Runner(root / "nf4", INPUTS)(Encoder(bundle / "tokenizer" / "tokenizer.json", 16).encode(TEXTS, INPUTS)))
    for got, row in zip(body["predictions"], probs):
        assert [got["scores"]["negative"], got["scores"]["positive"]] == pytest.approx(row.tolist(), abs=1e-5)
