"""A bundle's runtime trusts nothing it is given (issue "Trust", items 8-10).

One test per class: option values past what the machine has (threads, batch
sizes), archives that hold more than their manifest lists, text that is not
UTF-8 (stdin, argv, the HTTP body and JSON strings), and serve.py under many
concurrent clients. Servers listen on 127.0.0.1 only; every load loop is
bounded in count and time.
"""
from __future__ import annotations

import builtins
import gzip
import http.client
import io
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest

from recipes.package.stubs import render_to
from runtime import BundleError, InputError, load_bundle
from runtime import engine_cli
from runtime.archive import extract_archive
from runtime.texts import read_texts
from test_gpu_server_stub import make_served_bundle, start_server, stop_server
from tiny_bundle import RUNTIME_SRC, read_manifest, write_bundle

REPO = RUNTIME_SRC.parent
NO_BUNDLE = "/nonexistent/edgesmith-bundle"  # limits are checked before any bundle is opened
CPUS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
TEXTS = ["a great movie", "the worst film", "i loved it !", "not very good", "awful boring film", "it was fun",
         "the best film", ""]


def _env(**extra: str) -> dict:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", **extra)
    env.pop("PYTHONPATH", None)
    return env


@pytest.fixture(scope="module")
def stubs(tmp_path_factory) -> Path:
    """A tiny bundle with run.py and serve.py rendered into it."""
    bundle = make_served_bundle(tmp_path_factory.mktemp("trust-runtime") / "bundle")
    manifest = read_manifest(bundle)
    ctx = {"target": "cpu", "description": "tiny", "labels": manifest["model"]["labels"],
           "default_artifact": manifest["default_artifact"], "artifacts": manifest["artifacts"],
           "max_length": 16, "runtime_version": "0.1.0", "task": "classification"}
    render_to("cpu/run.py", ctx, bundle / "run.py")  # not in "files": verification ignores it
    return bundle


def command(stubs: Path, tool: str) -> list:
    return {"run.py": [sys.executable, str(stubs / "run.py")],
            "python -m runtime": [sys.executable, "-m", "runtime"],
            "serve.py": [sys.executable, str(stubs / "serve.py"), "--port", "0"]}[tool]


def run(stubs: Path, tool: str, *args, stdin: bytes = b"", **env: str) -> subprocess.CompletedProcess:
    argv = command(stubs, tool) + list(args)
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, cwd=stubs, env=_env(**env))


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("utf-8", "backslashreplace")
    assert proc.returncode == 2 and proc.stdout == b"", err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- 8. limits: threads and batch sizes are bounded by the machine -------------------------


@pytest.mark.parametrize("tool, args, zero_ok", [
    ("run.py", ["--bundle", NO_BUNDLE, "--threads", "100000", "good"], True),
    ("python -m runtime", [NO_BUNDLE, "--threads", "100000", "good"], False),
    ("serve.py", ["--bundle", NO_BUNDLE, "--threads", "100000"], True),
])
def test_threads_beyond_the_cpus_are_one_line(stubs, tool, args, zero_ok):
    err = one_error_line(run(stubs, tool, *args))
    assert "--threads 100000" in err and f"{0 if zero_ok else 1}..{CPUS}" in err, err


@pytest.mark.parametrize("tool, args, option", [
    ("run.py", ["--bundle", NO_BUNDLE, "--batch-size", "100000000", "good"], "--batch-size"),
    ("python -m runtime", [NO_BUNDLE, "--batch-size", "100000000", "good"], "--batch-size"),
    ("serve.py", ["--bundle", NO_BUNDLE, "--max-batch", "100000000"], "--max-batch"),
    ("run_engine.py", ["--batch-size", "100000000", "good"], "--batch-size"),
])
def test_batch_beyond_the_documented_maximum_is_one_line(stubs, tool, args, option, capsys):
    from runtime.limits import MAX_BATCH_SIZE

    if tool == "run_engine.py":  # in process: its Settings need no rendered stub
        shapes = {"batch": {"min": 1, "opt": 2, "max": 4}, "sequence": {"min": 4, "opt": 8, "max": 16}}
        settings = engine_cli.Settings(target="jetson", description="tiny", labels=["negative", "positive"],
                                       default_artifact="engine", engines={"engine": {"name": "engine"}},
                                       onnx_artifacts=["fp32"], input_names=["input_ids"], shapes=shapes,
                                       workspace_mb=64, bundle_dir=stubs)
        with pytest.raises(SystemExit) as exit_:
            engine_cli.parse_args(args, settings)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and err.count("\n") == 1, err
        assert "--batch-size 100000000" in err and "1..4" in err, err  # the engine's profile is the bound
        return
    err = one_error_line(run(stubs, tool, *args))
    assert f"{option} 100000000" in err and f"1..{MAX_BATCH_SIZE}" in err, err


# --- 8. limits: an archive holds exactly what its manifest lists -------------------------


@pytest.fixture
def watch_writes(monkeypatch):
    """Record every file or directory created below the paths in the returned list."""
    watched: list = []
    created: list = []

    def under(path) -> bool:
        try:
            target = os.path.abspath(os.fspath(path))
        except TypeError:
            return False  # a file descriptor
        return any(target == w or target.startswith(w + os.sep) for w in watched)

    real_open, real_mkdir = builtins.open, os.mkdir

    def spy_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wxa+") and under(file):
            created.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    def spy_mkdir(path, *args, **kwargs):
        if under(path):
            created.append(str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(tarfile, "bltn_open", spy_open, raising=False)
    monkeypatch.setattr(os, "mkdir", spy_mkdir)
    return watched, created


def _archive(path: Path, bundle: Path, extra=(), replace=None) -> Path:
    """The bundle's manifest and files, then `extra` (TarInfo, bytes) members; `replace` maps a
    member name to the bytes stored for it instead of the file's."""
    replace = replace or {}
    names = ["manifest.json"] + [f["path"] for f in read_manifest(bundle)["files"]]
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            data = replace.get(name, (bundle / name).read_bytes())
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tar.addfile(info, io.BytesIO(data))
    return path


def _file_member(name: str, data: bytes):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


@pytest.mark.parametrize("case", ["unlisted", "duplicate"])
def test_archive_with_an_unlisted_member_is_refused_before_writing(case, tmp_path, watch_writes, monkeypatch):
    bundle = write_bundle(tmp_path / "bundle")
    extra = {"unlisted": _file_member("models/extra.bin", b"\0" * (4 << 20)),
             "duplicate": _file_member("models/fp32.onnx", (bundle / "models" / "fp32.onnx").read_bytes())}[case]
    archive = _archive(tmp_path / "evil.tar.gz", bundle, [extra])
    dest = tmp_path / "dest"
    dest.mkdir()
    watched, created = watch_writes
    watched.append(str(dest))
    with pytest.raises(BundleError) as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert "\n" not in message and extra[0].name in message and "refusing to extract" in message, message
    assert ("not listed in manifest.json" if case == "unlisted" else "more than once") in message, message
    assert created == [] and list(dest.iterdir()) == []  # checked before anything was written
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with pytest.raises(BundleError, match="refusing to extract"):
        load_bundle(archive)
    assert list(scratch.iterdir()) == []  # load_bundle leaves no extraction behind


@pytest.mark.parametrize("case", ["larger", "truncated"])
def test_archive_member_larger_than_the_manifest_says_extracts_nothing(case, tmp_path, watch_writes):
    bundle = write_bundle(tmp_path / "bundle")
    model = (bundle / "models" / "fp32.onnx").read_bytes()
    archive = tmp_path / "evil.tar.gz"
    watched, created = watch_writes
    dest = tmp_path / "dest"
    dest.mkdir()
    watched.append(str(dest))
    if case == "larger":
        _archive(archive, bundle, replace={"models/fp32.onnx": model + b"\0" * (1 << 20)})
    else:  # the header says the right size, but the data stops short (a copy cut off in transit)
        whole = tmp_path / "whole.tar"
        with tarfile.open(whole, "w") as tar:
            for name in ["manifest.json"] + [f["path"] for f in read_manifest(bundle)["files"]]:
                tar.add(bundle / name, arcname=name)
        raw = whole.read_bytes()
        archive.write_bytes(gzip.compress(raw[: raw.index(model[:64]) + len(model) // 2]))
    with pytest.raises(BundleError) as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert "\n" not in message and "models/fp32.onnx" in message, message
    if case == "larger":
        assert f"manifest {len(model)} bytes" in message and f"{len(model) + (1 << 20)} bytes" in message, message
    assert created == [] and list(dest.iterdir()) == []  # refused while reading headers: nothing was written


# --- 9. encoding: text that is not UTF-8 is one InputError line naming it ------------------


@pytest.mark.parametrize("case", ["run.py bytes", "python -m runtime bytes", "text stream", "latin-1 terminal"])
def test_non_utf8_stdin(stubs, case):
    if case == "text stream":  # a text stream (no byte buffer) that holds undecodable input as surrogates
        with pytest.raises(InputError) as err:
            read_texts([], "-", stdin=io.StringIO("fine\ncaf\udce9\n"))
        assert str(err.value).startswith("--file - (stdin): line 2 is not UTF-8 text"), err.value
        return
    if case == "latin-1 terminal":  # UTF-8 input, a terminal that cannot show it: still one valid JSON line
        proc = run(stubs, "run.py", "--file", "-", stdin="snow \u2603 caf\u00e9\n".encode(), PYTHONIOENCODING="latin-1")
        assert proc.returncode == 0, proc.stderr.decode()
        assert json.loads(proc.stdout)["text"] == "snow \u2603 caf\u00e9"
        return
    tool = case.rsplit(" ", 1)[0]
    args = ["--file", "-"] if tool == "run.py" else [".", "--file", "-"]
    err = one_error_line(run(stubs, tool, *args, stdin=b"fine\ncaf\xe9\n"))
    assert "--file - (stdin): line 2 is not UTF-8 text (byte 0xe9)" in err, err


@pytest.mark.parametrize("case", ["run.py", "python -m runtime", "library"])
def test_non_utf8_and_lone_surrogate_argv(stubs, case):
    if case == "library":  # what Python hands over for undecodable argv bytes, given straight to predict()
        with load_bundle(stubs) as bundle:
            classifier = bundle.classifier()
        with pytest.raises(InputError) as err:
            classifier.predict(["fine", "caf\udcff"])
        assert str(err.value).startswith("texts[1] is not UTF-8 text"), err.value
        return
    args = ["fine", b"caf\xe9"] if case == "run.py" else [".", "fine", b"caf\xe9"]
    err = one_error_line(run(stubs, case, *args))
    assert "text argument 2 is not UTF-8 text" in err, err


# --- 9. and 10. serve.py -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(stubs):
    log = stubs.parent / "trust-server.log"
    proc, base = start_server(stubs, log, "--threads", "1")
    host, port = base.rsplit("/", 1)[-1].split(":")
    assert host == "127.0.0.1"
    yield int(port), proc
    assert "Traceback" not in stop_server(proc, log)


def request(port: int, body: bytes, timeout: float = 30) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_serve_invalid_utf8_body_is_a_400(server):
    port, proc = server
    for body, where in ((b'{"texts": ["caf\xe9"]}', "byte 0xe9 at offset 15"),
                        (b'{"texts": ["ok", "\xed\xb3\xbf"]}', "byte 0xed at offset 18")):
        status, reply = request(port, body)
        assert status == 400 and set(reply) == {"error"}, reply
        assert "not UTF-8" in reply["error"] and where in reply["error"] and "\n" not in reply["error"], reply
    assert request(port, b'{"texts": ["still serving"]}')[0] == 200 and proc.poll() is None


def test_serve_lone_surrogate_in_json_is_a_400(server):
    port, proc = server
    status, reply = request(port, b'{"texts": ["fine", "caf\\udcff"]}')
    assert status == 400 and set(reply) == {"error"}, reply
    assert reply["error"].startswith('"texts"[1] is not UTF-8 text') and "\n" not in reply["error"], reply
    assert request(port, b'{"texts": ["still serving"]}')[0] == 200 and proc.poll() is None


CLIENTS, REQUESTS, LOAD_SECONDS = 200, 5, 60


def test_serve_under_concurrent_clients(server):
    """200 clients at once, 5 requests each: no connection is reset, every answer is the one-client answer,
    and no more requests are in flight than the server has workers."""
    port, proc = server
    expected = {text: request(port, json.dumps({"texts": [text]}).encode()) for text in TEXTS}
    assert all(status == 200 for status, _ in expected.values())
    results: list = []
    start = threading.Barrier(CLIENTS)
    deadline = time.monotonic() + LOAD_SECONDS

    def client(i: int) -> None:
        try:
            start.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        for j in range(REQUESTS):
            if time.monotonic() > deadline:
                results.append((i, None, "out of time"))
                return
            text = TEXTS[(i + j) % len(TEXTS)]
            try:
                got = request(port, json.dumps({"texts": [text]}).encode(), timeout=LOAD_SECONDS)
            except Exception as exc:  # ConnectionResetError, RemoteDisconnected, timeouts: all count
                got = type(exc).__name__
            results.append((i, text, got))

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.1, deadline + 5 - time.monotonic()))
    elapsed = time.monotonic() - began
    failures = [r for r in results if r[1] is None or r[2] != expected[r[1]]]
    kinds: dict = {}
    for _, _, got in failures:
        key = got if isinstance(got, str) else f"status {got[0]}" if got[0] != 200 else "different answer"
        kinds[key] = kinds.get(key, 0) + 1
    assert len(results) == CLIENTS * REQUESTS and not failures, f"{len(failures)} of {len(results)} failed: {kinds}"
    assert proc.poll() is None
    status, meta = request_get(port, "/metadata")
    assert status == 200 and 1 <= meta["peak_in_flight"] <= meta["workers"], meta
    print(f"{len(results)} requests from {CLIENTS} clients in {elapsed:.1f} s; peak in flight {meta['peak_in_flight']}")


def request_get(port: int, path: str) -> tuple:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()
