"""run.py's command line (cpu bundles): classify texts, or embed them, with one of the bundle's models.

run.py itself only holds the values baked in for its bundle (Settings) and
calls main(); the code is here so every bundle runs the same, tested copy.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

from .bundle import load_bundle
from .errors import BundleError
from .limits import MAX_BATCH_SIZE, batch_problem, cpu_count, threads_problem
from .texts import json_line, read_texts

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
    task: str = "classification"  # or "embedding": a sentence vector per text


def parse_args(argv: Sequence[str], settings: Settings) -> argparse.Namespace:
    embedding = settings.task == "embedding"
    what = ("Print each text's sentence vector (or, with --similarity, the cosine similarity of two texts)"
            if embedding else f"Classify text as {', '.join(settings.labels)}")
    parser = argparse.ArgumentParser(description=f"{what} with the {settings.target} bundle ({settings.description}).")
    parser.add_argument("texts", nargs="*", help="texts to embed" if embedding else "texts to classify")
    if embedding:
        parser.add_argument("--similarity", action="store_true",
                            help="print the cosine similarity of exactly two texts instead of their vectors")
        parser.add_argument("--search", metavar="QUERY",
                            help="rank the texts (or --file's lines) by similarity to QUERY and print the --top best")
        parser.add_argument("--top", type=int, default=5, help="how many texts --search prints (default: %(default)s)")
    parser.add_argument("--file", help="read texts from this file, one per line ('-' for stdin)")
    parser.add_argument("--artifact", choices=settings.artifacts,
                        help=f"which model of the bundle to run (default: {settings.default_artifact}, or the next one "
                             "this CPU runs as built, with a note)")
    parser.add_argument("--batch-size", type=int, default=32,
                        help=f"texts per inference call, 1..{MAX_BATCH_SIZE} (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0,
                        help=f"CPU threads for ONNX Runtime, 0..{cpu_count()} (0 = all cores, the default)")
    parser.add_argument("--bundle", default=str(settings.bundle_dir), help="bundle directory or .tar.gz (default: this one)")
    args = parser.parse_args(argv)
    # Checked before the bundle is opened; one line, never a silent clamp.
    problem = (batch_problem("--batch-size", args.batch_size)
               or threads_problem("--threads", args.threads, zero_is_all=True))
    if embedding and not problem and args.similarity and args.search is not None:
        problem = "give --similarity or --search, not both"
    if embedding and not problem and args.top < 1:
        problem = f"--top must be at least 1, got {args.top}"
    if problem:
        parser.exit(2, f"{PROG}: {problem}\n")
    return args


def main(argv: Optional[Sequence[str]], settings: Settings) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv, settings)
    try:
        texts = read_texts(args.texts, args.file)
        if getattr(args, "similarity", False) and len(texts) != 2:
            print(f"{PROG}: --similarity compares exactly two texts, got {len(texts)}", file=sys.stderr)
            return 2
        with load_bundle(args.bundle) as bundle:
            if settings.task == "embedding":
                model = bundle.embedder(args.artifact, threads=args.threads or None)
                if args.search is not None:
                    records = search_records(model, args.search, texts, args.batch_size, args.top)
                else:
                    records = embedding_records(model, texts, args.batch_size, args.similarity)
            else:
                classifier = bundle.classifier(args.artifact, threads=args.threads or None)
                predictions = classifier.predict(texts, batch_size=args.batch_size)
                records = [{"text": text, **prediction} for text, prediction in zip(texts, predictions)]
    except BundleError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 2
    for record in records:
        print(json_line(record))
    return 0


def search_records(model, query: str, texts: List[str], batch_size: int, top: int) -> List[dict]:
    """The `top` texts most similar to `query`, best first: {"rank", "score", "text"} (exact cosine search)."""
    from .embedder import cosine

    if not texts:
        return []
    vectors = model.embed(texts, batch_size=batch_size)
    query_vector = model.embed([query])
    scores = cosine(vectors, query_vector.repeat(len(texts), axis=0))
    order = sorted(range(len(texts)), key=lambda i: (-scores[i], i))[:top]
    return [{"rank": rank, "score": float(scores[i]), "text": texts[i]} for rank, i in enumerate(order, 1)]


def embedding_records(model, texts: List[str], batch_size: int, similarity: bool) -> List[dict]:
    """{"text", "embedding": [...]} per text, or one {"texts", "similarity"} for --similarity."""
    if similarity:
        return [{"texts": texts, "similarity": model.similarity(texts[0], texts[1])}]
    vectors = model.embed(texts, batch_size=batch_size)
    return [{"text": text, "embedding": [float(v) for v in vector]} for text, vector in zip(texts, vectors)]
