"""Build the cpu target (if needed) and record its report with the machine it ran on.

The report's latencies are medians of interleaved, side-by-side runs of all
artifacts in one process (see recipes/measure/latency.py), so the speed-ups are
ratios measured together. Writes bench/results/cpu.md.
Usage: .venv/bin/python bench/cpu_report.py [extra scons args]
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCONS = str(Path(sys.executable).with_name("scons"))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    subprocess.run([SCONS, "-Q", "-j2", "target=cpu", *sys.argv[1:]], cwd=ROOT, check=True)
    report = (ROOT / "build" / "cpu" / "report.md").read_text()
    manifest = json.loads((ROOT / "build" / "cpu" / "bundle" / "manifest.json").read_text())
    versions = ", ".join(f"{k} {v}" for k, v in sorted(manifest["toolchain"].items()))
    header = (f"Machine: {cpu_name()}, {os.cpu_count()} cores, {platform.machine()}. Toolchain: {versions}. "
              f"Revision: {manifest['git_revision']}.\n\n")
    out = ROOT / "bench" / "results" / "cpu.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(header + report)
    print(out.read_text())


if __name__ == "__main__":
    main()
