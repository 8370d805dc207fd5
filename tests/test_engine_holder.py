"""EngineHolder: one engine per snapshot, whichever way the snapshot source moves its generation."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import pytest

from edge.channels.snapshots import SnapshotPublisher, SnapshotReader
from edge.engine.extensions import ExtensionRegistry
from edge.engine.holder import EngineHolder
from edge.engine.ratelimit import LocalRateLimiter
from edge.engine.stats import MatchStats
from edge.lambda_extension.runtime import LocalSnapshots
from edge.policy.model import LOG
from edge.policy.snapshot import Snapshot
from tests.proxy_fixtures import compile_snapshot


def log_drop(pid: str) -> dict:
    return {"id": pid, "name": pid, "log": {"match": [{"log_field": "body", "contains": pid}], "keep": "none"}}


METRIC_ONLY = {"id": "m", "metric": {"match": [{"metric_field": "name", "exact": "x"}], "keep": False}}


@pytest.fixture
def shared_memory() -> Iterator[tuple[SnapshotPublisher, SnapshotReader]]:
    publisher = SnapshotPublisher(f"edge-t{os.getpid()}-{uuid.uuid4().hex[:8]}", keep_seconds=0.0)
    reader = SnapshotReader(publisher.control_name)
    try:
        yield publisher, reader
    finally:
        reader.close()
        publisher.close()


def test_no_engine_before_the_first_snapshot() -> None:
    snapshots = LocalSnapshots()
    assert EngineHolder(snapshots.current).engine() is None


def test_in_process_snapshots_get_one_engine_each_without_lag() -> None:
    snapshots = LocalSnapshots()
    holder = EngineHolder(snapshots.current)
    first = compile_snapshot([log_drop("a")])
    snapshots.publish(first)
    engine = holder.engine()
    assert engine is not None and engine.snapshot is first
    assert holder.engine() is engine  # same snapshot: no rebuild
    second = compile_snapshot([log_drop("b")])
    snapshots.publish(second)
    engine_two = holder.engine()
    assert engine_two is not engine and engine_two.snapshot is second


def test_shared_memory_reader_is_followed_on_the_first_call_after_a_publish(
        shared_memory: tuple[SnapshotPublisher, SnapshotReader]) -> None:
    """The reader moves its generation inside `current()`: the holder must not lag behind it."""
    publisher, reader = shared_memory
    holder = EngineHolder(reader.current)
    assert holder.engine() is None
    publisher.publish(compile_snapshot([log_drop("a")], version="v1"))
    engine = holder.engine()
    assert engine is not None and engine.snapshot.version == "v1"
    assert holder.engine() is engine  # generation now matches: no second build for the same snapshot
    publisher.publish(compile_snapshot([log_drop("b")], version="v2"))
    engine_two = holder.engine()
    assert engine_two is not None and engine_two.snapshot.version == "v2"
    assert holder.engine() is engine_two


def test_a_fixed_snapshot_is_built_once() -> None:
    snapshot = compile_snapshot([log_drop("a")])
    holder = EngineHolder(lambda: snapshot)
    engine = holder.engine()
    assert engine is not None and engine.snapshot is snapshot
    assert all(holder.engine() is engine for _ in range(10))


def test_engines_share_the_limiter_stats_and_extensions_they_are_given() -> None:
    snapshots = LocalSnapshots()
    limiter, stats, extensions = LocalRateLimiter(), MatchStats(), ExtensionRegistry()
    holder = EngineHolder(snapshots.current, limiter=limiter, stats=stats, extensions=extensions)
    for pid in ("a", "b"):
        snapshots.publish(compile_snapshot([log_drop(pid)]))
        engine = holder.engine()
        assert engine is not None
        assert (engine.limiter, engine.stats, engine.extensions) == (limiter, stats, extensions)


def test_unwanted_snapshots_get_no_engine() -> None:
    snapshots = LocalSnapshots()
    holder = EngineHolder(snapshots.current, wanted=lambda snapshot: snapshot.targets(LOG))
    snapshots.publish(compile_snapshot([METRIC_ONLY]))
    assert holder.engine() is None
    snapshots.publish(compile_snapshot([log_drop("a")]))
    assert holder.engine() is not None
    snapshots.publish(compile_snapshot([METRIC_ONLY]))
    assert holder.engine() is None


def test_concurrent_callers_always_get_the_engine_of_the_snapshot_they_read() -> None:
    """Publishes race with readers in several threads: no call pairs an engine with another snapshot."""
    snapshots = LocalSnapshots()
    seen = threading.local()

    def source() -> Snapshot | None:
        seen.snapshot = snapshots.current()
        return seen.snapshot

    holder = EngineHolder(source)
    published = [compile_snapshot([log_drop(f"p{i}")], version=f"v{i}") for i in range(20)]
    mismatches: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            engine = holder.engine()
            if (engine.snapshot if engine is not None else None) is not seen.snapshot:
                mismatches.append("engine of another snapshot")

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for snapshot in published:
        snapshots.publish(snapshot)
    stop.set()
    for thread in readers:
        thread.join()
    assert mismatches == []
    engine = holder.engine()
    assert engine is not None and engine.snapshot is published[-1]
