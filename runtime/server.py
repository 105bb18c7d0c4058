"""serve.py's HTTP server: the request rules, the HTTP handling and the command line.

Standard library HTTP server plus the bundle's runtime:
    POST /predict   {"texts": ["...", ...], "artifact": "optional name"}
                    -> {"artifact": name, "predictions": [{"label", "score", "scores"}, ...]}
    POST /embed     (a sentence-embedding bundle) {"texts": [...], "artifact": "optional name"}
                    -> {"artifact": name, "dimension": d, "embeddings": [[float, ...], ...]}
    GET  /healthz   -> {"status": "ok"}
    GET  /metadata  -> labels, artifacts (and what serves them), limits
Errors are JSON {"error": "one line"} with a 4xx status for bad requests and
500 (logged with its traceback here, never sent to the client) for failures.

Under load: --workers threads handle requests (at most that many in flight),
and connections beyond them wait in a --backlog deep listen queue instead of
being reset; inference itself runs one batch at a time (App.lock).

serve.py itself only holds the values baked in for its bundle (Settings);
the artifacts run on runtime/server_backends.py.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from .bundle import Bundle, load_bundle
from .errors import BundleError, InputError, RequestError, one_line
from .limits import (DEFAULT_WORKERS, MAX_BATCH_SIZE, MAX_BODY_BYTES, MAX_WORKERS, backlog_problem, batch_problem, cpu_count,
                     default_backlog, out_of_range, threads_problem)
from .server_backends import BACKENDS
from .texts import check_utf8

PROG = "serve.py"
DEFAULT_MAX_BODY_BYTES = 1 << 20
ENDPOINTS = {"/predict": ("POST",), "/embed": ("POST",), "/healthz": ("GET", "HEAD"), "/metadata": ("GET", "HEAD")}
# The inference endpoint of each kind of bundle (manifest "task").
TASK_ENDPOINT = {"classification": "/predict", "embedding": "/embed"}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}

# Named "serve", not after this module: the log lines read as they always have.
log = logging.getLogger("serve")


@dataclass(frozen=True)
class Settings:
    """The values serve.py is generated with."""

    target: str
    description: str
    labels: List[str]
    default_artifact: str
    artifacts: List[str]
    runtime_version: str
    # Shape ranges of the target: the TensorRT optimization profile, and the
    # largest batch run at once.
    shapes: Mapping[str, Mapping[str, int]]
    trt_workspace_mb: int
    bundle_dir: Path  # where serve.py lies: the default --bundle


def json_type(value: Any) -> str:
    return JSON_TYPES.get(type(value), type(value).__name__)


class App:
    """The served artifacts and the request logic, independent of HTTP."""

    def __init__(self, bundle: Bundle, args: argparse.Namespace, settings: Settings) -> None:
        self.bundle = bundle
        self.settings = settings
        self.max_batch = args.max_batch
        self.max_body_bytes = args.max_body_bytes
        self.lock = threading.Lock()  # one inference at a time: predictable GPU memory and latency
        self.backends: Dict[str, Any] = {}
        names = list(dict.fromkeys(args.artifact or [settings.default_artifact]))
        self.default = names[0]
        for name in names:
            entry = bundle.artifact(name)
            backend = BACKENDS.get(entry["format"])
            if backend is None:
                raise BundleError(self._unservable(entry))
            started = time.perf_counter()
            self.backends[name] = backend(bundle, entry, args, settings.shapes)
            # Warm-up: TensorRT builds (or loads) its engine here, not in a request.
            (self.backends[name].embed if bundle.task == "embedding" else self.backends[name].predict)([""])
            log.info("artifact %s: %s, ready in %.1f s", name, json.dumps(self.backends[name].info),
                     time.perf_counter() - started)
            for note in self.backends[name].notes:
                log.warning("artifact %s: %s", name, note)

    def _unservable(self, entry: Dict[str, Any]) -> str:
        servable = [a["name"] for a in self.bundle.artifacts if a["format"] in BACKENDS]
        if entry["format"] == "tensorrt":
            how = ("serve an ONNX artifact with --providers tensorrt (ONNX Runtime builds and caches the engine), "
                   "or load the engine with TensorRT or Triton directly")
        else:
            how = "serve another artifact"
        return (f"artifact {entry['name']!r} has format {entry['format']!r}, which {PROG} cannot run "
                f"(it runs {', '.join(BACKENDS)}); {how}; servable here: {', '.join(servable) or 'none'}")

    def metadata(self) -> Dict[str, Any]:
        artifacts = []
        for entry in self.bundle.artifacts:
            row = {k: entry.get(k) for k in ("name", "format", "precision", "runtime", "path")}
            row["served"] = entry["name"] in self.backends
            if row["served"]:
                row.update(self.backends[entry["name"]].info)
            artifacts.append(row)
        embedding = {"dimension": self.bundle.dimension} if self.bundle.task == "embedding" else {}
        return {"target": self.settings.target, "description": self.settings.description, "task": self.bundle.task,
                "endpoint": TASK_ENDPOINT[self.bundle.task], **embedding, "labels": self.bundle.labels,
                "max_length": self.bundle.manifest["tokenizer"]["max_length"], "default_artifact": self.default,
                "artifacts": artifacts, "max_batch": self.max_batch, "max_body_bytes": self.max_body_bytes,
                "runtime_version": self.settings.runtime_version}

    def predict(self, payload: Any) -> Dict[str, Any]:
        """POST /predict: labels for the texts (a classification bundle)."""
        name, predictions = self._answer("/predict", payload, "predict")
        return {"artifact": name, "predictions": predictions}

    def embed(self, payload: Any) -> Dict[str, Any]:
        """POST /embed: one sentence vector per text (a sentence-embedding bundle)."""
        name, vectors = self._answer("/embed", payload, "embed")
        return {"artifact": name, "dimension": self.bundle.dimension,
                "embeddings": [[float(v) for v in row] for row in vectors]}

    def _answer(self, path: str, payload: Any, method: str) -> Tuple[str, Any]:
        """The artifact's name and what its backend's `method` returns for the request's texts."""
        self._check_task(path)
        name, backend, texts = self._request(payload)
        with self.lock:
            try:
                return name, getattr(backend, method)(texts)
            except InputError as exc:
                raise RequestError(400, one_line(exc)) from None

    def _check_task(self, path: str) -> None:
        wanted = TASK_ENDPOINT[self.bundle.task]
        if path != wanted:
            raise RequestError(400, f"this bundle is a {self.bundle.task} model: POST {wanted}, not {path}")

    def _request(self, payload: Any) -> Tuple[str, Any, List[str]]:
        """The artifact name, its backend and the texts of a valid request (else a RequestError)."""
        if not isinstance(payload, dict):
            raise RequestError(400, 'the request body must be a JSON object like {"texts": ["..."]}, got '
                               + json_type(payload))
        unknown = sorted(set(payload) - {"texts", "artifact"})
        if unknown:
            raise RequestError(400, f"unknown key {unknown[0]!r} in the request; allowed keys: texts, artifact")
        if "texts" not in payload:
            raise RequestError(400, 'missing "texts": send {"texts": ["some text", ...]}')
        texts = payload["texts"]
        if not isinstance(texts, list):
            hint = '; wrap a single text in a list: {"texts": ["..."]}' if isinstance(texts, str) else ""
            raise RequestError(400, f'"texts" must be an array of strings, got {json_type(texts)}{hint}')
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise RequestError(400, f'"texts"[{i}] is {json_type(text)}, expected a string')
        try:  # a "\udcff" escape decodes to a lone surrogate, which no tokenizer takes
            check_utf8(texts, '"texts"')
        except InputError as exc:
            raise RequestError(400, str(exc)) from None
        if len(texts) > self.max_batch:
            raise RequestError(413, f"{len(texts)} texts is over the limit of {self.max_batch} per request "
                                    "(--max-batch); split them over several requests")
        name = payload.get("artifact", self.default)
        if not isinstance(name, str):
            raise RequestError(400, f'"artifact" must be a string, got {json_type(name)}')
        backend = self.backends.get(name)
        if backend is None:
            served = ", ".join(self.backends)
            hint = (f"; start the server with --artifact {name} to serve it" if name in self.settings.artifacts or
                    any(a["name"] == name for a in self.bundle.artifacts) else "")
            raise RequestError(400, f"unknown artifact {name!r}; this server serves: {served}{hint}")
        return name, backend, texts


class Handler(BaseHTTPRequestHandler):
    timeout = 60  # seconds a client may stall mid-request before its thread gives up

    def version_string(self) -> str:
        # The Server header names the runtime version the bundle was generated with.
        return f"edgesmith-serve/{self.server.app.settings.runtime_version} {self.sys_version}"

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        app = self.server.app
        path = urlsplit(self.path).path
        try:
            allowed = ENDPOINTS.get(path)
            if allowed is None:
                raise RequestError(404, f"no endpoint {path!r}; use POST {TASK_ENDPOINT[app.bundle.task]}, GET /healthz "
                                        "or GET /metadata")
            if method not in allowed:
                raise RequestError(405, f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                                   {"Allow": ", ".join(allowed)})
            if path == "/predict":
                body = app.predict(self._read_json(app.max_body_bytes))
            elif path == "/embed":
                body = app.embed(self._read_json(app.max_body_bytes))
            elif path == "/healthz":
                body = {"status": "ok"}
            else:
                body = app.metadata()
                load = getattr(self.server, "load", None)  # an embedder's own server class may not count
                if load is not None:
                    body.update(load())
            self._send(200, body)
        except RequestError as exc:
            self._send(exc.status, {"error": exc.message}, exc.headers)
        except Exception as exc:  # a failure of ours, not the client's: log the traceback, answer one line
            log.exception("%s %s failed", method, path)
            self._send(500, {"error": f"internal error: {one_line(exc)}"})

    def _read_json(self, limit: int) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise RequestError(411, "chunked request bodies are not supported; send a Content-Length header")
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError(411, "missing Content-Length header; send the JSON body with its length")
        try:
            length = int(declared)
        except ValueError:
            raise RequestError(400, f"Content-Length {declared!r:.40} is not a number") from None
        if length < 0:
            raise RequestError(400, f"Content-Length {length} is negative")
        if length > limit:  # checked before reading: an oversized body is never read into memory
            raise RequestError(413, f"request body of {length} bytes is over the limit of {limit} bytes "
                                    "(--max-body-bytes); send fewer or shorter texts per request")
        try:
            raw = self.rfile.read(length)
        except (socket.timeout, OSError):
            raise RequestError(408, f"timed out reading the {length}-byte request body; "
                                    "was Content-Length larger than the body?") from None
        if len(raw) < length:
            raise RequestError(400, f"request body ended after {len(raw)} of {length} bytes (Content-Length)")
        try:
            return json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise RequestError(400, f"request body is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset "
                                    f"{exc.start}); send the JSON encoded as UTF-8") from None
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"request body is not usable JSON ({one_line(exc)})") from None

    def _send(self, status: int, body: Any, headers: Optional[Dict[str, str]] = None) -> None:
        try:
            data = (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed back: \u escapes are still valid JSON
            data = (json.dumps(body) + "\n").encode("ascii")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if status >= 400:
                self.send_header("Connection", "close")  # an unread or partly read body must not become the next request
                self.close_connection = True
            self.end_headers()
            if getattr(self, "command", None) != "HEAD":
                self.wfile.write(data)
        except OSError:  # the client went away; nothing left to tell it
            self.close_connection = True

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # The standard library's own errors (malformed request line, unknown
        # method, oversized headers) as JSON too, not as an HTML page.
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def log_message(self, fmt: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), fmt % args)


class Server(HTTPServer):
    """HTTPServer with a fixed pool of `workers` threads and a `backlog`-deep listen queue.

    The accept loop hands each connection to an idle worker and, while all of
    them are busy, stops accepting: further connections wait in the kernel's
    listen queue (instead of the default 5, which resets them under load) until
    a worker is free. So at most `workers` requests are in flight, however many
    clients connect, and none is refused while the queue has room.
    """

    daemon_threads = True  # kept for embedders that read it: the workers are daemon threads

    def __init__(self, address: Tuple[str, int], handler: type, app: App, workers: int = DEFAULT_WORKERS,
                 backlog: Optional[int] = None) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        self.workers = workers
        self.request_queue_size = backlog or default_backlog()  # listen() in server_activate takes it
        self._slots = threading.Semaphore(workers)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self.in_flight = 0
        self.peak_in_flight = 0
        super().__init__(address, handler)  # binds and listens; raises OSError before any worker exists
        self._pool = [threading.Thread(target=self._work, name=f"serve-worker-{i}", daemon=True)
                      for i in range(workers)]
        for thread in self._pool:
            thread.start()

    def process_request(self, request: Any, client_address: Any) -> None:
        # Runs in the accept loop: wait for a free worker, polling so shutdown() is never stuck here.
        while not self._slots.acquire(timeout=0.5):
            if self._stopping.is_set():
                self.shutdown_request(request)
                return
        self._jobs.put((request, client_address))

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            request, client_address = job
            with self._count_lock:
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            try:
                self.finish_request(request, client_address)
            except Exception:
                self.handle_error(request, client_address)
            finally:
                self.shutdown_request(request)
                with self._count_lock:
                    self.in_flight -= 1
                self._slots.release()

    def load(self) -> Dict[str, int]:
        """The pool's size and use, for GET /metadata."""
        with self._count_lock:
            return {"workers": self.workers, "backlog": self.request_queue_size, "in_flight": self.in_flight,
                    "peak_in_flight": self.peak_in_flight}

    def shutdown(self) -> None:
        self._stopping.set()
        super().shutdown()

    def server_close(self) -> None:
        self._stopping.set()
        super().server_close()
        for _ in getattr(self, "_pool", ()):
            self._jobs.put(None)  # each worker ends after the request it is handling


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"Serve the {settings.target} bundle ({settings.description}) over HTTP: "
                    + (f"classify texts as {', '.join(settings.labels)}." if settings.labels else
                       "a sentence vector per text (POST /embed)."))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one and prints it)")
    parser.add_argument("--artifact", action="append", choices=settings.artifacts,
                        help=f"artifact to serve; repeat to serve several, the first is the default "
                             f"(default: {settings.default_artifact})")
    parser.add_argument("--providers", default="auto",
                        help="ONNX Runtime execution providers in order of preference, from tensorrt, cuda, cpu; "
                             "the model only runs on ones named here ('auto' = tensorrt,cuda,cpu, default)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="device for PyTorch artifacts (default: cuda when present)")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device index (default: %(default)s)")
    parser.add_argument("--cache-dir", help="TensorRT engine and timing cache directory "
                                            "(default: trt_cache/ in the bundle directory)")
    parser.add_argument("--trt-workspace-mb", type=positive, default=settings.trt_workspace_mb,
                        help="TensorRT builder workspace in MiB (default: %(default)s)")
    parser.add_argument("--cudnn-conv-algo-search", choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"), default="HEURISTIC",
                        help="CUDA provider's cuDNN convolution algorithm search (default: %(default)s)")
    largest = settings.shapes["batch"]["max"]
    parser.add_argument("--threads", type=int, default=0,
                        help=f"CPU threads for inference, 0..{cpu_count()} (0 = library default)")
    parser.add_argument("--max-batch", type=int, default=largest,
                        help=f"most texts per request, 1..{max(largest, MAX_BATCH_SIZE)} (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest request body accepted, 1..{MAX_BODY_BYTES} (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"requests handled at once, 1..{MAX_WORKERS}; more wait in the listen queue "
                             "(default: %(default)s)")
    parser.add_argument("--backlog", type=int, default=default_backlog(),
                        help="connections the listen queue holds while every worker is busy (default: %(default)s)")
    parser.add_argument("--bundle", default=str(settings.bundle_dir), help="bundle directory or .tar.gz (default: this one)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle (faster start)")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    # Checked before the bundle is opened; one line, never a silent clamp.
    problem = (threads_problem("--threads", args.threads, zero_is_all=True)
               or batch_problem("--max-batch", args.max_batch, largest_profiled=largest, what="texts per request")
               or out_of_range("--max-body-bytes", args.max_body_bytes, 1, MAX_BODY_BYTES,
                               "a request body is read into memory whole")
               or out_of_range("--workers", args.workers, 1, MAX_WORKERS, "each worker is a thread holding one request")
               or backlog_problem("--backlog", args.backlog))
    if problem:
        parser.exit(2, f"{PROG}: {problem}\n")
    return args


def exit_now(code: int) -> None:
    """End the serve.py process with `code` once main() has shut down cleanly, without running native
    libraries' exit-time destructors: torch's and ONNX Runtime's thread pools can abort the process there
    ("terminate called without an active exception", status -6), which a supervisor reads as a crash."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _stop(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # ends serve_forever in the main thread; SIGTERM shuts down cleanly


def main(argv: Optional[Sequence[str]], settings: Settings) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, settings)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        bundle = load_bundle(args.bundle, verify=not args.no_verify)
    except BundleError as exc:
        print(f"{PROG}: {one_line(exc, 1000)}", file=sys.stderr)
        return 2
    try:
        app = App(bundle, args, settings)
    except (BundleError, OSError) as exc:
        bundle.close()
        print(f"{PROG}: {one_line(exc, 1000)}", file=sys.stderr)
        return 2
    try:
        server = Server((args.host, args.port), Handler, app, workers=args.workers, backlog=args.backlog)
    except OSError as exc:
        bundle.close()
        print(f"{PROG}: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
              "pick another --port or --host", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    log.info("%d workers, listen backlog %d", server.workers, server.request_queue_size)
    print(f"{PROG}: listening on http://{host}:{port} (artifacts: {', '.join(app.backends)})", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        bundle.close()
    return 0
