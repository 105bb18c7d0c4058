"""serve.py under concurrent load: requests per second, latency, resets and errors.

Starts serve.py on 127.0.0.1 (a free port) for a bundle, asks it once per
text for the single-client answer, then lets --clients threads send
--requests requests each, all at once (a barrier), each a new connection,
and stops issuing requests after --seconds. Every answer is compared with the
single-client one. Results go to bench/results/serve_load.md (no machine paths).

The bundle is, by default, the tiny test bundle (tests/tiny_bundle.py: a real
WordPiece tokenizer and a small ONNX model), built in a temporary directory,
so the bench runs anywhere. --bundle DIR serves a built bundle instead (e.g.
build/cpu/bundle); it is not modified: serve.py is rendered into a temporary
directory beside a copy of the bundle's runtime/.

--baseline-runtime DIR runs the same load first against another runtime/
(e.g. one extracted from an older commit with `git archive`), for a
before/after table.

Usage: .venv/bin/python bench/serve_load.py [--clients 200] [--requests 5] [--seconds 60]
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from recipes.package.stubs import render_to  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "serve_load.md"
TEXTS = ["a great movie", "the worst film", "i loved it !", "not very good", "awful boring film", "it was fun",
         "the best film", "i hate it"]
LISTENING = re.compile(r"listening on http://([^\s:]+):(\d+)")
SHAPES = {"batch": {"min": 1, "opt": 8, "max": 64}, "sequence": {"min": 1, "opt": 16, "max": 16}}


def stub_context(bundle: Path) -> Dict[str, Any]:
    manifest = json.loads((bundle / "manifest.json").read_text(encoding="utf-8"))
    max_length = manifest["tokenizer"]["max_length"]
    shapes = {"batch": dict(SHAPES["batch"]), "sequence": {"min": 1, "opt": max_length, "max": max_length}}
    artifacts = [{k: a.get(k) for k in ("name", "format", "precision", "runtime", "path")} for a in manifest["artifacts"]]
    return {"target": manifest.get("target") or "cpu", "description": "serve_load bench",
            "labels": manifest["model"]["labels"], "default_artifact": manifest["default_artifact"],
            "artifacts": artifacts, "max_length": max_length, "runtime_version": "bench", "shapes": shapes,
            "trt_workspace_mb": 1024}


def tiny_bundle(work: Path) -> Tuple[Path, str]:
    from tiny_bundle import write_bundle

    bundle = write_bundle(work / "bundle", copy_runtime=False)  # serve.py's runtime/ copy is next to it instead
    return bundle, "tiny test bundle (tests/tiny_bundle.py: WordPiece tokenizer, 2-label mean-pooling ONNX model)"


def prepare(work: Path, bundle: Path, runtime: Path) -> Path:
    """serve.py for `bundle`, rendered in a directory of its own next to a copy of `runtime`."""
    stub_dir = work / "stub"
    if stub_dir.exists():
        shutil.rmtree(stub_dir)
    stub_dir.mkdir()
    shutil.copytree(runtime, stub_dir / "runtime", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    render_to("gpu_server/serve.py", stub_context(bundle), stub_dir / "serve.py")
    return stub_dir / "serve.py"


def start(serve: Path, bundle: Path, log: Path, extra: List[str]) -> Tuple[subprocess.Popen, int]:
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    env.pop("PYTHONPATH", None)
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(serve), "--host", "127.0.0.1", "--port", "0", "--bundle", str(bundle),
                                 "--providers", "cpu", *extra], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    line = proc.stdout.readline()
    match = LISTENING.search(line)
    if not match:
        proc.kill()
        proc.wait(timeout=30)
        sys.exit(f"serve.py did not start: {line}{log.read_text()}")
    return proc, int(match.group(2))


def post(port: int, text: str, timeout: float) -> Tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", "/predict", json.dumps({"texts": [text]}), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def load(port: int, clients: int, requests: int, seconds: float) -> Dict[str, Any]:
    expected = {text: post(port, text, 30) for text in TEXTS}
    bad = {t: r for t, r in expected.items() if r[0] != 200}
    if bad:
        sys.exit(f"single-client requests failed: {bad}")
    latencies: List[float] = []
    outcomes: Dict[str, int] = {}
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    deadline = time.monotonic() + seconds

    def record(kind: str, latency: Optional[float] = None) -> None:
        with lock:
            outcomes[kind] = outcomes.get(kind, 0) + 1
            if latency is not None:
                latencies.append(latency)

    def client(i: int) -> None:
        try:
            barrier.wait(timeout=30)
        except threading.BrokenBarrierError:
            pass
        for j in range(requests):
            left = deadline - time.monotonic()
            if left <= 0:
                record("not sent (time cap)")
                continue
            text = TEXTS[(i + j) % len(TEXTS)]
            began = time.perf_counter()
            try:
                got = post(port, text, left)
            except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):  # RemoteDisconnected too
                record("reset")
                continue
            except OSError as exc:  # timeouts, refused connections
                record(f"error: {type(exc).__name__}")
                continue
            except Exception as exc:  # e.g. a body that is not JSON
                record(f"error: {type(exc).__name__}")
                continue
            latency = time.perf_counter() - began
            if got[0] != 200:
                record(f"HTTP {got[0]}", latency)
            elif got != expected[text]:
                record("different answer", latency)
            else:
                record("ok", latency)

    began = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max(0.1, deadline + 10 - time.monotonic()))
    wall = time.monotonic() - began
    answered = sum(v for k, v in outcomes.items() if k == "ok" or k.startswith("HTTP") or k == "different answer")
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000 if ordered else float("nan")

    return {"clients": clients, "requests": requests, "sent": clients * requests, "wall_s": wall,
            "rps": answered / wall if wall else 0.0, "p50_ms": pct(50), "p99_ms": pct(99),
            "mean_ms": statistics.fmean(ordered) * 1000 if ordered else float("nan"),
            "ok": outcomes.get("ok", 0), "resets": outcomes.get("reset", 0),
            "errors": sum(v for k, v in outcomes.items() if k not in ("ok", "reset")),
            "outcomes": dict(sorted(outcomes.items()))}


def metadata(port: int) -> Dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/metadata")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def run_once(work: Path, bundle: Path, runtime: Path, args: argparse.Namespace) -> Dict[str, Any]:
    serve = prepare(work, bundle, runtime)
    log = work / "serve.log"
    proc, port = start(serve, bundle, log, ["--threads", str(args.threads)])
    try:
        result = load(port, args.clients, args.requests, args.seconds)
        meta = metadata(port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        proc.stdout.close()
    result["server"] = {k: meta[k] for k in ("workers", "backlog", "peak_in_flight") if k in meta}
    result["tracebacks"] = log.read_text().count("Traceback")
    return result


def row(label: str, r: Dict[str, Any]) -> str:
    server = r["server"]
    pool = (f"{server['workers']} workers, backlog {server['backlog']}, peak {server['peak_in_flight']} in flight"
            if server else "thread per connection, backlog 5")
    return (f"| {label} | {pool} | {r['sent']} | {r['ok']} | {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
            f"| {r['resets']} | {r['errors']} | {r['wall_s']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200, help="concurrent clients (default: %(default)s)")
    parser.add_argument("--requests", type=int, default=5, help="requests per client (default: %(default)s)")
    parser.add_argument("--seconds", type=float, default=60, help="no new requests after this (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="serve.py --threads (default: %(default)s)")
    parser.add_argument("--bundle", type=Path, help="a built bundle directory (default: the tiny test bundle)")
    parser.add_argument("--baseline-runtime", type=Path, help="another runtime/ directory to measure first")
    parser.add_argument("--baseline-label", default="baseline", help="its name in the results table")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: bench/results/serve_load.md)")
    args = parser.parse_args()
    if not (1 <= args.clients <= 1000 and 1 <= args.requests <= 100 and 0 < args.seconds <= 600):
        parser.error("bounded load only: --clients 1..1000, --requests 1..100, --seconds up to 600")
    if args.bundle is None and (ROOT / "build" / "cpu" / "bundle" / "manifest.json").is_file():
        print("note: build/cpu/bundle exists; pass --bundle build/cpu/bundle to serve it instead of the tiny bundle")

    rows = []
    with tempfile.TemporaryDirectory(prefix="serve-load-") as tmp:
        work = Path(tmp)
        if args.bundle is None:
            bundle, kind = tiny_bundle(work)
        else:
            bundle = args.bundle.resolve()
            target = json.loads((bundle / "manifest.json").read_text(encoding="utf-8")).get("target")
            kind = f"built bundle `{bundle.name}` (target {target})"
        if args.baseline_runtime is not None:
            before = run_once(work, bundle, args.baseline_runtime, args)
            rows.append(row(args.baseline_label, before))
            print(json.dumps({args.baseline_label: before}, indent=2))
        after = run_once(work, bundle, ROOT / "runtime", args)
        rows.append(row("this runtime", after))
        print(json.dumps({"this runtime": after}, indent=2))

    text = (
        "# serve.py under concurrent load\n\n"
        f"`python bench/serve_load.py --clients {args.clients} --requests {args.requests} --seconds {args.seconds:g}`: "
        f"serve.py on 127.0.0.1 (ONNX Runtime CPU provider, `--threads {args.threads}`, default pool options) with the "
        f"{kind}. {args.clients} client threads start together and each sends {args.requests} `POST /predict` "
        "requests of one text, each on a new connection; every answer is compared with the single-client answer "
        "for the same text. Latency is connect to last byte of the response, over answered requests (a reset "
        "has none); requests/s is answered requests over the wall time of the load."
        + (" The first row ran the same load against another runtime/ copy (`--baseline-runtime`)."
           if args.baseline_runtime is not None else "") + "\n\n"
        "| runtime | server | requests | ok | requests/s | p50 ms | p99 ms | resets | other errors | wall s |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
        f"Outcomes of this runtime: {json.dumps(after['outcomes'])}; tracebacks in its log: {after['tracebacks']}.\n"
        f"Machine: {platform.machine()}, {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()} "
        f"CPUs available, Python {platform.python_version()}, {platform.system()}; client and server share the CPUs.\n"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
