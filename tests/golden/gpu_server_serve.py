#!/usr/bin/env python3
"""HTTP inference server for this edgesmith bundle (generated; see README.md).

Standard library HTTP server plus the bundle's runtime:
    POST /predict   {"texts": ["...", ...], "artifact": "optional name"}
                    -> {"artifact": name, "predictions": [{"label", "score", "scores"}, ...]}
    POST /embed     (a sentence-embedding bundle, instead of /predict)
                    -> {"artifact": name, "dimension": d, "embeddings": [[float, ...], ...]}
    GET  /healthz   -> {"status": "ok"}
    GET  /metadata  -> labels, artifacts (and what serves them), limits
Errors are JSON {"error": "one line"} with a 4xx status for bad requests and
500 (logged with its traceback here, never sent to the client) for failures.

Examples:
    python serve.py                                  # default artifact, providers auto
    python serve.py --port 0 --providers cuda,cpu    # port 0: pick a free port and print it
    python serve.py --artifact NAME --device cuda    # a PyTorch (bitsandbytes nf4) artifact on the GPU

The code is in runtime/server.py and runtime/server_backends.py; this file
holds the values for this bundle.
"""
import sys
from pathlib import Path

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import server  # noqa: E402
from runtime.server import Handler, Server  # noqa: E402,F401  (with App: the pieces to embed the server)

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

SETTINGS = server.Settings(target=TARGET, description=DESCRIPTION, labels=LABELS, default_artifact=DEFAULT_ARTIFACT,
                           artifacts=ARTIFACTS, runtime_version=RUNTIME_VERSION, shapes=SHAPES,
                           trt_workspace_mb=TRT_WORKSPACE_MB, bundle_dir=BUNDLE_DIR)


def parse_args(argv):
    return server.parse_args(argv, SETTINGS)


def App(bundle, args):  # noqa: N802  (named like the runtime.server.App it makes, which embedders call)
    return server.App(bundle, args, SETTINGS)


def main(argv=None):
    return server.main(argv, SETTINGS)


if __name__ == "__main__":
    server.exit_now(main())
