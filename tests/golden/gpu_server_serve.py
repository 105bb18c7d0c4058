#!/usr/bin/env python3
"""HTTP inference server for this edgesmith bundle (generated; see README.md).

Standard library HTTP server plus the bundle's runtime:
    POST /predict   {"texts": ["...", ...], "artifact": "optional name"}
                    -> {"artifact": name, "predictions": [{"label", "score", "scores"}, ...]}
    GET  /healthz   -> {"status": "ok"}
    GET  /metadata  -> labels, artifacts (and what serves them), limits
Errors are JSON {"error": "one line"} with a 4xx status for bad requests and
500 (logged with its traceback here, never sent to the client) for failures.

Examples:
    python serve.py                                  # default artifact, providers auto
    python serve.py --port 0 --providers cuda,cpu    # port 0: pick a free port and print it
    python serve.py --artifact NAME --device cuda    # a PyTorch (bitsandbytes nf4) artifact on the GPU
"""
import argparse
import inspect
import json
import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import BundleError, InputError, load_bundle  # noqa: E402
from runtime.errors import one_line  # noqa: E402

TARGET = 'gpu_server'
DESCRIPTION = 'x86-64 server with an NVIDIA GPU: TensorRT "fp16" & nf4'
LABELS = ['negative', 'positive']
DEFAULT_ARTIFACT = 'fp16'
ARTIFACTS = ['fp16', 'engine_fp16', 'nf4']
RUNTIME_VERSION = '0.1.0'
# Shape ranges of the target: the TensorRT optimization profile, and the
# largest batch run at once.
SHAPES = {'batch': {'min': 1, 'opt': 32, 'max': 128}, 'sequence': {'min': 8, 'opt': 128, 'max': 512}}
TRT_WORKSPACE_MB = 1024
DEFAULT_MAX_BODY_BYTES = 1 << 20
ENDPOINTS = {"/predict": ("POST",), "/healthz": ("GET", "HEAD"), "/metadata": ("GET", "HEAD")}
JSON_TYPES = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}

log = logging.getLogger("serve")


class RequestError(Exception):
    """A bad request: answered with `status` and {"error": message}."""

    def __init__(self, status, message, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def default_cache_dir(bundle):
    # Next to the models for a bundle directory; beside an archive (whose
    # extraction is temporary) so engines survive restarts.
    bundle = bundle.resolve()
    return bundle / "trt_cache" if bundle.is_dir() else bundle.parent / (bundle.name.split(".")[0] + ".trt_cache")


def json_type(value):
    return JSON_TYPES.get(type(value), type(value).__name__)


class _MinLength:
    """Pads every batch to at least `length` tokens: a TensorRT engine only takes
    shapes inside its optimization profile, whose minimum may exceed a short batch."""

    def __init__(self, encoder, length):
        self.encoder = encoder
        self.length = length

    def encode(self, texts):
        import numpy as np

        arrays = self.encoder.encode(texts)
        short = self.length - arrays["input_ids"].shape[1]
        if short <= 0:
            return arrays
        pads = {"input_ids": self.encoder.pad_id, "attention_mask": 0, "token_type_ids": 0}
        return {k: np.pad(v, ((0, 0), (0, short)), constant_values=pads.get(k, 0)) for k, v in arrays.items()}


class OnnxBackend:
    """An ONNX artifact on ONNX Runtime: TensorRT, CUDA or CPU execution provider."""

    def __init__(self, bundle, entry, args):
        from runtime.providers import (CUDA, TENSORRT, available_providers, check_session, cuda_options,
                                       parse_providers, plan_providers, tensorrt_options)

        name = entry["name"]
        requested = parse_providers(args.providers)
        have = available_providers()
        options = {CUDA: cuda_options(device_id=args.device_id, cudnn_conv_algo_search=args.cudnn_conv_algo_search)}
        if TENSORRT in requested and TENSORRT in have:
            precision = entry.get("precision", "")
            cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir(Path(args.bundle))
            cache = cache / name
            cache.mkdir(parents=True, exist_ok=True)
            batch, seq = SHAPES["batch"], SHAPES["sequence"]
            options[TENSORRT] = tensorrt_options(
                device_id=args.device_id, cache_dir=cache, fp16=precision == "fp16", int8=precision == "int8",
                workspace_mb=args.trt_workspace_mb, input_names=self._input_names(bundle.root / entry["path"]),
                batch=(batch["min"], batch["opt"], batch["max"]),
                sequence=(seq["min"], seq["opt"], max(seq["max"], bundle.manifest["tokenizer"]["max_length"])))
        plan = plan_providers(requested, available=have, options=options)
        self.classifier = bundle.classifier(name, threads=args.threads or None, providers=plan.providers)
        self.providers = check_session(self.classifier.session, plan)
        self.notes = plan.notes
        self.batch_size = SHAPES["batch"]["max"]
        self.info = {"backend": "onnxruntime", "providers": self.providers, "notes": self.notes}
        if self.providers[0] == TENSORRT:
            self.classifier.encoder = _MinLength(self.classifier.encoder, SHAPES["sequence"]["min"])
            self.info["trt_cache"] = options[TENSORRT]["trt_engine_cache_path"]

    @staticmethod
    def _input_names(model_path):
        # The TensorRT profile must name exactly the graph's inputs (a DistilBERT
        # export has no token_type_ids); read them with a cheap unoptimized CPU session.
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BundleError(f"{model_path}: onnxruntime cannot read the model ({one_line(exc)}); rebuild the bundle") from None
        return [i.name for i in session.get_inputs()]

    def predict(self, texts):
        return self.classifier.predict(texts, batch_size=self.batch_size)


class TorchBackend:
    """A PyTorch checkpoint (the bitsandbytes nf4 one) with transformers: on CUDA
    in the compute dtype stored in the checkpoint, on the CPU in float32."""

    def __init__(self, bundle, entry, args):
        name = entry["name"]
        try:
            import torch
            from transformers import AutoModelForSequenceClassification
        except ImportError as exc:
            raise BundleError(f"artifact {name!r} is a PyTorch checkpoint and needs packages that are not installed "
                              f"({exc.name}); install them with: pip install torch transformers bitsandbytes accelerate") from None
        from runtime.onnx_classifier import predictions
        from runtime.tokenize import TextEncoder

        self._torch, self._predictions = torch, predictions
        device = args.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise BundleError(f"artifact {name!r}: --device cuda, but PyTorch sees no CUDA GPU "
                              f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use --device cpu or install a CUDA build of torch")
        if args.threads:
            torch.set_num_threads(args.threads)
        path = bundle.root / entry["path"]
        model_dir = path if path.is_dir() else path.parent  # the artifact may name the weights file
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                str(model_dir), local_files_only=True, use_safetensors=True,
                device_map={"": args.device_id} if device == "cuda" else "cpu").eval()
        except Exception as exc:  # ImportError (bitsandbytes/accelerate), OSError, ValueError...
            raise BundleError(f"artifact {name!r} ({model_dir}): transformers cannot load it ({one_line(exc)}); "
                              "check the packages in README.md (pip install transformers bitsandbytes accelerate)") from None
        if device == "cpu":
            self._float32_compute(model)
        if model.config.num_labels != len(bundle.labels):
            raise BundleError(f"artifact {name!r} has {model.config.num_labels} classes but the bundle has labels "
                              f"{bundle.labels}; rebuild the bundle")
        self.model, self.device = model, torch.device("cuda", args.device_id) if device == "cuda" else torch.device("cpu")
        tokenizer = bundle.manifest["tokenizer"]
        self.encoder = TextEncoder.from_file(bundle.root / tokenizer["path"], tokenizer["max_length"])
        accepted = inspect.signature(model.forward).parameters  # DistilBERT takes no token_type_ids
        self.input_names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted]
        self.labels = bundle.labels
        self.batch_size = SHAPES["batch"]["max"]
        self.notes = []
        quant = getattr(model.config, "quantization_config", None)
        quant = quant.to_dict() if hasattr(quant, "to_dict") else (quant or {})
        self.info = {"backend": "torch", "device": str(self.device), "notes": self.notes,
                     "quantization": quant.get("bnb_4bit_quant_type") or quant.get("quant_method")}

    @staticmethod
    def _float32_compute(model):
        # bitsandbytes' CPU kernels want float32/bfloat16 activations; the
        # checkpoint stores the GPU's compute dtype (float16).
        try:
            import bitsandbytes as bnb
        except ImportError:
            return
        import torch

        for module in model.modules():
            if isinstance(module, bnb.nn.Linear4bit):
                module.compute_dtype = torch.float32
                module.compute_type_is_set = True

    def predict(self, texts):
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                arrays = self.encoder.encode(texts[start:start + self.batch_size])
                feeds = {k: torch.from_numpy(arrays[k]).to(self.device) for k in self.input_names}
                chunks.append(self.model(**feeds).logits.float().cpu().numpy())
        return [p for chunk in chunks for p in self._predictions(chunk, self.labels)]


BACKENDS = {"onnx": OnnxBackend, "torch": TorchBackend}


class App:
    """The served artifacts and the request logic, independent of HTTP."""

    def __init__(self, bundle, args):
        self.bundle = bundle
        self.max_batch = args.max_batch
        self.max_body_bytes = args.max_body_bytes
        self.lock = threading.Lock()  # one inference at a time: predictable GPU memory and latency
        self.backends = {}
        names = list(dict.fromkeys(args.artifact or [DEFAULT_ARTIFACT]))
        self.default = names[0]
        for name in names:
            entry = bundle.artifact(name)
            backend = BACKENDS.get(entry["format"])
            if backend is None:
                raise BundleError(self._unservable(entry))
            started = time.perf_counter()
            self.backends[name] = backend(bundle, entry, args)
            self.backends[name].predict([""])  # warm-up: TensorRT builds (or loads) its engine here, not in a request
            log.info("artifact %s: %s, ready in %.1f s", name, json.dumps(self.backends[name].info),
                     time.perf_counter() - started)
            for note in self.backends[name].notes:
                log.warning("artifact %s: %s", name, note)

    def _unservable(self, entry):
        servable = [a["name"] for a in self.bundle.artifacts if a["format"] in BACKENDS]
        if entry["format"] == "tensorrt":
            how = ("serve an ONNX artifact with --providers tensorrt (ONNX Runtime builds and caches the engine), "
                   "or load the engine with TensorRT or Triton directly")
        else:
            how = "serve another artifact"
        return (f"artifact {entry['name']!r} has format {entry['format']!r}, which serve.py cannot run "
                f"(it runs {', '.join(BACKENDS)}); {how}; servable here: {', '.join(servable) or 'none'}")

    def metadata(self):
        artifacts = []
        for entry in self.bundle.artifacts:
            row = {k: entry.get(k) for k in ("name", "format", "precision", "runtime", "path")}
            row["served"] = entry["name"] in self.backends
            if row["served"]:
                row.update(self.backends[entry["name"]].info)
            artifacts.append(row)
        return {"target": TARGET, "description": DESCRIPTION, "labels": self.bundle.labels,
                "max_length": self.bundle.manifest["tokenizer"]["max_length"], "default_artifact": self.default,
                "artifacts": artifacts, "max_batch": self.max_batch, "max_body_bytes": self.max_body_bytes,
                "runtime_version": RUNTIME_VERSION}

    def predict(self, payload):
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
        if len(texts) > self.max_batch:
            raise RequestError(413, f"{len(texts)} texts is over the limit of {self.max_batch} per request "
                                    "(--max-batch); split them over several requests")
        name = payload.get("artifact", self.default)
        if not isinstance(name, str):
            raise RequestError(400, f'"artifact" must be a string, got {json_type(name)}')
        backend = self.backends.get(name)
        if backend is None:
            served = ", ".join(self.backends)
            hint = (f"; start the server with --artifact {name} to serve it" if name in ARTIFACTS or
                    any(a["name"] == name for a in self.bundle.artifacts) else "")
            raise RequestError(400, f"unknown artifact {name!r}; this server serves: {served}{hint}")
        with self.lock:
            try:
                predictions = backend.predict(texts)
            except InputError as exc:
                raise RequestError(400, one_line(exc)) from None
        return {"artifact": name, "predictions": predictions}


class Handler(BaseHTTPRequestHandler):
    server_version = f"edgesmith-serve/{RUNTIME_VERSION}"
    timeout = 60  # seconds a client may stall mid-request before its thread gives up

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_OPTIONS(self):
        self._dispatch("OPTIONS")

    def _dispatch(self, method):
        app = self.server.app
        path = urlsplit(self.path).path
        try:
            allowed = ENDPOINTS.get(path)
            if allowed is None:
                raise RequestError(404, f"no endpoint {path!r}; use POST /predict, GET /healthz or GET /metadata")
            if method not in allowed:
                raise RequestError(405, f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                                   {"Allow": ", ".join(allowed)})
            if path == "/predict":
                body = app.predict(self._read_json(app.max_body_bytes))
            elif path == "/healthz":
                body = {"status": "ok"}
            else:
                body = app.metadata()
            self._send(200, body)
        except RequestError as exc:
            self._send(exc.status, {"error": exc.message}, exc.headers)
        except Exception as exc:  # a failure of ours, not the client's: log the traceback, answer one line
            log.exception("%s %s failed", method, path)
            self._send(500, {"error": f"internal error: {one_line(exc)}"})

    def _read_json(self, limit):
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
        except UnicodeDecodeError:
            raise RequestError(400, "request body is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise RequestError(400, f"request body is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
        except (ValueError, RecursionError) as exc:
            raise RequestError(400, f"request body is not usable JSON ({one_line(exc)})") from None

    def _send(self, status, body, headers=None):
        data = (json.dumps(body, ensure_ascii=False) + "\n").encode("utf-8")
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

    def send_error(self, code, message=None, explain=None):
        # The standard library's own errors (malformed request line, unknown
        # method, oversized headers) as JSON too, not as an HTML page.
        self._send(code, {"error": message or self.responses.get(code, ("error",))[0]})

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, handler, app):
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.app = app
        super().__init__(address, handler)


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=f"Serve the {TARGET} bundle ({DESCRIPTION}) over HTTP: classify texts as {', '.join(LABELS)}.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; 0.0.0.0 for all)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s; 0 picks a free one and prints it)")
    parser.add_argument("--artifact", action="append", choices=ARTIFACTS,
                        help=f"artifact to serve; repeat to serve several, the first is the default (default: {DEFAULT_ARTIFACT})")
    parser.add_argument("--providers", default="auto",
                        help="ONNX Runtime execution providers in order of preference, from tensorrt, cuda, cpu; "
                             "the model only runs on ones named here ('auto' = tensorrt,cuda,cpu, default)")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="device for PyTorch artifacts (default: cuda when present)")
    parser.add_argument("--device-id", type=int, default=0, help="CUDA device index (default: %(default)s)")
    parser.add_argument("--cache-dir", help="TensorRT engine and timing cache directory "
                                            "(default: trt_cache/ in the bundle directory)")
    parser.add_argument("--trt-workspace-mb", type=positive, default=TRT_WORKSPACE_MB,
                        help="TensorRT builder workspace in MiB (default: %(default)s)")
    parser.add_argument("--cudnn-conv-algo-search", choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"), default="HEURISTIC",
                        help="CUDA provider's cuDNN convolution algorithm search (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for inference (0 = library default)")
    parser.add_argument("--max-batch", type=positive, default=SHAPES["batch"]["max"],
                        help="most texts per request (default: %(default)s)")
    parser.add_argument("--max-body-bytes", type=positive, default=DEFAULT_MAX_BODY_BYTES,
                        help="largest request body accepted (default: %(default)s)")
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle directory or .tar.gz (default: this one)")
    parser.add_argument("--no-verify", action="store_true", help="skip the sha256 check of the bundle (faster start)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error("--threads must be 0 or more")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def _stop(signum, frame):
    raise KeyboardInterrupt  # ends serve_forever in the main thread; SIGTERM shuts down cleanly


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        bundle = load_bundle(args.bundle, verify=not args.no_verify)
    except BundleError as exc:
        print(f"serve.py: {one_line(exc, 1000)}", file=sys.stderr)
        return 2
    try:
        app = App(bundle, args)
    except (BundleError, OSError) as exc:
        bundle.close()
        print(f"serve.py: {one_line(exc, 1000)}", file=sys.stderr)
        return 2
    try:
        server = Server((args.host, args.port), Handler, app)
    except OSError as exc:
        bundle.close()
        print(f"serve.py: cannot listen on {args.host}:{args.port} ({exc.strerror or exc}); "
              "pick another --port or --host", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    print(f"serve.py: listening on http://{host}:{port} (artifacts: {', '.join(app.backends)})", flush=True)
    signal.signal(signal.SIGTERM, _stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        bundle.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
