"""The host CPU's arithmetic peak per precision, from its instruction-set features.

    peak ops/s = cores x clock (Hz) x MACs per cycle per core (precision, features) x 2 ops per MAC

MACs per cycle per core come from the table below: for each architecture and
precision, tiers from the widest instructions down, each needing a set of
Linux feature flags (runtime/cpu_features.py); the first tier whose flags the
CPU has is its peak. Every figure is "vector lanes x MACs per lane per
instruction x instructions per cycle", written out in the tier's `basis`.

Sources for the instruction throughputs:
- Intel 64 and IA-32 Architectures Optimization Reference Manual, Vol. 1
  (two 512-bit FMA units on ports 0 and 5 on Xeon Scalable processors with two
  FMA units; Intel AMX and its TMUL unit);
- uops.info instruction tables (reciprocal throughputs of VFMADD231PS,
  VPMADDUBSW, VPMADDWD, VPDPBUSD, VDPBF16PS, TDPBUSD, TDPBF16PS per microarchitecture);
- oneDNN developer guide, "Nuances of int8 Computations" (without VNNI, int8
  multiplies take the VPMADDUBSW + VPMADDWD + VPADDD sequence);
- Intel's AMX overview ("Accelerate AI Workloads with Intel AMX"): 2048 int8
  and 1024 bf16 operations per cycle per core, i.e. 1024 and 512 MACs;
- Arm Cortex-A76 / Neoverse N1 and N2 Software Optimization Guides (two 128-bit
  ASIMD pipes; FMLA, SDOT, SMMLA, BFMMLA throughputs).

What the flags cannot tell, and is assumed (the report says so):
- x86: two vector FMA units per core (Xeon Gold/Platinum, Sapphire Rapids and
  later, AMD Zen 2 and later for 256-bit). Two known exceptions for 512-bit
  code are applied by name (WIDTH_RULES): AMD Zen 4 runs 512-bit instructions
  on 256-bit datapaths, and Intel Core client chips with AVX-512 have one
  512-bit FMA unit. Xeon Silver/Bronze parts with one 512-bit FMA unit are not
  detected: their 512-bit peaks are half the table's.
- arm64: the core class is not in the flags; the table assumes two 128-bit
  vector pipes (Cortex-A76/A78, Neoverse N1/N2). Cortex-X and Neoverse V cores
  have four: double the table's figures. SVE vector length is ignored.
- The clock is the nominal one (clock_ghz says where it was read); turbo raises
  the real clock, AVX-512 and AMX frequency licences lower it.

Standard library only (the report stage imports it).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from runtime.cpu_features import CPUINFO, KNOWN_FEATURES, cpu_frequency_ghz, cpu_model_name, host_features, normalized_arch

PRECISIONS = ("fp32", "bf16", "int8")
SYSFS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class Tier:
    arch: str
    precision: str
    needs: tuple[str, ...]       # every one of these feature flags
    macs_per_cycle: float        # per core
    name: str
    basis: str                   # how macs_per_cycle is made up
    width: int = 0               # vector bits (512: subject to WIDTH_RULES); 0 for matrix units


TIERS: tuple[Tier, ...] = (
    # -- x86_64 fp32 ---------------------------------------------------------
    Tier("x86_64", "fp32", ("avx512f",), 32, "AVX-512 FMA", "2 FMA units x 16 fp32 lanes (VFMADD231PS zmm, 2 per cycle)", 512),
    Tier("x86_64", "fp32", ("avx2", "fma"), 16, "AVX2 FMA", "2 FMA units x 8 fp32 lanes (VFMADD231PS ymm, 2 per cycle)", 256),
    Tier("x86_64", "fp32", ("avx",), 8, "AVX", "1 multiply + 1 add of 8 fp32 lanes per cycle (no FMA)", 256),
    Tier("x86_64", "fp32", (), 4, "SSE", "1 multiply + 1 add of 4 fp32 lanes per cycle", 128),
    # -- x86_64 int8 (u8 x s8 products summed into int32) ---------------------
    Tier("x86_64", "int8", ("amx_tile", "amx_int8"), 1024, "AMX int8",
         "TMUL: TDPBUSD multiplies 16x64 by 64x16 int8 tiles (16384 MACs) every 16 cycles"),
    Tier("x86_64", "int8", ("avx512_vnni",), 128, "AVX-512 VNNI", "VPDPBUSD zmm: 16 lanes x 4 MACs, 2 per cycle", 512),
    Tier("x86_64", "int8", ("avx_vnni",), 64, "AVX-VNNI", "VPDPBUSD ymm: 8 lanes x 4 MACs, 2 per cycle", 256),
    Tier("x86_64", "int8", ("avx512bw",), 128 / 3, "AVX-512BW (no VNNI)",
         "VPMADDUBSW + VPMADDWD + VPADDD zmm: 64 MACs per 3 instructions on 2 ports", 512),
    Tier("x86_64", "int8", ("avx2",), 32, "AVX2 (no VNNI)",
         "VPMADDUBSW + VPMADDWD ymm: 32 MACs per 2 multiply instructions on 2 multiply ports (VPADDD on a third)", 256),
    Tier("x86_64", "int8", (), 16, "SSSE3", "PMADDUBSW + PMADDWD xmm: 16 MACs per 2 multiply instructions on 2 ports", 128),
    # -- x86_64 bf16 (bf16 products summed into fp32); without these, bf16 runs as fp32 --
    Tier("x86_64", "bf16", ("amx_tile", "amx_bf16"), 512, "AMX bf16",
         "TMUL: TDPBF16PS multiplies 16x32 by 32x16 bf16 tiles (8192 MACs) every 16 cycles"),
    Tier("x86_64", "bf16", ("avx512_bf16",), 64, "AVX-512 BF16",
         "VDPBF16PS zmm: 16 lanes x 2 MACs, 2 per cycle (twice fp32 FMA)", 512),
    # -- arm64 (two 128-bit ASIMD pipes assumed) --------------------------------
    Tier("arm64", "fp32", (), 8, "NEON FMLA", "2 pipes x 4 fp32 lanes (FMLA, 128-bit)", 128),
    Tier("arm64", "int8", ("i8mm",), 64, "I8MM SMMLA", "SMMLA: 2x8 by 8x2 int8 = 32 MACs per instruction, 2 pipes", 128),
    Tier("arm64", "int8", ("asimddp",), 32, "DotProd SDOT", "SDOT: 4 lanes x 4 MACs per instruction, 2 pipes", 128),
    Tier("arm64", "int8", (), 32 / 3, "NEON widening",
         "SMULL + SMLAL2 into int16 pairs, SADALP into int32: 16 MACs per 3 instructions, 2 pipes", 128),
    Tier("arm64", "bf16", ("bf16",), 32, "BF16 BFMMLA", "BFMMLA: 2x4 by 4x2 bf16 = 16 MACs per instruction, 2 pipes", 128),
)


@dataclass(frozen=True)
class WidthRule:
    """Known CPUs whose 512-bit instructions run at half the table's rate."""
    model_pattern: str             # regex on the CPU's model name
    unless: tuple[str, ...]        # not when the CPU has any of these flags
    factor: float
    why: str


WIDTH_RULES: tuple[WidthRule, ...] = (
    # Zen 4 (EPYC 9004, Ryzen 7000) has AVX-512 on 256-bit datapaths; Zen 5, with full
    # 512-bit datapaths, also brought AVX-VNNI (VEX), which Zen 4 lacks.
    WidthRule(r"\bAMD\b", ("avx_vnni",), 0.5, "AMD Zen 4 executes 512-bit instructions as two 256-bit halves"),
    WidthRule(r"Intel\(R\) Core\(TM\)|\bCore\(TM\) i\d", (), 0.5,
              "Intel Core client chips with AVX-512 have one 512-bit FMA unit (ports 0 and 1 fused)"),
)


def relevant_features(arch: str) -> tuple[str, ...]:
    needed = {f for t in TIERS if t.arch == arch for f in t.needs}
    return tuple(sorted(needed | set(KNOWN_FEATURES.get(arch, ()))))


def tier_for(arch: str, precision: str, features: Iterable[str]) -> Optional[Tier]:
    """The widest tier of `precision` the CPU's `features` allow; bf16 without bf16 instructions is fp32's."""
    have = set(features)
    for t in TIERS:
        if t.arch == arch and t.precision == precision and all(f in have for f in t.needs):
            return t
    if precision == "bf16":
        return tier_for(arch, "fp32", have)
    return None


def macs_per_cycle(arch: str, precision: str, features: Iterable[str], model_name: str = "") -> tuple[float, str]:
    """(MACs per cycle per core, how) for `precision` on a CPU with `features`; (0, why not) when unknown."""
    have = set(features)
    t = tier_for(arch, precision, have)
    if t is None:
        return 0.0, f"no {precision} peak is known for {arch}"
    value, how = t.macs_per_cycle, f"{t.name}: {t.basis}"
    if t.precision != precision:
        how = f"no {precision} instructions, runs as {t.precision}; {how}"
    if t.width == 512:
        for rule in WIDTH_RULES:
            if re.search(rule.model_pattern, model_name) and not any(f in have for f in rule.unless):
                value, how = value * rule.factor, f"{how}; x{rule.factor}: {rule.why}"
    return value, how


def clock_ghz(cpuinfo: Path = CPUINFO, sysfs: Path = SYSFS_CPU) -> tuple[Optional[float], str]:
    """The nominal clock and where it was read: the model name's "@ 2.10GHz", cpufreq's base (nominal)
    frequency, /proc/cpuinfo's "cpu MHz" (runtime/cpu_features.py), or cpufreq's maximum."""
    m = re.search(r"@\s*([0-9.]+)\s*GHz", cpu_model_name(cpuinfo))
    if m:
        return float(m.group(1)), "the nominal clock in the CPU's model name"
    for name in ("base_frequency", "amd_pstate_nominal_freq"):  # intel_pstate's, amd-pstate's nominal clock
        base = _khz(sysfs / "cpu0" / "cpufreq" / name)
        if base:
            return base, f"cpufreq {name}"
    mhz = cpu_frequency_ghz(cpuinfo)
    if mhz:
        return mhz, "/proc/cpuinfo's cpu MHz: the clock when read, a VM's nominal one"
    top = _khz(sysfs / "cpu0" / "cpufreq" / "cpuinfo_max_freq")
    if top:
        return top, "cpufreq cpuinfo_max_freq (the maximum clock, turbo included)"
    return None, "not reported by this OS"


def _khz(path: Path) -> Optional[float]:
    try:
        return round(int(path.read_text().strip()) / 1e6, 3)
    except (OSError, ValueError):
        return None


def physical_cores(sysfs: Path = SYSFS_CPU) -> int:
    """Cores, not hardware threads: SMT siblings share one core's vector units."""
    groups = set()
    for topo in sysfs.glob("cpu[0-9]*/topology"):
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                groups.add((topo / name).read_text().strip())
                break
            except OSError:
                continue
    return len(groups) or os.cpu_count() or 1


def host_cpu() -> dict[str, Any]:
    """What the peak of this host is computed from (the report records it)."""
    arch = normalized_arch()
    features = host_features()
    ghz, source = clock_ghz()
    return {"arch": arch, "model_name": cpu_model_name(),
            "features": None if features is None else sorted(set(features) & set(relevant_features(arch))),
            "clock_ghz": ghz, "clock_source": source, "physical_cores": physical_cores()}


def peak(host: dict[str, Any], precision: str, threads: int) -> dict[str, Any]:
    """Peak of `precision` on `host` (host_cpu()'s dict) with `threads` threads: cores, MACs/cycle, GOPS."""
    cores = max(1, min(int(threads), int(host.get("physical_cores") or threads)))
    ghz = host.get("clock_ghz")
    out: dict[str, Any] = {"precision": precision, "cores": cores, "clock_ghz": ghz}
    if host.get("features") is None:
        return {**out, "macs_per_cycle": None, "gops": None, "basis": "the CPU's features cannot be read on this OS"}
    mpc, how = macs_per_cycle(host["arch"], precision, host["features"], host.get("model_name", ""))
    gops = round(cores * ghz * mpc * 2, 3) if ghz and mpc else None
    return {**out, "macs_per_cycle": round(mpc, 3) or None, "gops": gops,
            "basis": how if ghz else f"{how}; the clock is unknown"}
