"""edgesmith on-device runtime: open a bundle, verify it, classify texts.

Copied verbatim into every bundle. It needs only the standard library and
numpy to import; tokenizers and onnxruntime are imported when a classifier is
made. Never import torch, transformers or onnx here: devices do not have them.

    from runtime import load_bundle
    with load_bundle("bundle.tar.gz") as bundle:
        print(bundle.classifier().predict(["great movie"]))
"""
from __future__ import annotations

from .bundle import Bundle, load_bundle
from .errors import BundleError, InputError
from .onnx_classifier import Classifier

__version__ = "0.1.0"

__all__ = ["Bundle", "BundleError", "Classifier", "InputError", "__version__", "load_bundle"]
