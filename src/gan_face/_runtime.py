"""Process-level tuning for the entry points (CLI, training, benchmarks); never applied on import.

Threads: a scan runs ``N`` workers, each taking a whole batch from decoding to verdicts, and every network
inference in them runs on the worker's own thread (each call takes a free copy of the network, one per worker at
most, :mod:`gan_face.graphs.runtime`). ``N`` is the CPUs this process may use (:func:`available_cpus`: its affinity
mask, and the cgroup's CPU quota in a container), or ``--threads`` / ``GAN_FACE_THREADS``. One thread per operation
is what keeps a scan fast beside other jobs: thread teams wait for each other at every operation, and when another
process holds a core they wait for a thread that is not running (two scans on 2 cores with torch's 2-thread teams
ran at a third of one scan's rate, most of it system time).
"""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Optional

#: Environment variable read when ``--threads`` is not given.
THREADS_ENV = "GAN_FACE_THREADS"


def tune_allocator() -> None:
    """Keep glibc from returning big tensors to the kernel after each batch: 1.5-4x faster CNN batches on these
    machines. Called by entry points (the CLI, training, benchmarks), never on import of the library."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        libc.mallopt(-4, 0)  # M_MMAP_MAX: no mmap for large blocks
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD: do not trim the heap below 1 GiB
    except (OSError, AttributeError):  # not glibc: nothing to tune
        pass


def cgroup_cpu_limit(proc_cgroup: str = "/proc/self/cgroup", root: str = "/sys/fs/cgroup") -> Optional[float]:
    """The CPU quota of this process's cgroup and its ancestors, in CPUs (``None``: no quota).

    cgroup v2 (``cpu.max``: ``"150000 100000"`` is 1.5 CPUs, ``"max ..."`` none), mounted at ``root`` or at
    ``root/unified`` on hybrid systems, and cgroup v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` under
    ``root/cpu`` or ``root/cpu,cpuacct``). The smallest quota on the path from the process's group to the root
    applies.
    """
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        hierarchy, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if hierarchy == "0" and controllers == "":
            for mount in (Path(root), Path(root) / "unified"):
                limits += _quotas(mount, path, _read_v2)
        elif "cpu" in controllers.split(","):
            for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
                limits += _quotas(Path(root) / name, path, _read_v1)
    return min(limits) if limits else None


def _quotas(mount: Path, path: str, read) -> list[float]:
    found = []
    parts = [p for p in path.strip().split("/") if p and p != ".."]
    for depth in range(len(parts), -1, -1):
        limit = read(mount.joinpath(*parts[:depth]))
        if limit is not None:
            found.append(limit)
    return found


def _read_v2(folder: Path) -> Optional[float]:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max" or float(period) <= 0:
        return None
    return float(quota) / float(period)


def _read_v1(folder: Path) -> Optional[float]:
    try:
        quota = float((folder / "cpu.cfs_quota_us").read_text())
        period = float((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask, capped by its cgroup's quota (rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def resolve_threads(threads: Optional[int] = None) -> int:
    """``threads`` if given, else ``$GAN_FACE_THREADS``, else :func:`available_cpus`."""
    if threads is None:
        value = os.environ.get(THREADS_ENV, "").strip()
        if value:
            try:
                threads = int(value)
            except ValueError:
                raise ValueError(f"{THREADS_ENV}={value!r}: expected a whole number of threads") from None
    if threads is None:
        return available_cpus()
    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}")
    return int(threads)


def configure_threads(threads: Optional[int] = None) -> int:
    """Return how many scoring workers to run (see the module docstring) and, if torch is loaded (training,
    fine-tuning), make it run each operation on one thread. For entry points and scripts: it changes
    process-wide settings. Scoring itself never imports torch."""
    workers = resolve_threads(threads)
    torch = sys.modules.get("torch")
    if torch is None:
        return workers
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or inter-op work already started: it is unused by scoring anyway
        pass
    return workers
