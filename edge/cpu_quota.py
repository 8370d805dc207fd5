"""How many CPUs this process may use: the cgroup CPU quota when there is one, else the CPU affinity.

`os.cpu_count()` is the machine's core count. In a container limited to 0.5 CPU on a 64-core
node, one worker per core would start 64 processes (~55 MiB each) that the quota then
throttles, so the default worker count follows the quota instead: cgroup v2 `cpu.max`
("max 100000" is no quota, "20000 100000" is 0.2 CPU), else cgroup v1
`cpu.cfs_quota_us`/`cpu.cfs_period_us` (-1 is no quota). The files are read in the
process's own cgroup (from /proc/self/cgroup: a systemd service with `CPUQuota=` has its
limit there, not at the root) and in each of its ancestors, whose limits apply too; the
smallest quota wins. A container sees its own cgroup as the root. A fractional quota rounds
up, and the result is at least 1 and at most the CPUs the process may run on
(`sched_getaffinity`). The paths are parameters so that the reading is tested on real files.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")
# cgroup v1 mounts the cpu controller under one of these names (systemd and Docker differ).
V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def affinity_cpus() -> int:
    """The CPUs this process may run on (never fewer than 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def quota_cpus(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> float | None:
    """The CPU quota in CPUs (0.2 for "20000 100000"), or None when no cgroup sets one or none can be read."""
    root = CGROUP_ROOT if cgroup_root is None else cgroup_root
    own = _own_cgroups(PROC_CGROUP if proc_cgroup is None else proc_cgroup)
    v2 = [_read(directory / "cpu.max") for directory in _lineage(root, own.get("", "/"))]
    if any(text is not None for text in v2):
        return _smallest(_ratio(*(text.split() + ["", ""])[:2]) for text in v2 if text is not None)
    for name in V1_CPU_DIRS:
        lineage = _lineage(root / name, own.get("cpu", "/"))
        quotas = [(_read(d / "cpu.cfs_quota_us"), _read(d / "cpu.cfs_period_us")) for d in lineage]
        if any(quota is not None for quota, _ in quotas):
            return _smallest(_ratio(quota, period or "") for quota, period in quotas if quota is not None)
    return None


def available_cpus(cgroup_root: Path | None = None, proc_cgroup: Path | None = None) -> int:
    """Whole CPUs to plan for: the quota rounded up, capped by the affinity, at least 1."""
    affinity = affinity_cpus()
    quota = quota_cpus(cgroup_root, proc_cgroup)
    if quota is None:
        return affinity
    return max(1, min(affinity, math.ceil(quota)))


def _own_cgroups(proc_cgroup: Path) -> dict[str, str]:
    """The process's cgroup path: under "" for v2 (line `0::/path`), under "cpu" for the v1 cpu controller."""
    own = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            own[""] = path
        elif "cpu" in controllers.split(","):
            own["cpu"] = path
    return own


def _lineage(base: Path, own: str) -> list[Path]:
    """The process's cgroup directory under `base`, then each ancestor up to `base` itself."""
    parts = [part for part in own.split("/") if part and part != ".."]
    return [base.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _smallest(quotas: Iterable[float | None]) -> float | None:
    return min((q for q in quotas if q is not None), default=None)


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
