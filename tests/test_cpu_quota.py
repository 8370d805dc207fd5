"""The default worker count follows the cgroup CPU quota, read from real cgroup files in a tmp dir."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edge import cpu_quota
from edge.config import load as load_config

CORES = len(os.sched_getaffinity(0))


def cgroup_v2(root: Path, cpu_max: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "cpu.max").write_text(cpu_max + "\n")
    return root


def cgroup_v1(root: Path, quota: str, period: str, directory: str = "cpu") -> Path:
    (root / directory).mkdir(parents=True)
    (root / directory / "cpu.cfs_quota_us").write_text(quota + "\n")
    (root / directory / "cpu.cfs_period_us").write_text(period + "\n")
    return root


@pytest.mark.parametrize(("cpu_max", "quota"), [
    ("max 100000", None), ("20000 100000", 0.2), ("100000 100000", 1.0), ("150000 100000", 1.5),
    ("max", None), ("0 100000", None), ("garbage", None)])
def test_cgroup_v2_cpu_max(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    assert cpu_quota.quota_cpus(cgroup_v2(tmp_path, cpu_max)) == quota


@pytest.mark.parametrize("directory", cpu_quota.V1_CPU_DIRS)
def test_cgroup_v1_cfs_quota(tmp_path: Path, directory: str) -> None:
    assert cpu_quota.quota_cpus(cgroup_v1(tmp_path, "50000", "100000", directory)) == 0.5


def test_cgroup_v1_without_quota(tmp_path: Path) -> None:
    assert cpu_quota.quota_cpus(cgroup_v1(tmp_path, "-1", "100000")) is None


def test_v2_wins_over_v1(tmp_path: Path) -> None:
    """A hybrid host mounts both; the unified hierarchy holds the limit that applies."""
    cgroup_v1(tmp_path, "400000", "100000")
    assert cpu_quota.quota_cpus(cgroup_v2(tmp_path, "20000 100000")) == 0.2


def test_no_cgroup_files(tmp_path: Path) -> None:
    assert cpu_quota.quota_cpus(tmp_path) is None
    assert cpu_quota.available_cpus(tmp_path) == CORES


def test_a_fraction_of_a_cpu_is_one_worker(tmp_path: Path) -> None:
    assert cpu_quota.available_cpus(cgroup_v2(tmp_path, "20000 100000")) == 1


def test_a_quota_rounds_up_and_never_exceeds_the_affinity(tmp_path: Path) -> None:
    assert cpu_quota.available_cpus(cgroup_v2(tmp_path / "a", "150000 100000")) == min(2, CORES)
    assert cpu_quota.available_cpus(cgroup_v2(tmp_path / "b", f"{(CORES + 8) * 100000} 100000")) == CORES


def test_no_quota_is_the_affinity(tmp_path: Path) -> None:
    assert cpu_quota.available_cpus(cgroup_v2(tmp_path, "max 100000")) == CORES


def proc_cgroup(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "proc-self-cgroup"
    path.write_text(text)
    return path


def test_v2_quota_of_the_process_own_cgroup(tmp_path: Path) -> None:
    """A systemd service with CPUQuota=50%: the limit is in its own cgroup, not at the root."""
    root = cgroup_v2(tmp_path / "cgroup", "max 100000")
    cgroup_v2(root / "system.slice" / "edge.service", "50000 100000")
    own = proc_cgroup(tmp_path, "0::/system.slice/edge.service\n")
    assert cpu_quota.quota_cpus(root, own) == 0.5


def test_an_ancestor_limit_applies_too(tmp_path: Path) -> None:
    root = cgroup_v2(tmp_path / "cgroup", "max 100000")
    cgroup_v2(root / "user.slice", "20000 100000")
    cgroup_v2(root / "user.slice" / "edge.scope", "300000 100000")
    own = proc_cgroup(tmp_path, "0::/user.slice/edge.scope\n")
    assert cpu_quota.quota_cpus(root, own) == 0.2
    assert cpu_quota.available_cpus(root, own) == 1


def test_v1_quota_of_the_process_own_cgroup(tmp_path: Path) -> None:
    root = tmp_path / "cgroup"
    cgroup_v1(root, "-1", "100000", "cpu,cpuacct")
    (root / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("150000\n")
    (root / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    own = proc_cgroup(tmp_path, "12:memory:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/\n")
    assert cpu_quota.quota_cpus(root, own) == 1.5


def test_a_cgroup_path_outside_the_mount_falls_back_to_its_root(tmp_path: Path) -> None:
    """A container without its own cgroup namespace names the host's path, which its mount does not hold."""
    root = cgroup_v2(tmp_path / "cgroup", "20000 100000")
    own = proc_cgroup(tmp_path, "0::/kubepods/burstable/pod1/abc\n")
    assert cpu_quota.quota_cpus(root, own) == 0.2


def test_workers_default_follows_the_quota(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`workers` unset (or 0) in the config: one worker for a container limited to 0.2 CPU."""
    monkeypatch.setattr(cpu_quota, "CGROUP_ROOT", cgroup_v2(tmp_path / "cgroup", "20000 100000"))
    monkeypatch.setattr(cpu_quota, "PROC_CGROUP", proc_cgroup(tmp_path, "0::/\n"))
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"upstream_url": "http://127.0.0.1:4318"}))
    assert load_config(path, env={}).workers == 1
    assert load_config(path, env={"TERO_WORKERS": "0"}).workers == 1
    assert load_config(path, env={"TERO_WORKERS": "3"}).workers == 3
