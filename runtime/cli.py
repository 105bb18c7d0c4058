"""`python -m runtime BUNDLE [TEXT ...]`: classify (or, for an embedding bundle, embed) texts, one JSON line per text.

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
from .limits import MAX_BATCH_SIZE, batch_problem, cpu_count, threads_problem
from .texts import read_texts


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runtime", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="bundle directory or .tar.gz archive")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="texts to classify")
    parser.add_argument("--file", help="read texts from this UTF-8 file, one per non-empty line ('-' for stdin)")
    parser.add_argument("--artifact", help="artifact name (default: the manifest's default_artifact)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help=f"texts per inference call, 1..{MAX_BATCH_SIZE} (default: %(default)s)")
    parser.add_argument("--threads", type=int, help=f"ONNX Runtime intra-op threads, 1..{cpu_count()} (default: all cores)")
    parser.add_argument("--no-verify", action="store_true", help="skip sha256 verification (faster start)")
    parser.add_argument("--similarity", action="store_true",
                        help="embedding bundles: print the cosine similarity of exactly two texts instead of their vectors")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    # Intermixed: `BUNDLE --artifact fp32 "some text"` must work, not only texts-before-options.
    args = build_parser().parse_intermixed_args(argv)
    # Checked before the bundle is opened; one line, never a silent clamp.
    problem = batch_problem("--batch-size", args.batch_size) or threads_problem("--threads", args.threads, zero_is_all=False)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    try:
        texts = read_texts(args.texts, args.file)
        with load_bundle(args.bundle, verify=not args.no_verify) as bundle:
            if bundle.task == "embedding":
                return _embed(bundle, args, texts)
            if args.similarity:
                print(f"error: --similarity compares sentence vectors, and {args.bundle} is a {bundle.task} bundle",
                      file=sys.stderr)
                return 2
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


def _embed(bundle, args: argparse.Namespace, texts: list) -> int:
    """An embedding bundle's output: {"text", "embedding"} per text, or {"texts", "similarity"}."""
    from .run_cli import embedding_records

    if args.similarity and len(texts) != 2:
        print(f"error: --similarity compares exactly two texts, got {len(texts)}", file=sys.stderr)
        return 2
    model = bundle.embedder(args.artifact, threads=args.threads)
    step = args.batch_size
    chunks = [texts] if args.similarity else [texts[i:i + step] for i in range(0, len(texts), step)]
    for chunk in chunks:
        for record in embedding_records(model, chunk, step, args.similarity):
            print(json.dumps(record))
        sys.stdout.flush()
    return 0
