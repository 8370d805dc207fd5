"""The declared interfaces are really met: runtimes, snapshot sinks and statistics sources.

Nothing checks a Protocol at run time by itself: a runtime that lost a method or changed
its parameters would only fail on the request that needs it. These tests compare every
member of each Protocol with the classes that stand for it.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.channels.stats_spool import StatsSpool
from edge.config import build
from edge.control.interfaces import SnapshotSink, StatsSource
from edge.engine.stats import MatchStats
from edge.lambda_extension.runtime import LocalRuntime, LocalSnapshots, StatsHandOver
from edge.runtime import CurrentSnapshot, Runtime
from tests.proxy_fixtures import EdgeStack
from workers.runtime import WorkerRuntime


def _parameters(function: Any) -> list[tuple[str, Any]]:
    return [(p.name, p.kind) for p in inspect.signature(function).parameters.values() if p.name != "self"]


def assert_implements(instance: object, protocol: type) -> None:
    """Every method of `protocol` with the same parameters, every property as a plain attribute."""
    members = {name: value for name, value in vars(protocol).items() if not name.startswith("_")}
    assert members, f"{protocol.__name__} declares nothing"
    for name, declared in members.items():
        where = f"{type(instance).__name__}.{name} ({protocol.__name__})"
        assert hasattr(instance, name), f"{where} is missing"
        actual = getattr(instance, name)
        if isinstance(declared, property):
            assert not inspect.ismethod(actual), f"{where} is a method, declared as an attribute"
        else:
            assert inspect.ismethod(actual), f"{where} is not a method"
            assert _parameters(actual) == _parameters(declared), f"{where} takes other parameters"


@pytest.fixture
def worker_runtime() -> Iterator[WorkerRuntime]:
    stack = EdgeStack("http://127.0.0.1:9", None, workers=1)
    runtime = WorkerRuntime(stack.paths)
    try:
        yield runtime
    finally:
        runtime.close()
        stack.close()


@pytest.fixture
def local_runtime() -> LocalRuntime:
    return LocalRuntime(build({"upstream_url": "http://127.0.0.1:9"}, env={}))


def test_the_worker_runtime_is_a_runtime(worker_runtime: WorkerRuntime) -> None:
    assert isinstance(worker_runtime, Runtime)
    assert_implements(worker_runtime, Runtime)
    assert_implements(worker_runtime.snapshots, CurrentSnapshot)


def test_the_lambda_runtime_is_a_runtime(local_runtime: LocalRuntime) -> None:
    assert isinstance(local_runtime, Runtime)
    assert_implements(local_runtime, Runtime)
    assert_implements(local_runtime.snapshots, CurrentSnapshot)


def test_a_runtime_missing_a_member_is_caught(local_runtime: LocalRuntime) -> None:
    """The check itself can fail: a runtime without `flush_stats` is not a Runtime."""

    class Incomplete:
        config = local_runtime.config
        snapshots = local_runtime.snapshots
        generation = 0

        def engine(self) -> None:
            return None

    with pytest.raises(AssertionError, match="flush_stats"):
        assert_implements(Incomplete(), Runtime)


def test_snapshot_sinks() -> None:
    stack = EdgeStack("http://127.0.0.1:9", None, workers=1)
    try:
        for sink in (stack.publisher, LocalSnapshots()):
            assert isinstance(sink, SnapshotSink)
            assert_implements(sink, SnapshotSink)
    finally:
        stack.close()


def test_stats_sources(tmp_path: Path) -> None:
    for source in (StatsSpool(tmp_path / "stats"), StatsHandOver(MatchStats())):
        assert isinstance(source, StatsSource)
        assert_implements(source, StatsSource)
