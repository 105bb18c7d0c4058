"""What a user may ask of the machine: threads, batch sizes, and serve.py's worker pool and listen backlog.

Every command line in a bundle (run.py, run_engine.py, serve.py, python -m
runtime) checks the values it is given against these bounds before it opens
the bundle. A value out of range is one line naming the option, the value and
the allowed range, and exit status 2: never a silent clamp, and never
`--threads 100000` starting a hundred thousand threads.

- threads: at most the CPUs this process may run on (its affinity mask, else
  os.cpu_count()); more only adds contention;
- batch sizes (texts per inference call, or per request for serve.py): at most
  MAX_BATCH_SIZE, or the target's largest profiled batch where that is higher;
  a TensorRT engine takes at most its profile's largest batch;
- serve.py: at most MAX_WORKERS requests in flight, a listen backlog of at most
  the kernel's net.core.somaxconn (which would cap it silently), and request
  bodies of at most MAX_BODY_BYTES.
"""
from __future__ import annotations

import os
from typing import Optional

MAX_BATCH_SIZE = 1024  # texts per inference call: memory grows with it, speed stops growing long before
MAX_WORKERS = 1024  # serve.py: requests handled at once (each holds a thread and its request in memory)
DEFAULT_WORKERS = 32
DEFAULT_BACKLOG = 1024  # serve.py: connections the kernel queues while every worker is busy
MAX_BACKLOG = 65535  # where the kernel's own cap cannot be read
MAX_BODY_BYTES = 64 << 20  # serve.py: largest --max-body-bytes (a body is read into memory whole)
SOMAXCONN = "/proc/sys/net/core/somaxconn"


def cpu_count() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one, else os.cpu_count()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def listen_limit() -> Optional[int]:
    """The kernel's cap on a listen backlog (Linux net.core.somaxconn); None where it cannot be read."""
    try:
        with open(SOMAXCONN, encoding="ascii") as fh:
            value = int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return value if value > 0 else None


def out_of_range(option: str, value: int, low: int, high: int, why: str) -> Optional[str]:
    """None when low <= value <= high, else the one-line message for it."""
    if low <= value <= high:
        return None
    return f"{option} {value} is out of range: allowed {low}..{high} ({why})"


def threads_problem(option: str, value: Optional[int], *, zero_is_all: bool) -> Optional[str]:
    """`value` threads (None: not given) against this machine's CPUs."""
    if value is None:
        return None
    cpus = cpu_count()
    why = f"this machine has {cpus} CPU{'s' if cpus != 1 else ''}" + ("; 0 = all of them" if zero_is_all else "")
    return out_of_range(option, value, 0 if zero_is_all else 1, cpus, why)


def batch_problem(option: str, value: int, *, largest_profiled: int = 0, what: str = "texts per inference call") -> Optional[str]:
    """A batch size against MAX_BATCH_SIZE (or the target's largest profiled batch, if higher)."""
    high = max(MAX_BATCH_SIZE, largest_profiled)
    why = f"{what}; larger batches need more memory without running faster" if value > high else what
    return out_of_range(option, value, 1, high, why)


def default_backlog() -> int:
    limit = listen_limit()
    return min(DEFAULT_BACKLOG, limit) if limit else DEFAULT_BACKLOG


def backlog_problem(option: str, value: int) -> Optional[str]:
    limit = listen_limit()
    if limit:
        return out_of_range(option, value, 1, limit, "the kernel caps it at net.core.somaxconn; raise that with sysctl for more")
    return out_of_range(option, value, 1, MAX_BACKLOG, "connections queued while every worker is busy")
