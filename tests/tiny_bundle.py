"""Build tiny, real edgesmith bundles in a few milliseconds, for tests.

The tokenizer is a genuine BERT-style WordPiece tokenizer and the models are
genuine ONNX graphs (embedding lookup, masked mean pooling, linear head), so
outputs depend on the text and padding must be handled correctly. Test-only:
uses onnx and tokenizers, never torch or transformers.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

REPO = Path(__file__).resolve().parents[1]
RUNTIME_SRC = REPO / "runtime"
SCHEMA = "edgesmith.bundle/1"

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = [
    "the", "a", "movie", "film", "was", "is", "not", "very", "and", "it", "i",
    "good", "great", "love", "loved", "excellent", "fun", "best",
    "bad", "awful", "hate", "boring", "worst", "terrible",
    "!", ".", ",", "##s", "##ly", "##ing",
]
VOCAB: Dict[str, int] = {token: i for i, token in enumerate(SPECIALS + WORDS)}


def make_tokenizer(directory: Path, *, padding: bool = True, max_length: int = 16) -> Path:
    """Write tokenizer.json (+ tokenizer_config.json) into `directory`; return tokenizer.json's path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(vocab=VOCAB, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])],
    )
    if padding:
        tok.enable_padding(pad_id=VOCAB["[PAD]"], pad_token="[PAD]")
    path = directory / "tokenizer.json"
    tok.save(str(path))
    config = {"tokenizer_class": "BertTokenizerFast", "model_max_length": max_length, "do_lower_case": True}
    if padding:
        config["pad_token"] = "[PAD]"
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def make_onnx_classifier(path: Path, vocab_size: int, num_labels: int = 2, *, hidden: int = 8, seed: int = 0,
                         token_type_ids: bool = True, static_shape: Optional[Tuple[int, int]] = None) -> Path:
    """Write a mean-pooling classifier: inputs input_ids, attention_mask[, token_type_ids]
    (int64 [batch, sequence]) -> logits float32 [batch, num_labels]."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.normal(size=(vocab_size, hidden)).astype(np.float32), "word_emb"),
        numpy_helper.from_array(rng.normal(size=(hidden, num_labels)).astype(np.float32), "w"),
        numpy_helper.from_array((0.1 * rng.normal(size=(num_labels,))).astype(np.float32), "b"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis2"),
        numpy_helper.from_array(np.array(1e-6, dtype=np.float32), "eps"),
    ]
    type_emb = (0.5 * rng.normal(size=(2, hidden))).astype(np.float32)  # drawn always: same weights either way
    nodes = [helper.make_node("Gather", ["word_emb", "input_ids"], ["tok"])]
    if token_type_ids:
        inits.append(numpy_helper.from_array(type_emb, "type_emb"))
        nodes += [helper.make_node("Gather", ["type_emb", "token_type_ids"], ["typ"]),
                  helper.make_node("Add", ["tok", "typ"], ["x"])]
    else:
        nodes += [helper.make_node("Identity", ["tok"], ["x"])]
    nodes += [
        helper.make_node("Cast", ["attention_mask"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["maskf", "axis2"], ["mask3"]),
        helper.make_node("Mul", ["x", "mask3"], ["xm"]),
        helper.make_node("ReduceSum", ["xm", "axis1"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "axis1"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["denom"]),
        helper.make_node("Div", ["summed", "denom"], ["pooled"]),
        helper.make_node("MatMul", ["pooled", "w"], ["mm"]),
        helper.make_node("Add", ["mm", "b"], ["logits"]),
    ]
    dims: List[Any] = list(static_shape) if static_shape else ["batch", "sequence"]
    names = ["input_ids", "attention_mask"] + (["token_type_ids"] if token_type_ids else [])
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in names]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [dims[0], num_labels])]
    graph = helper.make_graph(nodes, "tiny_classifier", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgesmith-tests")
    model.ir_version = 8  # old enough for any onnxruntime a device may have
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_entries(root: Path) -> List[Dict[str, Any]]:
    """The manifest "files" list: every file but manifest.json (and bytecode), sorted."""
    root = Path(root)
    rows = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json" or "__pycache__" in rel.split("/"):
            continue
        rows.append({"path": rel, "sha256": sha256_file(path), "size": path.stat().st_size})
    return rows


def read_manifest(root: Path) -> Dict[str, Any]:
    return json.loads((Path(root) / "manifest.json").read_text(encoding="utf-8"))


def write_manifest(root: Path, manifest: Dict[str, Any]) -> None:
    (Path(root) / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def refresh_files(root: Path) -> Dict[str, Any]:
    """Recompute "files" (and artifact sha256/size) after changing the bundle on purpose."""
    manifest = read_manifest(root)
    manifest["files"] = file_entries(root)
    by_path = {f["path"]: f for f in manifest["files"]}
    for artifact in manifest["artifacts"]:
        if artifact["path"] in by_path:
            artifact["sha256"] = by_path[artifact["path"]]["sha256"]
            artifact["size"] = by_path[artifact["path"]]["size"]
    write_manifest(root, manifest)
    return manifest


def write_bundle(root: Path, labels: Sequence[str] = ("negative", "positive"), *, max_length: int = 16,
                 copy_runtime: bool = True) -> Path:
    """A complete bundle directory with two ONNX artifacts:

    - fp32: takes input_ids, attention_mask and token_type_ids;
    - int8_dynamic (the default): same weights but no token_type_ids input, as
      DistilBERT-style exports have (so predictions differ slightly from fp32).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    make_tokenizer(root / "tokenizer", max_length=max_length)
    make_onnx_classifier(root / "models" / "fp32.onnx", len(VOCAB), len(labels))
    make_onnx_classifier(root / "models" / "int8_dynamic.onnx", len(VOCAB), len(labels), token_type_ids=False)
    if copy_runtime:
        shutil.copytree(RUNTIME_SRC, root / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    (root / "README.md").write_text("# tiny test bundle\n\n    python -m runtime . \"great movie\"\n", encoding="utf-8")
    seq = ["batch", "sequence"]
    files = file_entries(root)
    by_path = {f["path"]: f for f in files}

    def artifact(name: str, precision: str) -> Dict[str, Any]:
        path = f"models/{name}.onnx"
        return {"name": name, "path": path, "format": "onnx", "precision": precision, "runtime": "onnxruntime",
                "sha256": by_path[path]["sha256"], "size": by_path[path]["size"]}

    manifest = {
        "schema": SCHEMA,
        "target": "cpu",
        "model": {"name": "tiny-bert", "model_type": "bert", "labels": list(labels)},
        "tokenizer": {"path": "tokenizer/tokenizer.json", "max_length": max_length},
        "inputs": [{"name": n, "dtype": "int64", "shape": seq} for n in ("input_ids", "attention_mask", "token_type_ids")],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", len(labels)]}],
        "default_artifact": "int8_dynamic",
        "artifacts": [artifact("fp32", "fp32"), artifact("int8_dynamic", "int8")],
        "files": files,
    }
    write_manifest(root, manifest)
    return root


def make_tarball(root: Path, dest: Path) -> Path:
    """Archive the bundle's contents with member names relative to the bundle root."""
    root, dest = Path(root), Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            tar.add(path, arcname=path.relative_to(root).as_posix(), recursive=False)
    return dest
