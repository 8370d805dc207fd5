"""The snapshot channel on real shared memory: generations, the grace period, attaching, stale segments.

A child process stands for a worker where the point is what happens across processes (attaching
without adopting a segment, finding segments of a supervisor that is gone).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from multiprocessing import resource_tracker
from pathlib import Path

import pytest

from edge.channels import snapshots
from edge.channels.snapshots import CONTROL_SIZE, SnapshotPublisher, SnapshotReader, attach, remove_stale_segments
from tests.proxy_fixtures import compile_snapshot
from tests.waiting import wait_for

SHM = Path("/dev/shm")
REPO = Path(__file__).parents[1]


def log_drop(pid: str) -> dict:
    return {"id": pid, "log": {"match": [{"log_field": "body", "contains": pid}], "keep": "none"}}


def prefix() -> str:
    return f"edge-t{os.getpid()}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def publisher() -> Iterator[SnapshotPublisher]:
    publisher = SnapshotPublisher(prefix(), keep_seconds=3600.0)
    try:
        yield publisher
    finally:
        publisher.close()


def test_generations_count_up_and_readers_follow_them(publisher: SnapshotPublisher) -> None:
    reader = SnapshotReader(publisher.control_name)
    try:
        assert (reader.current(), reader.generation) == (None, 0)
        assert publisher.publish(compile_snapshot([log_drop("a")], version="v1")) == 1
        first = reader.current()
        assert (first.version, reader.generation) == ("v1", 1)
        assert reader.current() is first  # same generation: not loaded again
        assert publisher.publish(compile_snapshot([log_drop("b")], version="v2")) == 2
        assert publisher.publish(compile_snapshot([log_drop("c")], version="v3")) == 3
        assert (reader.current().version, reader.generation) == ("v3", 3)
        assert [p.id for p in reader.current().policies] == ["c"]
    finally:
        reader.close()


def test_a_reader_attached_later_sees_the_current_snapshot(publisher: SnapshotPublisher) -> None:
    publisher.publish(compile_snapshot([log_drop("a")], version="v1"))
    publisher.publish(compile_snapshot([log_drop("b")], version="v2"))
    reader = SnapshotReader(publisher.control_name)
    try:
        assert (reader.current().version, reader.generation) == ("v2", 2)
    finally:
        reader.close()


def test_control_and_data_segments_are_named_after_the_prefix(publisher: SnapshotPublisher) -> None:
    assert publisher.control_name == f"{publisher.prefix}-ctl"
    assert (SHM / f"{publisher.prefix}-ctl").stat().st_size >= CONTROL_SIZE
    snapshot = compile_snapshot([log_drop("a")])
    publisher.publish(snapshot)
    data = SHM / f"{publisher.prefix}-g1"
    assert data.read_bytes()[:len(snapshot.to_bytes())] == snapshot.to_bytes()


def test_retired_segments_outlive_the_grace_period_only(publisher: SnapshotPublisher) -> None:
    for pid in ("a", "b", "c"):
        publisher.publish(compile_snapshot([log_drop(pid)]))
    assert all((SHM / f"{publisher.prefix}-g{g}").exists() for g in (1, 2, 3))
    publisher.keep_seconds = 0.05
    assert wait_for(lambda: (publisher.tick(), not (SHM / f"{publisher.prefix}-g2").exists())[1])
    assert not (SHM / f"{publisher.prefix}-g1").exists()
    assert (SHM / f"{publisher.prefix}-g3").exists()  # the current one is never retired


def test_with_no_grace_period_the_previous_segment_goes_at_the_next_publish() -> None:
    publisher = SnapshotPublisher(prefix(), keep_seconds=0.0)
    try:
        publisher.publish(compile_snapshot([log_drop("a")]))
        publisher.publish(compile_snapshot([log_drop("b")]))
        assert not (SHM / f"{publisher.prefix}-g1").exists()
        assert (SHM / f"{publisher.prefix}-g2").exists()
    finally:
        publisher.close()


def test_close_unlinks_every_segment() -> None:
    publisher = SnapshotPublisher(prefix(), keep_seconds=3600.0)
    publisher.publish(compile_snapshot([log_drop("a")]))
    publisher.publish(compile_snapshot([log_drop("b")]))
    publisher.close()
    assert sorted(SHM.glob(f"{publisher.prefix}-*")) == []


def test_attaching_leaves_the_resource_tracker_as_it_was(publisher: SnapshotPublisher) -> None:
    register = resource_tracker.register
    segment = attach(publisher.control_name)
    segment.close()
    assert resource_tracker.register is register


def test_a_worker_that_attaches_and_exits_leaves_the_segment_alone(publisher: SnapshotPublisher) -> None:
    publisher.publish(compile_snapshot([log_drop("a")], version="v1"))
    script = textwrap.dedent(f"""
        from edge.channels.snapshots import SnapshotReader
        reader = SnapshotReader({publisher.control_name!r})
        print(reader.current().version)
        reader.close()
    """)
    worker = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (worker.returncode, worker.stdout, worker.stderr) == (0, "v1\n", "")
    assert (SHM / f"{publisher.prefix}-ctl").exists() and (SHM / f"{publisher.prefix}-g1").exists()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.fixture
def shm_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A directory standing for /dev/shm, as open to every user: the real one holds other processes' segments,
    which a test (or a mutant of the code under test) must never remove."""
    directory = Path(tempfile.mkdtemp(prefix="shm-"))
    directory.chmod(0o1777)
    monkeypatch.setattr(snapshots, "_SHM_DIR", str(directory))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def test_segments_of_a_supervisor_that_is_gone_are_removed(shm_dir: Path) -> None:
    dead, alive = dead_pid(), os.getpid()
    stale = [f"edge-{dead}-{i}-ctl" for i in range(10)]
    kept = [f"edge-{alive}-{i}-ctl" for i in range(5)] + [f"edge-x{dead}-{i}" for i in range(5)] + \
        [f"other-{dead}-{i}" for i in range(5)]
    for name in stale + kept:  # interleaved in directory order: whatever comes first, all stale ones go
        (shm_dir / name).write_bytes(b"x")
    assert sorted(remove_stale_segments()) == sorted(stale)
    assert sorted(p.name for p in shm_dir.iterdir()) == sorted(kept)


def test_segments_of_init_are_kept(shm_dir: Path) -> None:
    """pid 1 exists in every pid namespace: its segments are never stale."""
    (shm_dir / "edge-1-a-ctl").write_bytes(b"x")
    assert remove_stale_segments() == []
    assert (shm_dir / "edge-1-a-ctl").exists()


def test_a_missing_segment_directory_removes_nothing(shm_dir: Path) -> None:
    shm_dir.rmdir()
    assert remove_stale_segments() == []


@pytest.mark.skipif(os.geteuid() != 0, reason="acting as another user needs root")
def test_segments_of_a_pid_this_user_may_not_signal_are_kept(shm_dir: Path) -> None:
    """To an unprivileged edge, a pid owned by another user (init here) answers EPERM: alive, not stale."""
    nobody = 65534
    segment = shm_dir / "edge-1-a-ctl"
    segment.write_bytes(b"x")
    os.chown(segment, nobody, nobody)  # so that the unprivileged process could remove it
    assert remove_stale_segments() == []
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # the child process only reports through the pipe and exits
        try:
            os.setgid(nobody)
            os.setuid(nobody)
            os.write(write_end, "\n".join(remove_stale_segments()).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        removed = pipe.read().decode()
    assert os.waitpid(child, 0)[1] == 0
    assert removed == "" and segment.exists()


def test_a_reader_keeps_its_snapshot_when_the_new_segment_is_gone(publisher: SnapshotPublisher) -> None:
    """A publish whose data segment vanished before a reader mapped it (a supervisor shutting down unlinks
    everything) leaves the reader on its last snapshot, and it looks again at its next call."""
    reader = SnapshotReader(publisher.control_name)
    try:
        publisher.publish(compile_snapshot([log_drop("a")], version="v1"))
        assert reader.current().version == "v1"
        publisher.publish(compile_snapshot([log_drop("b")], version="v2"))
        moved = SHM / f"{publisher.prefix}-g2"
        data = moved.read_bytes()
        moved.unlink()
        assert (reader.current().version, reader.generation) == ("v1", 1)
        moved.write_bytes(data)
        assert (reader.current().version, reader.generation) == ("v2", 2)
    finally:
        reader.close()
