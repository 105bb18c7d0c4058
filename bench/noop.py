"""No-op build time: `scons target=cpu` after a full build, beside `python -c pass`.

Run after `make demo` (the cpu target must be built). Both commands are timed
in alternation, 5 times each, and the medians and their ratio are written to
bench/results/noop.md. Usage: .venv/bin/python bench/noop.py [target]
"""
from __future__ import annotations

import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCONS = str(Path(sys.executable).with_name("scons"))
RUNS = 5


def timed(cmd: list[str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stdout}{proc.stderr}")
    return elapsed, proc.stdout


def main() -> None:
    target = sys.argv[1] if len(sys.argv) > 1 else "cpu"
    scons_cmd = [SCONS, "-Q", f"target={target}"]
    _, out = timed(scons_cmd)  # also checks that the target is built
    if "[" in out:
        sys.exit(f"target {target} was not up to date (stages ran); build it first, e.g. `make demo`")
    scons_t, python_t = [], []
    for _ in range(RUNS):
        scons_t.append(timed(scons_cmd)[0])
        python_t.append(timed([sys.executable, "-c", "pass"])[0])
    s, p = statistics.median(scons_t), statistics.median(python_t)
    text = (
        f"# No-op build\n\n"
        f"`scons -Q target={target}` with everything up to date, median of {RUNS}, timed in alternation with "
        f"`python -c pass`.\n\n"
        f"| command | median s | runs |\n|---|---|---|\n"
        f"| scons -Q target={target} (no-op) | {s:.3f} | {', '.join(f'{t:.3f}' for t in scons_t)} |\n"
        f"| python -c pass | {p:.3f} | {', '.join(f'{t:.3f}' for t in python_t)} |\n\n"
        f"Ratio scons / bare python: {s / p:.1f}x. Machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}.\n"
    )
    out_path = ROOT / "bench" / "results" / "noop.md"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
