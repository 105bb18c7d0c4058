#!/usr/bin/env python3
"""Sentence vectors from this edgesmith bundle (generated; see README.md).

Needs only numpy, tokenizers and onnxruntime:
    pip install numpy tokenizers onnxruntime
Examples:
    python run.py "The battery lasts all day." "Screen cracked in a week."
    python run.py --similarity "How do I reset my password?" "I forgot my login."
    python run.py --file corpus.txt --batch-size 16 --threads 4
Prints one JSON object per text: {"text", "embedding"}; with --similarity, {"texts", "similarity"}.
The code is in runtime/run_cli.py; this file holds the values for this bundle.
"""
import sys
from pathlib import Path

BUNDLE_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BUNDLE_DIR))

from runtime import run_cli  # noqa: E402

TARGET = 'cpu'
DESCRIPTION = 'x86-64 CPU: ONNX Runtime "int8" & fp32'
LABELS = []
DEFAULT_ARTIFACT = 'int8_dynamic'
ARTIFACTS = ['fp32', 'int8_dynamic', 'ov_int8']

TASK = 'embedding'

SETTINGS = run_cli.Settings(target=TARGET, description=DESCRIPTION, labels=LABELS, default_artifact=DEFAULT_ARTIFACT,
                            artifacts=ARTIFACTS, bundle_dir=BUNDLE_DIR, task=TASK)


def main(argv=None):
    return run_cli.main(argv, SETTINGS)


if __name__ == "__main__":
    sys.exit(main())
