"""What the CPU this process runs on offers the engines: how many threads to use, and whether its INT8 kernel
saturates 8-bit weights."""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path

# CPU features whose INT8 instructions add u8 x s8 products in 32 bits; an x86 CPU with none of them adds pairs in 16,
# which 8-bit weights saturate (serving/build/row_int8.py).
_VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def _cgroup_cpu_limit() -> int | None:
    """CPUs granted by a cgroup v2 quota (a Kubernetes CPU limit), which affinity alone does not show."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
    except (OSError, ValueError):
        return None
    return None if quota == "max" else max(1, math.ceil(int(quota) / int(period)))


def default_threads() -> int:
    """One intra-op thread per usable CPU; more only make threads contend on a throttled container."""
    usable = len(os.sched_getaffinity(0))
    limit = _cgroup_cpu_limit()
    return min(usable, limit) if limit else usable


def int8_pairs_saturate(machine: str, cpuinfo: str) -> bool:
    """Whether onnxruntime's u8s8 kernel saturates 8-bit weights on this CPU: an x86-64 one whose ``/proc/cpuinfo``
    flags name no VNNI. Arm's kernels add in 32 bits; an x86 CPU whose flags cannot be read is given the benefit."""
    if machine.lower() not in ("x86_64", "amd64"):
        return False
    flags = next((line.split(":", 1)[1].split() for line in cpuinfo.splitlines() if line.startswith("flags")), None)
    return flags is not None and not _VNNI_FLAGS.intersection(flags)


@functools.cache
def this_cpu_saturates_int8() -> bool:
    """``int8_pairs_saturate`` for the CPU this process runs on (read once)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    return int8_pairs_saturate(platform.machine(), cpuinfo)
