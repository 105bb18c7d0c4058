"""Time one artifact of an edgesmith embedding bundle, in this process only: the counterpart of
bench/sentence_transformers/run_st.py's `encode` for our side of bench/embedding_sst2.py.

What is timed is what a user calls: `bundle.embedder(name).embed(batch)`, tokenization included (as
sentence-transformers' `encode` includes its tokenization, pooling and normalisation; ours pool inside the
graph). Prints one JSON line: {"variant", "threads", "timings": [{"batch", "median_ms", "p90_ms", "min_ms"}], ...}.

Usage: .venv/bin/python bench/embedding_time.py --bundle DIR --artifact NAME --texts FILE --threads N
           [--out EMB.npy] [--time-batches 1,32 --repeats R --warmup W]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--texts", required=True, help="UTF-8, one text per line")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--out", help=".npy for the float32 [n, d] vectors of every text")
    parser.add_argument("--time-batches", default="")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args(argv)
    # Before numpy, onnxruntime, openvino and tokenizers start their pools (as run_st.py does for the peer).
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    bundle_dir = Path(args.bundle).resolve()
    sys.path.insert(0, str(bundle_dir))  # the bundle's own runtime, as run.py uses it

    import numpy as np

    from runtime import load_bundle

    texts = Path(args.texts).read_text(encoding="utf-8").splitlines()
    started = time.perf_counter()
    with load_bundle(bundle_dir) as bundle:
        # threads: ONNX Runtime's intra-op pool, OpenVINO's INFERENCE_NUM_THREADS (runtime/openvino_backend.py).
        model = bundle.embedder(args.artifact, threads=args.threads)
    load_s = time.perf_counter() - started
    result = {"variant": args.artifact, "side": "edgesmith", "threads": args.threads, "n_texts": len(texts),
              "load_s": round(load_s, 4), "timings": []}
    if args.out:
        vectors = model.embed(texts, batch_size=32)
        np.save(args.out, np.ascontiguousarray(vectors, dtype=np.float32))
        result["dim"] = int(vectors.shape[1])
    for b in [int(x) for x in args.time_batches.split(",") if x.strip()]:
        batch = (texts * (b // len(texts) + 1))[:b]
        for _ in range(args.warmup):
            model.embed(batch, batch_size=b)
        ms = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            model.embed(batch, batch_size=b)
            ms.append((time.perf_counter() - t) * 1e3)
        result["timings"].append({"batch": b, "repeats": args.repeats, "warmup": args.warmup,
                                  "median_ms": round(float(np.median(ms)), 3),
                                  "p90_ms": round(float(np.percentile(ms, 90)), 3), "min_ms": round(min(ms), 3)})
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
