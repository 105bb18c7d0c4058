"""`python -m runtime BUNDLE [TEXT ...]`: classify texts, one JSON line per text.

Meant for shell use on a device: results go to stdout as JSON lines; any
BundleError becomes one line on stderr and exit status 2, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Optional, Sequence

from .bundle import load_bundle
from .errors import BundleError
from .texts import read_texts


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle directory or .tar.gz archive")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--file", help="read texts from this UTF-8 file, one per non-empty line ('-' for stdin)")
    parser.add_argument("--artifact", help="artifact name (default: the manifest's default_artifact)")
    parser.add_argument("--batch-size", type=_positive_int, default=32)
    parser.add_argument("--threads", type=_positive_int, help="ONNX Runtime intra-op threads")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 verification (faster start)")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Intermixed: `BUNDLE --artifact fp32 "some text"` must work, not only texts-before-options.
    args = build_parser().parse_intermixed_args(argv)
    try:
        texts = read_texts(args.texts, args.file)
        with load_bundle(args.bundle, verify=not args.no_verify) as bundle:
            classifier = bundle.classifier(args.artifact, threads=args.threads)
        # Print batch by batch so long inputs stream instead of waiting for the end.
        step = args.batch_size
        for start in range(0, len(texts), step):
            chunk = texts[start:start + step]
            for text, result in zip(chunk, classifier.predict(chunk, batch_size=step)):
                print(json.dumps({"text": text, **result}))
            sys.stdout.flush()
    except BundleError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    return 0
