"""The host CPU's instruction-set features, as the operating system reports them.

Runtimes such as OpenVINO quietly ignore a precision the CPU cannot run (a
bf16 hint on a CPU without AMX or avx512_bf16 compiles as fp32), so the
runtime checks an artifact's needs here first and says what it does instead.
Names are the Linux kernel's flag names (/proc/cpuinfo "flags" on x86-64,
"Features" on arm64: avx512_vnni, amx_bf16, asimddp, i8mm, ...); profiles use
the same names in device.cpu_features. Standard library only.
"""
from __future__ import annotations

import platform
from pathlib import Path
from typing import FrozenSet, Iterable, Optional, Sequence

CPUINFO = Path("/proc/cpuinfo")

# The features edgesmith reasons about (profiles are checked against this list,
# so a typo is an error rather than a feature that is never found).
X86_FEATURES = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
                "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "amx_fp16")
ARM64_FEATURES = ("asimd", "asimddp", "asimdhp", "i8mm", "bf16", "sve", "sve2", "svei8mm", "svebf16", "sme")
KNOWN_FEATURES = {"x86_64": X86_FEATURES, "arm64": ARM64_FEATURES}


def normalized_arch(machine: Optional[str] = None) -> str:
    """x86_64 or arm64 (platform.machine() says AMD64 on Windows, aarch64 on Linux)."""
    m = (machine or platform.machine()).lower()
    return {"amd64": "x86_64", "x86_64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)


def parse_cpuinfo(text: str) -> FrozenSet[str]:
    """Feature flags from /proc/cpuinfo text (the first processor's; all cores of a server match)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def host_features(cpuinfo: Path = CPUINFO) -> Optional[FrozenSet[str]]:
    """The host's feature flags, or None where the OS does not tell us (not Linux)."""
    try:
        return parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return None


def lacking(any_of: Sequence[str], have: Optional[Iterable[str]], why: str = "") -> Optional[str]:
    """None when `have` holds one of `any_of` (or nothing is needed); else why not, in words (and `why` it matters)."""
    if not any_of:
        return None
    reason = f" ({why})" if why else ""
    if have is None:
        return f"this host's CPU features cannot be read (needs {' or '.join(any_of)}){reason}"
    have = set(have)
    if any(f in have for f in any_of):
        return None
    return f"needs a CPU with {' or '.join(any_of)}, which this host lacks{reason}"


def known_host_features() -> list:
    """The host's features among KNOWN_FEATURES for its architecture, sorted (for records and signatures)."""
    have = host_features() or frozenset()
    return sorted(f for f in KNOWN_FEATURES.get(normalized_arch(), ()) if f in have)


def cpu_frequency_ghz(cpuinfo: Path = CPUINFO) -> Optional[float]:
    """Nominal clock from /proc/cpuinfo ("cpu MHz" of the first core), None where absent (arm64)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return round(float(value) / 1000.0, 3)
            except ValueError:
                return None
    return None


def cpu_model_name(cpuinfo: Path = CPUINFO) -> str:
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "CPU part"):
            return value.strip()
    return "unknown"
