"""executor=ray against the local executor (issue 15): wall time, per-stage dispatch overhead, same bytes.

1. Copies the build system into two scratch projects (bench/work/scale/local and .../ray) with empty build/.
2. Builds TARGET (default `all`: every shipped profile, on the demo's packaged all-MiniLM-L6-v2 and
   data/demo_sentiment.csv) locally with -j2, then on a real two-node Ray cluster started here
   (ray.cluster_utils, every process on 127.0.0.1, two logical CPUs per node) with -j4.
   The two builds run one after the other, never together.
3. From build/<target>/placement.json of the Ray build: per stage, the time from submit to the task's start,
   the inputs' fetch from the object store, the stage itself, and result-to-file-written; their sum against the
   stage's own time is Ray's overhead.
4. Compares every dist/*.tar.gz byte for byte, and writes bench/results/scale.json and the measured half of
   bench/results/scale.md (the other half, on paper, is written by hand below the marker).

These two cores cannot show a speed-up: both nodes share them, and -j4 puts four stages on two cores.
Usage: .venv/bin/python bench/ray_scale.py [--target all]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCONS = str(Path(sys.executable).with_name("scons"))
WORK = ROOT / "bench" / "work" / "scale"
PARTS = ("SConstruct", "recipes", "targets", "templates", "runtime", "data")
RAY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # keeps every Ray process on 127.0.0.1
MARKER = "<!-- measured above, by bench/ray_scale.py; written by hand below -->"


def project(name: str) -> Path:
    dst = WORK / name
    shutil.rmtree(dst, ignore_errors=True)
    dst.mkdir(parents=True)
    for part in PARTS:
        src = ROOT / part
        if src.is_dir():
            shutil.copytree(src, dst / part, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / part)
    return dst


def build(where: Path, args: list[str]) -> tuple[float, int]:
    """(wall seconds, exit code). -k: a profile whose quality gate fails (the demo's jetson int8 engine does on the
    demo data) stops only its own bundle; both builds must then fail the same way."""
    cmd = [SCONS, "-Q", "-k", *args]
    print("+", " ".join(cmd), f"(in {where.relative_to(ROOT)})", flush=True)
    started = time.time()
    proc = subprocess.run(cmd, cwd=where, env=dict(os.environ, **RAY_ENV, TQDM_DISABLE="1"))
    return time.time() - started, proc.returncode


def overhead(ray_project: Path) -> dict[str, Any]:
    rows: dict[str, dict[str, Any]] = {}
    for placement in sorted((ray_project / "build").glob("*/placement.json")):
        for rec in json.loads(placement.read_text())["stages"]:
            if rec.get("executor") == "ray" and "timing_s" in rec:
                rows[rec["target"]] = rec
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for rec in rows.values():
        by_stage.setdefault(rec["stage"], []).append(rec)

    def med(recs, key):
        return round(statistics.median(r["timing_s"][key] for r in recs), 3)

    table = {}
    for stage, recs in sorted(by_stage.items()):
        dispatch = [r["timing_s"]["total"] - r["timing_s"]["stage"] for r in recs]
        table[stage] = {"runs": len(recs), "submit_to_start_s": med(recs, "submit_to_start"),
                        "inputs_fetch_s": med(recs, "inputs_fetch"), "stage_s": med(recs, "stage"),
                        "result_to_written_s": med(recs, "result_to_written"),
                        "overhead_s": round(statistics.median(dispatch), 3),
                        "overhead_share": round(sum(dispatch) / max(1e-9, sum(r["timing_s"]["total"] for r in recs)), 3),
                        "mb_in": round(statistics.median(r.get("bytes_in", 0) for r in recs) / 2**20, 2),
                        "mb_out": round(statistics.median(r.get("bytes_out", 0) for r in recs) / 2**20, 2)}
    runs = list(rows.values())
    total_dispatch = sum(r["timing_s"]["total"] - r["timing_s"]["stage"] for r in runs)
    total = sum(r["timing_s"]["total"] for r in runs)
    return {"stages": table, "stage_runs": len(runs), "dispatch_s": round(total_dispatch, 1), "total_s": round(total, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="all")
    opts = parser.parse_args()

    local, remote = project("local"), project("ray")
    local_s, local_rc = build(local, ["-j2", f"target={opts.target}"])

    from ray.cluster_utils import Cluster

    os.environ.update(RAY_ENV)
    node = {"num_cpus": 2, "node_ip_address": "127.0.0.1", "object_store_memory": 1 << 30}
    started = time.time()
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    cluster.add_node(**node)
    cluster.wait_for_nodes()
    cluster_s = time.time() - started
    try:
        ray_s, ray_rc = build(remote, ["-j4", f"target={opts.target}", "executor=ray", f"ray_address={cluster.address}"])
        # Nothing listens at 127.0.0.1:9: a no-op build that tried to reach a cluster would fail. On the demo's
        # own target: a profile whose gate failed is not up to date (its report runs again).
        noop_s, noop_rc = build(remote, ["target=cpu", "executor=ray", "ray_address=127.0.0.1:9"])
    finally:
        cluster.shutdown()

    tarballs = sorted({p.name for d in (local, remote) for p in (d / "dist").glob("*.tar.gz")})
    identical = {name: (local / "dist" / name).exists() and (remote / "dist" / name).exists()
                 and (local / "dist" / name).read_bytes() == (remote / "dist" / name).read_bytes() for name in tarballs}
    result = {"target": opts.target, "exit_codes": {"local": local_rc, "ray": ray_rc, "ray_noop": noop_rc},
              "local_j2_s": round(local_s, 1), "ray_two_nodes_j4_s": round(ray_s, 1),
              "cluster_start_s": round(cluster_s, 1), "ray_noop_s": round(noop_s, 2),
              "ratio_ray_to_local": round(ray_s / local_s, 3), "tarballs_identical": identical,
              "overhead": overhead(remote), "cpus": os.cpu_count()}
    out = ROOT / "bench" / "results"
    (out / "scale.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    write_md(out / "scale.md", result)
    print(json.dumps({k: v for k, v in result.items() if k != "overhead"}, indent=1))


def write_md(path: Path, r: dict[str, Any]) -> None:
    o = r["overhead"]
    lines = [
        "# Builds on a Ray cluster: overhead, and how the graph spreads (issue 15)", "",
        f"Measured by `bench/ray_scale.py` on this host ({r['cpus']} logical CPUs, no GPU): `scons target={r['target']}` "
        "on the demo (packaged all-MiniLM-L6-v2, data/demo_sentiment.csv) from empty build directories, first locally "
        "with `-j2`, then with `executor=ray -j4` on a two-node Ray cluster started on this machine "
        "(`ray.cluster_utils`, 127.0.0.1 only, two logical CPUs per node). Both nodes share the same two cores, so "
        "this shows the cost of Ray, not a speed-up.", "",
        "| build | wall s | scons exit |", "|---|---|---|",
        f"| local, -j2 -k | {r['local_j2_s']} | {r['exit_codes']['local']} |",
        f"| Ray, two nodes, -j4 -k | {r['ray_two_nodes_j4_s']} ({r['ratio_ray_to_local']}x local) | {r['exit_codes']['ray']} |",
        f"| starting the two-node cluster (not in the build's time) | {r['cluster_start_s']} | |",
        f"| no-op `target=cpu` with executor=ray, ray_address where nothing listens | {r['ray_noop_s']} | {r['exit_codes']['ray_noop']} |",
        "",
        "A non-zero exit is a quality gate that failed in both builds alike (see each build's report): `-k` lets "
        "the other profiles finish.", "",
        "Bundles identical to the local build's, byte for byte: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in r["tarballs_identical"].items()) + ".", "",
        f"Over its {o['stage_runs']} stage runs, Ray's dispatch (submit to start, inputs from the object store, "
        f"result to file written) took {o['dispatch_s']} s of {o['total_s']} s of stage time.", "",
        "Per stage (medians):", "",
        "| stage | runs | submit to start s | inputs fetch s | stage s | result to written s | overhead s | overhead share | MB in | MB out |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for stage, s in o["stages"].items():
        lines.append(f"| {stage} | {s['runs']} | {s['submit_to_start_s']} | {s['inputs_fetch_s']} | {s['stage_s']} | "
                     f"{s['result_to_written_s']} | {s['overhead_s']} | {s['overhead_share']:.0%} | {s['mb_in']} | {s['mb_out']} |")
    old = path.read_text() if path.exists() else ""
    tail = old.split(MARKER, 1)[1] if MARKER in old else "\n"
    path.write_text("\n".join(lines) + "\n\n" + MARKER + tail)


if __name__ == "__main__":
    main()
