"""edgesmith on-device runtime: open a bundle, verify it, classify texts.

Copied verbatim into every bundle. It needs only the standard library and
numpy to import; tokenizers and onnxruntime are imported when a classifier is
made. Never import torch, transformers or onnx here: devices do not have them.

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
from .onnx_classifier import Classifier

from .version import VERSION as __version__

__all__ = ["Bundle", "BundleError", "Classifier", "InputError", "__version__", "load_bundle"]
