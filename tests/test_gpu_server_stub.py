"""gpu_server stubs: golden files, and serve.py as a real HTTP server on a tiny bundle.

The server runs as a subprocess on port 0 (it prints the port it got) and is
spoken to with urllib and raw sockets. On this CPU-only host the provider
logic is exercised by asking for CUDA/TensorRT and checking the fallback or
the one-line refusal.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import jinja2
import pytest
from golden import check
from tiny_bundle import read_manifest, refresh_files, write_bundle, write_manifest

from recipes.package.stubs import render, render_to
from runtime import BundleError, load_bundle
from runtime import providers as prov

SHAPES = {"batch": {"min": 1, "opt": 32, "max": 128}, "sequence": {"min": 8, "opt": 128, "max": 512}}
CONTEXT = {
    "target": "gpu_server",
    "description": "x86-64 server with an NVIDIA GPU: TensorRT \"fp16\" & nf4",
    "labels": ["negative", "positive"],
    "default_artifact": "fp16",
    "artifacts": [
        {"name": "fp16", "format": "onnx", "precision": "fp16", "runtime": "onnxruntime", "path": "models/fp16.onnx",
         "quantization": {"method": "fp16", "keep_io_types": True}},
        {"name": "engine_fp16", "format": "tensorrt", "precision": "fp16", "runtime": "tensorrt",
         "path": "models/engine_fp16.plan", "quantization": {"method": "fp16", "keep_io_types": True}},
        {"name": "nf4", "format": "torch", "precision": "nf4", "runtime": "pytorch", "path": "models/nf4/",
         "quantization": {"method": "nf4", "double_quant": True}},
    ],
    "max_length": 128,
    "runtime_version": "0.1.0",
    "shapes": SHAPES,
    "trt_workspace_mb": 1024,
}
TINY_SHAPES = {"batch": {"min": 1, "opt": 2, "max": 4}, "sequence": {"min": 4, "opt": 8, "max": 16}}
TEXTS = ["a great movie", "the worst film", "i loved it !", "", "not very good"]
LISTENING = re.compile(r"listening on http://([^\s:]+):(\d+)")


# --- rendering ---------------------------------------------------------------


@pytest.mark.parametrize("name", ["serve.py", "README.md"])
def test_golden(name):
    check(f"gpu_server_{name}", render(f"gpu_server/{name}", CONTEXT))


@pytest.mark.parametrize("key", ["shapes", "trt_workspace_mb", "default_artifact"])
def test_missing_value_is_an_error(key):
    with pytest.raises(jinja2.UndefinedError):
        render("gpu_server/serve.py", {k: v for k, v in CONTEXT.items() if k != key})


def test_readme_needs_quantization_key():
    artifacts = [{k: v for k, v in a.items() if k != "quantization"} for a in CONTEXT["artifacts"]]
    with pytest.raises(jinja2.UndefinedError):
        render("gpu_server/README.md", dict(CONTEXT, artifacts=artifacts))


def test_values_enter_code_as_literals():
    nasty = 'x"; import os #'
    ctx = dict(CONTEXT, default_artifact=nasty, description="'''\"\"\"", artifacts=[{**CONTEXT["artifacts"][0], "name": nasty}])
    code = render("gpu_server/serve.py", ctx)
    compile(code, "serve.py", "exec")
    assert "DEFAULT_ARTIFACT = 'x\"; import os #'" in code


def test_readme_without_onnx_or_torch_artifacts():
    ctx = dict(CONTEXT, default_artifact="engine_fp16", artifacts=[CONTEXT["artifacts"][1]])
    text = render("gpu_server/README.md", ctx)
    assert "bundle.classifier(" not in text and "onnxruntime-gpu" not in text and "--artifact" not in text
    assert "does not load it" in text


# --- a live server -------------------------------------------------------------


def stub_context(bundle: Path) -> dict:
    manifest = read_manifest(bundle)
    artifacts = [{**{k: a[k] for k in ("name", "format", "precision", "runtime", "path")}, "quantization": None}
                 for a in manifest["artifacts"]]
    return dict(CONTEXT, default_artifact=manifest["default_artifact"], artifacts=artifacts,
                max_length=manifest["tokenizer"]["max_length"], shapes=TINY_SHAPES)


def make_served_bundle(root: Path, extra_artifacts: list[dict] = ()) -> Path:
    bundle = write_bundle(root)
    if extra_artifacts:
        manifest = read_manifest(bundle)
        manifest["artifacts"] += list(extra_artifacts)
        write_manifest(bundle, manifest)
    render_to("gpu_server/serve.py", stub_context(bundle), bundle / "serve.py")
    refresh_files(bundle)  # serve.py is part of the bundle
    return bundle


def start_server(bundle: Path, log: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """Start serve.py on a free port; its log (one line per request) goes to `log`, not a pipe that could fill."""
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(bundle / "serve.py"), "--port", "0", *args],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=bundle.parent)
    line = proc.stdout.readline()  # blocks until the server listens or exits
    match = LISTENING.search(line)
    if not match:
        proc.kill()
        proc.wait(timeout=30)
        raise AssertionError(f"server did not start: {line}{log.read_text()}")
    return proc, f"http://{match.group(1)}:{match.group(2)}"


def stop_server(proc: subprocess.Popen, log: Path) -> str:
    proc.terminate()
    proc.wait(timeout=30)
    proc.stdout.close()
    assert proc.returncode == 0, log.read_text()  # SIGTERM is a clean shutdown
    return log.read_text()


def http(method: str, url: str, body: bytes | None = None, headers: dict | None = None) -> tuple[int, dict, dict]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), json.loads(exc.read())


def post(url: str, payload) -> tuple[int, dict, dict]:
    return http("POST", url + "/predict", json.dumps(payload).encode(), {"Content-Type": "application/json"})


def raw(base: str, request: bytes) -> tuple[int, dict]:
    """Send bytes as they are (urllib always adds Content-Length) and parse the reply."""
    host, port = base.rsplit("/", 1)[-1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    if not data.startswith(b"HTTP/"):
        return 0, json.loads(data)  # the standard library answers a request it cannot parse HTTP/0.9-style: body only
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    bundle = make_served_bundle(tmp_path_factory.mktemp("gpu") / "bundle")
    log = bundle.parent / "server.log"
    proc, base = start_server(bundle, log, "--artifact", "int8_dynamic", "--artifact", "fp32", "--max-batch", "6",
                              "--max-body-bytes", "2000", "--threads", "1")
    yield bundle, base, proc
    assert "Traceback" not in stop_server(proc, log)


def test_predictions_match_the_runtime_classifier(served):
    bundle, base, _ = served
    with load_bundle(bundle) as b:
        expected = {name: b.classifier(name).predict(TEXTS) for name in ("int8_dynamic", "fp32")}
    status, headers, body = post(base, {"texts": TEXTS})
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert body["artifact"] == "int8_dynamic"
    assert [p["label"] for p in body["predictions"]] == [p["label"] for p in expected["int8_dynamic"]]
    for got, want in zip(body["predictions"], expected["int8_dynamic"]):
        assert got["scores"] == pytest.approx(want["scores"], abs=1e-6)
    status, _, body = post(base, {"texts": TEXTS[:2], "artifact": "fp32"})
    assert status == 200 and body["artifact"] == "fp32"
    assert [p["scores"] for p in body["predictions"]] == [pytest.approx(p["scores"], abs=1e-6) for p in expected["fp32"][:2]]
    assert post(base, {"texts": []})[2] == {"artifact": "int8_dynamic", "predictions": []}


def test_healthz_and_metadata(served):
    _, base, _ = served
    status, _, body = http("GET", base + "/healthz")
    assert (status, body) == (200, {"status": "ok"})
    status, _, meta = http("GET", base + "/metadata?verbose=1")
    assert status == 200
    assert meta["labels"] == ["negative", "positive"] and meta["max_length"] == 16 and meta["max_batch"] == 6
    assert meta["default_artifact"] == "int8_dynamic"
    served_rows = {a["name"]: a for a in meta["artifacts"]}
    assert served_rows["int8_dynamic"]["served"] and served_rows["fp32"]["served"]
    # This host has no GPU: auto asked for TensorRT and CUDA, and says why it runs on the CPU.
    assert served_rows["fp32"]["providers"][0] == "CPUExecutionProvider"
    assert any("TensorrtExecutionProvider is not available" in n for n in served_rows["fp32"]["notes"])


def test_server_header_names_the_runtime_version(served):
    _, base, _ = served
    _, headers, _ = http("GET", base + "/healthz")
    assert headers["Server"].startswith(f"edgesmith-serve/{CONTEXT['runtime_version']} Python/")


BAD_REQUESTS = [
    # (method, path, body, status, words in the error)
    ("POST", "/predict", b"{bad json", 400, "not valid JSON"),
    ("POST", "/predict", b"\xff\xfe{}", 400, "UTF-8"),
    ("POST", "/predict", b"[1, 2]", 400, "JSON object"),
    ("POST", "/predict", b"{}", 400, 'missing "texts"'),
    ("POST", "/predict", b'{"text": ["a"]}', 400, "unknown key 'text'"),
    ("POST", "/predict", b'{"texts": "a"}', 400, "wrap a single text"),
    ("POST", "/predict", b'{"texts": null}', 400, "got null"),
    ("POST", "/predict", b'{"texts": ["a", 3]}', 400, '"texts"[1] is a number'),
    ("POST", "/predict", b'{"texts": ["a"], "artifact": 7}', 400, '"artifact" must be a string'),
    ("POST", "/predict", b'{"texts": ["a"], "artifact": "nope"}', 400, "unknown artifact 'nope'"),
    ("POST", "/predict", json.dumps({"texts": ["a"] * 7}).encode(), 413, "--max-batch"),
    ("POST", "/predict", json.dumps({"texts": ["x" * 3000]}).encode(), 413, "--max-body-bytes"),
    ("GET", "/predict", None, 405, "use POST"),
    ("PUT", "/predict", b"{}", 405, "use POST"),
    ("POST", "/healthz", b"{}", 405, "use GET"),
    ("DELETE", "/metadata", None, 405, "use GET"),
    ("GET", "/", None, 404, "no endpoint '/'"),
    ("POST", "/predictions", b"{}", 404, "no endpoint"),
]


@pytest.mark.parametrize("method,path,body,status,words", BAD_REQUESTS, ids=[f"{r[0]} {r[1]} {r[4]}" for r in BAD_REQUESTS])
def test_bad_requests_get_a_json_4xx(served, method, path, body, status, words):
    _, base, proc = served
    got, headers, reply = http(method, base + path, body, {"Content-Type": "application/json"} if body else {})
    assert (got, set(reply)) == (status, {"error"}), reply
    assert words in reply["error"] and "\n" not in reply["error"] and "Traceback" not in reply["error"]
    assert headers["Content-Type"].startswith("application/json")
    if status == 405:
        assert headers["Allow"] in ("POST", "GET, HEAD")
    assert post(base, {"texts": ["still serving"]})[0] == 200 and proc.poll() is None


@pytest.mark.parametrize("request_bytes,status,words", [
    (b"POST /predict HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n", 400, "not a number"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 411, "chunked"),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{\"texts\": []}", 400, "ended after 13 of 50"),
    (b"FETCH /predict HTTP/1.1\r\nHost: x\r\n\r\n", 501, "Unsupported method"),
    (b"this is not http\r\n\r\n", 0, "Bad request version"),
])
def test_malformed_http_gets_json(served, request_bytes, status, words):
    _, base, proc = served
    got, reply = raw(base, request_bytes)
    assert got == status and words in reply["error"], reply
    assert post(base, {"texts": ["still serving"]})[0] == 200 and proc.poll() is None


def test_concurrent_requests(served):
    _, base, _ = served
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(post(base, {"texts": [TEXTS[i % 5]] * 3})[0]))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [200] * 8


# --- startup failures: one line, exit status 2 ----------------------------------


def run_server(bundle: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(bundle / "serve.py"), "--port", "0", *args],
                          capture_output=True, text=True, timeout=60)


def test_strict_providers_refuse_to_start_on_cpu(tmp_path):
    bundle = make_served_bundle(tmp_path / "bundle")
    out = run_server(bundle, "--providers", "cuda")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "none of the requested providers (CUDAExecutionProvider)" in out.stderr
    assert "add cpu to --providers" in out.stderr
    bad = run_server(bundle, "--providers", "gpu")
    assert bad.returncode == 2 and "unknown provider 'gpu'" in bad.stderr


def test_unservable_format_and_bad_bundle(tmp_path):
    engine = {"name": "engine_fp16", "format": "tensorrt", "precision": "fp16", "runtime": "tensorrt",
              "path": "models/fp32.onnx"}
    bundle = make_served_bundle(tmp_path / "bundle", [engine])
    out = run_server(bundle, "--artifact", "engine_fp16")
    assert out.returncode == 2 and out.stderr.count("\n") == 1
    assert "format 'tensorrt', which serve.py cannot run" in out.stderr and "--providers tensorrt" in out.stderr
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        out = subprocess.run([sys.executable, str(bundle / "serve.py"), "--port", str(busy.getsockname()[1])],
                             capture_output=True, text=True, timeout=60)
    finally:
        busy.close()
    assert out.returncode == 2 and "cannot listen on 127.0.0.1" in out.stderr
    (bundle / "models" / "fp32.onnx").write_bytes(b"tampered")
    out = run_server(bundle)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "models/fp32.onnx" in out.stderr


# --- a backend failure is a logged 500, not a crash -------------------------------


def load_stub(path: Path):
    spec = importlib.util.spec_from_file_location("rendered_serve", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_backend_failure_is_a_logged_500(tmp_path, caplog):
    bundle = make_served_bundle(tmp_path / "bundle")
    serve = load_stub(bundle / "serve.py")
    with load_bundle(bundle) as b:
        app = serve.App(b, serve.parse_args(["--bundle", str(bundle), "--providers", "cpu"]))

        class Broken:
            info, notes = {"backend": "broken"}, []

            def predict(self, texts):
                raise RuntimeError("device lost\nwith a second line")

        app.backends[app.default] = Broken()
        server = serve.Server(("127.0.0.1", 0), serve.Handler, app)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            with caplog.at_level(logging.ERROR, logger="serve"):
                status, _, reply = post(base, {"texts": ["a"]})
            assert status == 500 and reply == {"error": "internal error: device lost with a second line"}
            assert any(r.exc_info and "device lost" in str(r.exc_info[1]) for r in caplog.records)
            assert http("GET", base + "/healthz")[0] == 200
            status, _, reply = post(base, {"texts": ["a"], "artifact": "fp32"})  # in the bundle, not served
            assert status == 400 and "start the server with --artifact fp32" in reply["error"]
        finally:
            server.shutdown()
            server.server_close()


# --- provider selection (runtime/providers.py) ----------------------------------


TRT, CUDA, CPU = prov.TENSORRT, prov.CUDA, prov.CPU


def test_parse_providers():
    assert prov.parse_providers("auto") == [TRT, CUDA, CPU]
    assert prov.parse_providers(" CUDA , cpu ") == [CUDA, CPU]
    assert prov.parse_providers("tensorrt,CPUExecutionProvider") == [TRT, CPU]
    for text, words in (("", "empty"), ("gpu", "unknown provider 'gpu'"), ("cpu,cpu", "named twice")):
        with pytest.raises(BundleError, match=words):
            prov.parse_providers(text)


def test_plan_falls_back_only_to_named_providers():
    plan = prov.plan_providers([TRT, CUDA, CPU], available=[CPU])
    assert plan.names == [CPU] and len(plan.notes) == 3
    assert "running on CPUExecutionProvider instead of TensorrtExecutionProvider" in plan.notes[-1]
    with pytest.raises(BundleError) as err:
        prov.plan_providers([CUDA], available=["AzureExecutionProvider", CPU])
    assert "\n" not in str(err.value) and "onnxruntime-gpu" in str(err.value) and "add cpu to --providers" in str(err.value)
    gpu = prov.plan_providers([TRT, CUDA, CPU], available=[TRT, CUDA, CPU],
                              options={CUDA: prov.cuda_options(device_id=1)})
    assert gpu.names == [TRT, CUDA, CPU] and gpu.notes == []
    assert gpu.providers[1] == (CUDA, {"device_id": "1", "cudnn_conv_algo_search": "HEURISTIC"})


def test_tensorrt_options(tmp_path):
    options = prov.tensorrt_options(device_id=0, cache_dir=tmp_path, fp16=True, workspace_mb=512,
                                    input_names=["input_ids", "attention_mask"], batch=(1, 8, 32), sequence=(8, 128, 512))
    assert options["trt_fp16_enable"] == "True" and options["trt_int8_enable"] == "False"
    assert options["trt_engine_cache_enable"] == "True" and options["trt_engine_cache_path"] == str(tmp_path)
    assert options["trt_max_workspace_size"] == str(512 << 20)
    assert options["trt_profile_min_shapes"] == "input_ids:1x8,attention_mask:1x8"
    assert options["trt_profile_opt_shapes"] == "input_ids:8x128,attention_mask:8x128"
    assert options["trt_profile_max_shapes"] == "input_ids:32x512,attention_mask:32x512"
    with pytest.raises(BundleError, match="cudnn_conv_algo_search"):
        prov.cuda_options(cudnn_conv_algo_search="FAST")


class FakeSession:
    def __init__(self, providers):
        self._providers = providers

    def get_providers(self):
        return self._providers


def test_check_session_catches_silent_cpu_fallback():
    # onnxruntime-gpu without working CUDA libraries logs an error and runs on the CPU.
    strict = prov.plan_providers([CUDA], available=[CUDA, CPU])
    with pytest.raises(BundleError, match="fell back to CPUExecutionProvider, which --providers"):
        prov.check_session(FakeSession([CPU]), strict)
    lenient = prov.plan_providers([CUDA, CPU], available=[CUDA, CPU])
    assert prov.check_session(FakeSession([CPU]), lenient) == [CPU]
    assert "could not start CUDAExecutionProvider" in lenient.notes[-1]
    assert prov.check_session(FakeSession([CUDA, CPU]), prov.plan_providers([CUDA, CPU], available=[CUDA, CPU])) == [CUDA, CPU]


def test_real_session_on_this_host(tmp_path):
    bundle = write_bundle(tmp_path / "bundle")
    plan = prov.plan_providers(prov.parse_providers("auto"))
    assert plan.names[-1] == CPU
    with load_bundle(bundle) as b:
        classifier = b.classifier("fp32", providers=plan.providers)
    assert prov.check_session(classifier.session, plan)[0] in plan.names


def test_providers_module_imports_no_onnxruntime():
    code = "import sys, runtime.providers; assert 'onnxruntime' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])
