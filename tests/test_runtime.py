"""Tests for the on-device runtime (runtime/): opening, verifying, classifying, CLI."""
from __future__ import annotations

import ast
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest

import runtime
from runtime import Bundle, BundleError, Classifier, load_bundle
from runtime.cli import main as cli_main
from tiny_bundle import (RUNTIME_SRC, VOCAB, make_onnx_classifier, make_tarball, make_tokenizer,
                         read_manifest, refresh_files, write_bundle, write_manifest)

REPO = RUNTIME_SRC.parent
TEXTS = ["great movie", "awful boring film", "i loved it !", "the worst and terrible", "", "not very good"]


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Archive extractions land in a per-test temp dir, so leaks and escapes are observable."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return scratch


@pytest.fixture
def bundle_dir(tmp_path: Path) -> Path:
    return write_bundle(tmp_path / "bundle")


def one_line(exc: BaseException) -> str:
    message = str(exc)
    assert "\n" not in message
    return message


# --- loading -----------------------------------------------------------------


def test_dir_and_targz_give_same_predictions(bundle_dir: Path, tmp_path: Path, private_tmp: Path) -> None:
    archive = make_tarball(bundle_dir, tmp_path / "bundle.tar.gz")
    expected = load_bundle(bundle_dir).classifier().predict(TEXTS)
    with load_bundle(archive) as bundle:
        assert isinstance(bundle, Bundle)
        assert bundle.root.parent == private_tmp and bundle.root != bundle_dir
        got = bundle.classifier().predict(TEXTS)
        assert bundle.source == archive
    assert got == expected
    assert list(private_tmp.iterdir()) == []  # close() removed the extraction


def test_tgz_suffix_and_close_keeps_classifier(bundle_dir: Path, tmp_path: Path) -> None:
    bundle = load_bundle(make_tarball(bundle_dir, tmp_path / "b.tgz"))
    classifier = bundle.classifier()
    bundle.close()
    assert not bundle.root.exists() and bundle.closed
    assert len(classifier.predict(["great"])) == 1  # model and tokenizer live in memory
    with pytest.raises(BundleError, match="closed"):
        bundle.classifier()


def test_bundle_properties(bundle_dir: Path) -> None:
    bundle = load_bundle(str(bundle_dir))
    assert bundle.root == bundle_dir
    assert bundle.labels == ["negative", "positive"]
    assert [a["name"] for a in bundle.artifacts] == ["fp32", "int8_dynamic"]
    assert bundle.default_artifact == "int8_dynamic"
    assert bundle.artifact("fp32")["path"] == "models/fp32.onnx"
    assert bundle.manifest["target"] == bundle.target == "cpu"
    assert runtime.__version__ == "0.1.0"


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="no such file or directory"):
        load_bundle(tmp_path / "nope")


def test_not_an_archive(tmp_path: Path, private_tmp: Path) -> None:
    junk = tmp_path / "bundle.tar.gz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(BundleError, match="cannot extract the archive") as info:
        load_bundle(junk)
    one_line(info.value)
    assert list(private_tmp.iterdir()) == []


# --- manifest validation ---------------------------------------------------------------


def test_missing_manifest(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").unlink()
    with pytest.raises(BundleError, match="manifest.json not found") as info:
        load_bundle(bundle_dir)
    assert str(bundle_dir) in one_line(info.value)


def test_archive_of_directory_instead_of_contents_gets_a_hint(bundle_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "wrapped.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir, arcname="bundle")
    with pytest.raises(BundleError, match=r"relative to the bundle root .*'bundle/manifest.json'"):
        load_bundle(archive)


def test_invalid_json(bundle_dir: Path) -> None:
    (bundle_dir / "manifest.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle_dir)


@pytest.mark.parametrize("schema", ["other.bundle/1", 3, None])
def test_bad_schema(bundle_dir: Path, schema: object) -> None:
    manifest = read_manifest(bundle_dir)
    if schema is None:
        del manifest["schema"]
    else:
        manifest["schema"] = schema
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match="'schema'") as info:
        load_bundle(bundle_dir)
    one_line(info.value)


@pytest.mark.parametrize("key", ["model.labels", "tokenizer.max_length", "tokenizer.path", "artifacts",
                                 "default_artifact", "files", "model"])
def test_missing_required_key_is_named(bundle_dir: Path, key: str) -> None:
    manifest = read_manifest(bundle_dir)
    *parents, leaf = key.split(".")
    node = manifest
    for part in parents:
        node = node[part]
    del node[leaf]
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match=f"'{key}' is missing"):
        load_bundle(bundle_dir, verify=False)


@pytest.mark.parametrize("bad", ["../outside.onnx", "/etc/passwd", "models/../../x", "models\\fp32.onnx", "./models/fp32.onnx"])
def test_manifest_paths_must_stay_inside(bundle_dir: Path, bad: str) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["artifacts"][0]["path"] = bad
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match=r"'artifacts\[0\]\.path'"):
        load_bundle(bundle_dir)


def test_artifact_not_covered_by_files(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["files"] = [f for f in manifest["files"] if f["path"] != "models/fp32.onnx"]
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match=r"'models/fp32.onnx', which is not listed in \"files\""):
        load_bundle(bundle_dir)


def test_artifact_sha_must_match_files_entry(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["artifacts"][1]["sha256"] = "0" * 64
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match=r"'artifacts\[1\]\.sha256' does not match"):
        load_bundle(bundle_dir)


def test_default_artifact_must_exist(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["default_artifact"] = "fp16"
    write_manifest(bundle_dir, manifest)
    with pytest.raises(BundleError, match="available: fp32, int8_dynamic"):
        load_bundle(bundle_dir)


def test_unknown_manifest_keys_are_ignored(bundle_dir: Path) -> None:
    manifest = read_manifest(bundle_dir)
    manifest["future_key"] = {"anything": [1, 2]}
    manifest["artifacts"][0]["calibration"] = "whatever"
    write_manifest(bundle_dir, manifest)
    assert load_bundle(bundle_dir).labels == ["negative", "positive"]


# --- verification --------------------------------------------------------------------


def test_tampered_artifact_byte(bundle_dir: Path) -> None:
    model = bundle_dir / "models" / "fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(BundleError) as info:
        load_bundle(bundle_dir)
    message = one_line(info.value)
    assert f"bundle {bundle_dir}: models/fp32.onnx sha256 mismatch (manifest " in message
    assert "rebuild it or copy it again" in message
    load_bundle(bundle_dir, verify=False)  # explicit opt-out skips hashing


def test_missing_file(bundle_dir: Path) -> None:
    (bundle_dir / "tokenizer" / "tokenizer_config.json").unlink()
    with pytest.raises(BundleError, match="tokenizer/tokenizer_config.json is missing"):
        load_bundle(bundle_dir)


def test_size_mismatch(bundle_dir: Path) -> None:
    with open(bundle_dir / "models" / "int8_dynamic.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match=r"models/int8_dynamic.onnx size mismatch \(manifest \d+ bytes, file \d+ bytes\)"):
        load_bundle(bundle_dir)


def test_unlisted_extra_files_are_ignored(bundle_dir: Path) -> None:
    (bundle_dir / "runtime" / "__pycache__").mkdir()
    (bundle_dir / "runtime" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    load_bundle(bundle_dir)


def test_tampered_archive_member(bundle_dir: Path, tmp_path: Path, private_tmp: Path) -> None:
    (bundle_dir / "tokenizer" / "tokenizer.json").write_text("{}", encoding="utf-8")
    archive = make_tarball(bundle_dir, tmp_path / "b.tar.gz")
    with pytest.raises(BundleError, match=f"bundle {archive}: tokenizer/tokenizer.json size mismatch"):
        load_bundle(archive)
    assert list(private_tmp.iterdir()) == []


# --- unsafe archives -----------------------------------------------------------------------


def _evil_archive(path: Path, bundle_dir: Path, member: tarfile.TarInfo, payload: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        tar.add(bundle_dir / "manifest.json", arcname="manifest.json")
        tar.addfile(member, io.BytesIO(payload) if member.isfile() else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 4) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = size if kind == tarfile.REGTYPE else 0
    return info


@pytest.mark.parametrize("case", ["dotdot", "nested_dotdot", "absolute", "symlink", "hardlink", "fifo", "chardev"])
def test_unsafe_archive_members_rejected(case: str, bundle_dir: Path, tmp_path: Path, private_tmp: Path) -> None:
    outside = tmp_path / "evil"
    member = {
        "dotdot": _member("../evil"),
        "nested_dotdot": _member("models/../../evil"),
        "absolute": _member(str(outside)),
        "symlink": _member("models/link.onnx", tarfile.SYMTYPE, linkname=str(outside)),
        "hardlink": _member("models/hard.onnx", tarfile.LNKTYPE, linkname="manifest.json"),
        "fifo": _member("models/pipe", tarfile.FIFOTYPE),
        "chardev": _member("models/dev", tarfile.CHRTYPE),
    }[case]
    archive = _evil_archive(tmp_path / "evil.tar.gz", bundle_dir, member, b"evil")
    with pytest.raises(BundleError) as info:
        load_bundle(archive)
    message = one_line(info.value)
    assert f"archive member {member.name!r}" in message and "refusing to extract" in message
    assert not outside.exists() and not (private_tmp / "evil").exists()
    assert list(private_tmp.iterdir()) == []  # rejected before anything was written


def test_archive_members_with_dot_prefix_are_fine(bundle_dir: Path, tmp_path: Path) -> None:
    archive = tmp_path / "dot.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(bundle_dir, arcname=".")  # what `tar -C bundle -czf x.tgz .` produces
    with load_bundle(archive) as bundle:
        assert bundle.labels == ["negative", "positive"]


# --- artifacts ---------------------------------------------------------------------------


def test_unknown_artifact_lists_available(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    with pytest.raises(BundleError, match="no artifact named 'fp16'; available: fp32, int8_dynamic"):
        bundle.classifier("fp16")


def test_unrunnable_format_names_artifact_format_and_alternatives(bundle_dir: Path) -> None:
    (bundle_dir / "models" / "trt_fp16.engine").write_bytes(b"not really an engine")
    manifest = read_manifest(bundle_dir)
    manifest["artifacts"].append({"name": "trt_fp16", "path": "models/trt_fp16.engine", "format": "engine",
                                  "precision": "fp16", "runtime": "tensorrt"})
    manifest["default_artifact"] = "trt_fp16"
    write_manifest(bundle_dir, manifest)
    refresh_files(bundle_dir)
    bundle = load_bundle(bundle_dir)
    with pytest.raises(BundleError) as info:
        bundle.classifier()
    message = one_line(info.value)
    assert "artifact 'trt_fp16' has format 'engine'" in message
    assert "runnable artifacts: fp32, int8_dynamic" in message


def test_artifacts_feed_only_declared_inputs(bundle_dir: Path) -> None:
    bundle = load_bundle(bundle_dir)
    fp32, int8 = bundle.classifier("fp32"), bundle.classifier()
    assert fp32.input_names == ["input_ids", "attention_mask", "token_type_ids"]
    assert int8.input_names == ["input_ids", "attention_mask"]
    # Same weights, but fp32 adds a token-type embedding: the chosen artifact really runs.
    assert not np.allclose(fp32.logits(TEXTS), int8.logits(TEXTS))


def test_corrupt_onnx_is_reported(bundle_dir: Path) -> None:
    (bundle_dir / "models" / "fp32.onnx").write_bytes(b"garbage")
    refresh_files(bundle_dir)
    with pytest.raises(BundleError, match=r"artifact 'fp32' \(models/fp32.onnx\): onnxruntime cannot load") as info:
        load_bundle(bundle_dir).classifier("fp32")
    one_line(info.value)


def test_label_count_must_match_model(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", copy_runtime=False)
    manifest = read_manifest(root)
    manifest["model"]["labels"] = ["a", "b", "c"]
    write_manifest(root, manifest)
    with pytest.raises(BundleError, match="has 2 values per text but manifest model.labels has 3"):
        load_bundle(root).classifier()


# --- prediction -----------------------------------------------------------------------------


def test_predict_shapes_labels_and_softmax(bundle_dir: Path) -> None:
    classifier = load_bundle(bundle_dir).classifier(threads=1)
    assert isinstance(classifier, Classifier)
    results = classifier.predict(TEXTS)
    assert len(results) == len(TEXTS)
    logits = classifier.logits(TEXTS)
    assert logits.dtype == np.float32 and logits.shape == (len(TEXTS), 2)
    for result, row in zip(results, logits):
        assert set(result) == {"label", "score", "scores"}
        assert list(result["scores"]) == ["negative", "positive"]
        assert sum(result["scores"].values()) == pytest.approx(1.0, abs=1e-9)
        assert result["label"] == ["negative", "positive"][int(row.argmax())]
        assert result["score"] == max(result["scores"].values())
        assert isinstance(result["score"], float)
    assert len({r["label"] for r in results}) == 2  # the tiny model is not constant


def test_three_labels(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", labels=("neg", "neu", "pos"), copy_runtime=False)
    results = load_bundle(root).classifier("fp32").predict(TEXTS)
    assert all(set(r["scores"]) == {"neg", "neu", "pos"} for r in results)


def test_empty_input(bundle_dir: Path) -> None:
    classifier = load_bundle(bundle_dir).classifier()
    assert classifier.predict([]) == []
    assert classifier.logits([]).shape == (0, 2)


def test_batch_size_splitting_matches_one_batch(bundle_dir: Path) -> None:
    classifier = load_bundle(bundle_dir).classifier("fp32")
    whole = classifier.logits(TEXTS, batch_size=len(TEXTS))
    singles = np.concatenate([classifier.logits([t]) for t in TEXTS])
    for batch_size in (1, 2, 4):
        np.testing.assert_allclose(classifier.logits(TEXTS, batch_size=batch_size), whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(singles, whole, rtol=1e-5, atol=1e-6)
    assert [r["label"] for r in classifier.predict(TEXTS, batch_size=1)] == [r["label"] for r in classifier.predict(TEXTS)]


def test_truncation_at_max_length(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", max_length=8, copy_runtime=False)
    classifier = load_bundle(root).classifier()
    long_text = "great movie " * 20
    encoded = classifier.encoder.encode([long_text, "bad"])
    assert encoded["input_ids"].shape == (2, 8)
    assert encoded["input_ids"].dtype == np.int64
    assert encoded["input_ids"][0, -1] == VOCAB["[SEP]"]  # special tokens survive truncation
    assert encoded["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert encoded["input_ids"][1, 3:].tolist() == [VOCAB["[PAD]"]] * 5
    assert not encoded["token_type_ids"].any()
    # Everything past max_length is ignored: 6 words fit between [CLS] and [SEP].
    np.testing.assert_allclose(classifier.logits([long_text]), classifier.logits(["great movie " * 3]), atol=1e-6)


@pytest.mark.parametrize("bad", [["ok", 3], ["ok", None], [b"bytes"]])
def test_non_str_input_is_a_one_line_value_error(bundle_dir: Path, bad: list) -> None:
    classifier = load_bundle(bundle_dir).classifier()
    with pytest.raises(ValueError, match=r"texts\[\d\] is") as info:
        classifier.predict(bad)
    one_line(info.value)
    assert isinstance(info.value, BundleError)


def test_single_string_is_rejected_with_hint(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"wrap it in a list"):
        load_bundle(bundle_dir).classifier().predict("great movie")  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"batch_size": 1.5}])
def test_bad_batch_size(bundle_dir: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        load_bundle(bundle_dir).classifier().predict(["x"], **kwargs)


def test_bad_threads(bundle_dir: Path) -> None:
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        load_bundle(bundle_dir).classifier(threads=0)


def test_providers_passthrough(bundle_dir: Path) -> None:
    classifier = load_bundle(bundle_dir).classifier(providers=["CPUExecutionProvider"])
    assert classifier.session.get_providers() == ["CPUExecutionProvider"]


def test_static_shape_model_is_padded(tmp_path: Path) -> None:
    root = write_bundle(tmp_path / "b", copy_runtime=False)
    dynamic = load_bundle(root).classifier("fp32").logits(TEXTS)
    make_onnx_classifier(root / "models" / "fp32.onnx", len(VOCAB), static_shape=(4, 16))
    refresh_files(root)
    classifier = load_bundle(root).classifier("fp32")
    assert classifier.fixed_batch == 4
    encoded = classifier.encoder.encode(["bad"])
    assert encoded["input_ids"].shape == (1, 16)
    np.testing.assert_allclose(classifier.logits(TEXTS, batch_size=32), dynamic, rtol=1e-5, atol=1e-6)


# --- tokenizer padding lookup ------------------------------------------------------------


def test_pad_token_found_without_padding_config(tmp_path: Path) -> None:
    from runtime.tokenize import TextEncoder

    path = make_tokenizer(tmp_path / "tok", padding=False)
    (path.parent / "tokenizer_config.json").unlink()
    encoder = TextEncoder.from_file(path, 16)
    assert (encoder.pad_id, encoder.pad_token) == (VOCAB["[PAD]"], "[PAD]")
    assert encoder.encode(["great", "great movie !"])["input_ids"].shape == (2, 5)


def test_pad_token_from_tokenizer_config(tmp_path: Path) -> None:
    from runtime.tokenize import TextEncoder

    path = make_tokenizer(tmp_path / "tok", padding=False)
    (path.parent / "tokenizer_config.json").write_text(json.dumps({"pad_token": {"content": "[MASK]"}}))
    assert TextEncoder.from_file(path, 16).pad_id == VOCAB["[MASK]"]


def test_no_pad_token_is_an_error(tmp_path: Path) -> None:
    from tokenizers import Tokenizer, models

    from runtime.tokenize import TextEncoder

    path = tmp_path / "tokenizer.json"
    Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "great": 1}, unk_token="[UNK]")).save(str(path))
    with pytest.raises(BundleError, match="no padding token found") as info:
        TextEncoder.from_file(path, 16)
    one_line(info.value)


def test_unreadable_tokenizer(bundle_dir: Path) -> None:
    (bundle_dir / "tokenizer" / "tokenizer.json").write_text("{}", encoding="utf-8")
    refresh_files(bundle_dir)
    with pytest.raises(BundleError, match="tokenizer .*tokenizer.json: cannot be loaded"):
        load_bundle(bundle_dir).classifier()


# --- CLI --------------------------------------------------------------------------------------


def _env() -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)  # the package must come from the working directory alone
    return env


def test_cli_from_inside_the_bundle(bundle_dir: Path) -> None:
    """How devices use it: the bundle's own runtime/ copy, run from the bundle directory."""
    proc = subprocess.run([sys.executable, "-m", "runtime", ".", "great movie", "awful film", "--artifact", "fp32"],
                          cwd=bundle_dir, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["great movie", "awful film"]
    expected = load_bundle(bundle_dir).classifier("fp32").predict(["great movie", "awful film"])
    assert [{k: r[k] for k in ("label", "score", "scores")} for r in rows] == expected
    assert proc.stderr == ""


def test_cli_tampered_bundle_exits_2_with_one_line(bundle_dir: Path, tmp_path: Path) -> None:
    archive = make_tarball(bundle_dir, tmp_path / "b.tar.gz")
    with open(bundle_dir / "models" / "int8_dynamic.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 1]))
    proc = subprocess.run([sys.executable, "-m", "runtime", str(bundle_dir), "great movie"],
                          cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "models/int8_dynamic.onnx sha256 mismatch" in proc.stderr
    # The archive made before tampering is still fine.
    assert cli_main([str(archive), "great movie"]) == 0


def test_cli_reads_file_and_stdin(bundle_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("great movie\n\n  awful film  \n", encoding="utf-8")
    assert cli_main([str(bundle_dir), "i loved it", "--file", str(texts), "--batch-size", "2", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["i loved it", "great movie", "awful film"]

    monkeypatch.setattr(sys, "stdin", io.StringIO("bad\nworst film ever\n"))
    assert cli_main([str(bundle_dir), "--file", "-", "--no-verify"]) == 0
    assert [json.loads(line)["text"] for line in capsys.readouterr().out.splitlines()] == ["bad", "worst film ever"]


@pytest.mark.parametrize("argv, fragment", [
    (["--artifact", "nope", "x"], "no artifact named 'nope'"),
    ([], "no texts to classify"),
    (["--file", "/does/not/exist"], "--file /does/not/exist: cannot read it"),
])
def test_cli_errors(bundle_dir: Path, capsys: pytest.CaptureFixture[str], argv: list, fragment: str) -> None:
    assert cli_main([str(bundle_dir)] + argv) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.splitlines()) == 1


# --- portability -------------------------------------------------------------------------------


def test_runtime_does_not_import_heavy_packages(bundle_dir: Path) -> None:
    code = (
        "import sys, runtime\n"
        "heavy = ('torch', 'transformers', 'onnx', 'jinja2')\n"
        "assert not [m for m in heavy if m in sys.modules], sorted(sys.modules)\n"
        "assert 'onnxruntime' not in sys.modules and 'tokenizers' not in sys.modules\n"
        f"runtime.load_bundle({str(bundle_dir)!r}).classifier().predict(['great movie'])\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_no_runtime_module_imports_heavy_packages() -> None:
    """The device code (server, TensorRT runner, nf4 loader) imports its packages when it runs, not on import."""
    modules = sorted(p.stem for p in RUNTIME_SRC.glob("*.py") if p.stem != "__main__")
    heavy = ("torch", "transformers", "onnx", "jinja2", "tensorrt", "pycuda", "bitsandbytes", "accelerate",
             "onnxruntime", "tokenizers")
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module('runtime' if name == '__init__' else 'runtime.' + name)\n"
        f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_runtime_sources_parse_as_python39() -> None:
    for path in sorted(RUNTIME_SRC.glob("*.py")):
        source = path.read_text(encoding="utf-8")
        tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
        assert "from __future__ import annotations" in source, path
        banned = {"torch", "transformers", "onnx", "jinja2"}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & banned, path
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                assert node.module.split(".")[0] not in banned, path
