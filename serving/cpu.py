"""What the CPU this process runs on offers the engines: how many threads to use, whether its INT8 kernel saturates
8-bit weights, and numpy's BLAS kept to one thread."""

from __future__ import annotations

import functools
import math
import os
import platform
from pathlib import Path

from threadpoolctl import threadpool_limits

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


@functools.cache
def single_threaded_blas() -> None:
    """numpy's BLAS (OpenBLAS, in numpy's wheels) on one thread, for the whole process; once, then a no-op.

    The engines' front ends multiply small matrices (a window's log-mel filterbank: 80 x 201 by 201 x 3000), which a
    second thread does not speed up; but after each product OpenBLAS's idle threads spin, waiting for more, and take
    a core from inference. Measured (AMD EPYC, 2 cores, base on one intra-op thread, ten clips transcribed fitted and
    as drafts): 8.8-9.0 CPU-s in 6.7-6.9 s with OpenBLAS's two threads, 6.7-6.9 CPU-s in 6.6-6.8 s on one; a 30 s
    window's log-mel 21 ms of CPU against 10. Parallelism comes from the inference pool and onnxruntime's own threads.

    Call it from the main thread before any thread loads a model, as ``create_app`` does: threadpoolctl finds the
    BLAS library with ``dl_iterate_phdr``, whose callback needs the GIL while it holds the loader's lock, and a thread
    that loads a library holding the GIL (``ctypes.CDLL``, an extension module's import) waits for that lock. Called
    from an engine's constructor, it deadlocked a server whose voice loaded libespeak-ng beside the ASR model.
    """
    threadpool_limits(limits=1, user_api="blas")
