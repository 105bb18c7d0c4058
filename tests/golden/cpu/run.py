#!/usr/bin/env python3
"""Classify text with this edgesmith bundle (generated; see README.md).

Needs only numpy, tokenizers and onnxruntime:
    pip install numpy tokenizers onnxruntime
Examples:
    python run.py "The battery lasts all day." "Screen cracked in a week."
    python run.py --file reviews.txt --batch-size 16 --threads 4
    python run.py --artifact fp32 "Compare with the full-precision model."
Prints one JSON object per text: {"text", "label", "score", "scores"}.
"""
import argparse
import json
import sys
from pathlib import Path

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import BundleError, load_bundle  # noqa: E402

TARGET = 'cpu'
DESCRIPTION = 'x86-64 CPU: ONNX Runtime "int8" & fp32'
LABELS = ['negative', 'positive']
DEFAULT_ARTIFACT = 'int8_dynamic'
ARTIFACTS = ['fp32', 'int8_dynamic']


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description=f"Classify text as {', '.join(LABELS)} with the {TARGET} bundle ({DESCRIPTION}).")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    parser.add_argument("--artifact", default=DEFAULT_ARTIFACT, choices=ARTIFACTS,
                        help="which model of the bundle to run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per inference call (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0 = all cores)")
    parser.add_argument("--bundle", default=str(BUNDLE_DIR), help="bundle directory or .tar.gz (default: this one)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 or more")
    return args


def read_texts(args):
    texts = list(args.texts)
    if args.file:
        handle = sys.stdin if args.file == "-" else open(args.file, encoding="utf-8")
        with handle:
            texts += [line.rstrip("\n") for line in handle if line.strip()]
    return texts


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        texts = read_texts(args)
    except OSError as e:
        print(f"run.py: cannot read --file {args.file}: {e.strerror}", file=sys.stderr)
        return 2
    if not texts:
        print("run.py: no texts given; pass them as arguments or with --file", file=sys.stderr)
        return 2
    try:
        with load_bundle(args.bundle) as bundle:
            classifier = bundle.classifier(args.artifact, threads=args.threads or None)
            predictions = classifier.predict(texts, batch_size=args.batch_size)
    except BundleError as e:
        print(f"run.py: {e}", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictions):
        print(json.dumps({"text": text, **prediction}, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
