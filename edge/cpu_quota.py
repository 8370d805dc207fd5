"""How many CPUs this process may use: the cgroup CPU quota when there is one, else the CPU affinity.

`os.cpu_count()` is the machine's core count. In a container limited to 0.5 CPU on a 64-core
node, one worker per core would start 64 processes (~55 MiB each) that the quota then
throttles, so the default worker count follows the quota instead: cgroup v2 `cpu.max`
("max 100000" is no quota, "20000 100000" is 0.2 CPU), else cgroup v1
`cpu.cfs_quota_us`/`cpu.cfs_period_us` (-1 is no quota). A fractional quota rounds up, and
the result is at least 1 and at most the CPUs the process may run on (`sched_getaffinity`).
The cgroup root is a parameter so that the reading is tested on real files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
# cgroup v1 mounts the cpu controller under one of these names (systemd and Docker differ).
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def affinity_cpus() -> int:
    """The CPUs this process may run on (never fewer than 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def quota_cpus(cgroup_root: Path | None = None) -> float | None:
    """The CPU quota in CPUs (0.2 for "20000 100000"), or None when the cgroup sets none or cannot be read."""
    cgroup_root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    v2 = _read(cgroup_root / "cpu.max")
    if v2 is not None:
        return _ratio(*(v2.split() + ["", ""])[:2])
    for name in V1_CPU_DIRS:
        quota = _read(cgroup_root / name / "cpu.cfs_quota_us")
        if quota is not None:
            return _ratio(quota, _read(cgroup_root / name / "cpu.cfs_period_us") or "")
    return None


def available_cpus(cgroup_root: Path | None = None) -> int:
    """Whole CPUs to plan for: the quota rounded up, capped by the affinity, at least 1."""
    affinity = affinity_cpus()
    quota = quota_cpus(cgroup_root)
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota)))


def _ratio(quota: str, period: str) -> float | None:
    """quota/period, or None for "max", -1, zero or anything unreadable (no quota is the safe reading)."""
    try:
        q, p = int(quota), int(period)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
