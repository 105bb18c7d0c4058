"""edgesmith on-device runtime: open a bundle, verify it, classify texts.

Copied verbatim into every bundle. It needs only the standard library and
numpy to import; tokenizers and onnxruntime (or openvino, for OpenVINO IR
artifacts) are imported when a classifier is made. Never import torch, transformers or onnx here: devices do not have them.

It also holds the code of the bundles' generated scripts, which only carry
their bundle's values: run.py (run_cli), run_engine.py (engine_cli and
tensorrt_runner), serve.py (server, server_backends, nf4). Their packages
(tensorrt, pycuda, torch, transformers, bitsandbytes) are imported when they
run, never on import.

    from runtime import load_bundle
    with load_bundle("bundle.tar.gz") as bundle:
        print(bundle.classifier().predict(["great movie"]))
"""
from __future__ import annotations

from .bundle import Bundle, load_bundle
from .errors import BundleError, InputError
from .version import VERSION as __version__


def __getattr__(name: str):
    # Classifier (and numpy with it) is imported on first use: the build system
    # imports runtime.integrity and runtime.tokenize while SCons reads the build
    # files, and a no-op build should not pay for numpy.
    if name == "Classifier":
        from .onnx_classifier import Classifier

        return Classifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = ["Bundle", "BundleError", "Classifier", "InputError", "__version__", "load_bundle"]
