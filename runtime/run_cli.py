"""run.py's command line (cpu bundles): classify texts with one of the bundle's ONNX models.

run.py itself only holds the values baked in for its bundle (Settings) and
calls main(); the code is here so every bundle runs the same, tested copy.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .bundle import load_bundle
from .errors import BundleError
from .texts import read_texts

PROG = "run.py"


@dataclass(frozen=True)
class Settings:
    """The values run.py is generated with."""

    target: str
    description: str
    labels: List[str]
    default_artifact: str
    artifacts: List[str]
    bundle_dir: Path  # where run.py lies: the default --bundle


def parse_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=f"Classify text as {', '.join(settings.labels)} with the {settings.target} bundle "
                    f"({settings.description}).")
    parser.add_argument("texts", nargs="*", help="texts to classify")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    parser.add_argument("--artifact", default=settings.default_artifact, choices=settings.artifacts,
                        help="which model of the bundle to run (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per inference call (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for ONNX Runtime (0 = all cores)")
    parser.add_argument("--bundle", default=str(settings.bundle_dir), help="bundle directory or .tar.gz (default: this one)")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.threads < 0:
        parser.error("--threads must be 0 or more")
    return args


def main(argv: Optional[Sequence[str]], settings: Settings) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, settings)
    try:
        texts = read_texts(args.texts, args.file)
        with load_bundle(args.bundle) as bundle:
            classifier = bundle.classifier(args.artifact, threads=args.threads or None)
            predictions = classifier.predict(texts, batch_size=args.batch_size)
    except BundleError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    for text, prediction in zip(texts, predictions):
        print(json.dumps({"text": text, **prediction}, ensure_ascii=False))
    return 0
