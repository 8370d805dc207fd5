"""The edge-tail checkpoint store on real files: replay, corruption, snapshots, fsync cadence, eviction, lock.

Crashes are real: a subprocess queues updates, flushes and SIGKILLs itself, leaving its WAL as a
killed tailer would.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.tail import checkpoint as checkpoint_module
from edge.tail.checkpoint import (
    RECORD_SIZE,
    SNAPSHOT_NAME,
    WAL_NAME,
    Checkpoint,
    CheckpointStore,
    FileIdentity,
    StateDirInUse,
    decode_snapshot,
    encode_record,
    fingerprint,
    scan_wal,
)
from tests.tail.tail_helpers import wait_until

LOGGER = "edge.tail.checkpoint"
QUIET = {"interval_ms": 3_600_000, "snapshot_interval_ms": 3_600_000}  # only flush()/close() write


def identity(inode: int, head: bytes = b"", device: int = 7) -> FileIdentity:
    head = head or f"first line of file {inode}\n".encode()
    return FileIdentity(device, inode, fingerprint(head), len(head))


def head_of(inode: int) -> bytes:
    return f"first line of file {inode}\n".encode()


def wal_records(state_dir: Path) -> int:
    return (state_dir / WAL_NAME).stat().st_size // RECORD_SIZE


def offsets(store: CheckpointStore, inodes: range) -> dict[int, int | None]:
    found = {i: store.lookup(7, i, head_of(i)) for i in inodes}
    return {i: c.offset if c else None for i, c in found.items()}


def crash_after(state_dir: Path, steps: list[tuple[str, int, int]]) -> None:
    """Run a real process that applies (op, inode, offset) steps with flush() after each, then dies by SIGKILL."""
    script = textwrap.dedent(f"""
        import os, signal
        from edge.tail.checkpoint import CheckpointStore, FileIdentity, fingerprint
        store = CheckpointStore({str(state_dir)!r}, interval_ms=3_600_000, snapshot_interval_ms=3_600_000)
        for op, inode, offset in {steps!r}:
            head = f"first line of file {{inode}}\\n".encode()
            ident = FileIdentity(7, inode, fingerprint(head), len(head))
            store.update(ident, offset) if op == "update" else store.forget(ident)
            store.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parents[2], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()


# -- replay ----------------------------------------------------------------------------------------


def test_close_and_reopen_keeps_every_offset(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        for inode in range(10):
            store.update(identity(inode), 100 * inode)
        store.update(identity(3), 333)
    assert (tmp_path / WAL_NAME).stat().st_size == 0  # close snapshots and truncates
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(10)) == {i: 333 if i == 3 else 100 * i for i in range(10)}


def test_sigkill_after_flush_loses_nothing(tmp_path: Path) -> None:
    crash_after(tmp_path, [("update", 1, 10), ("update", 2, 20), ("update", 1, 15), ("update", 3, 30),
                           ("forget", 2, 0)])
    assert wal_records(tmp_path) == 5  # flush after each step: nothing coalesced, nothing compacted
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 4)) == {1: 15, 2: None, 3: 30}
    assert wal_records(tmp_path) == 0  # replayed state was compacted into the snapshot


def test_replay_starts_from_the_snapshot_then_the_wal(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.update(identity(1), 10)
        store.update(identity(2), 20)
    crash_after(tmp_path, [("update", 2, 25), ("forget", 1, 0), ("update", 4, 40)])
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 5)) == {1: None, 2: 25, 3: None, 4: 40}


# -- corruption ------------------------------------------------------------------------------------


def test_flipped_bit_mid_wal_costs_only_that_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crash_after(tmp_path, [("update", 1, 10), ("update", 2, 20), ("update", 1, 11), ("update", 2, 21),
                           ("update", 3, 30)])
    wal = tmp_path / WAL_NAME
    data = bytearray(wal.read_bytes())
    data[2 * RECORD_SIZE + 40] ^= 0x04  # inside the record of (1, 11)
    wal.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, LOGGER), CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 4)) == {1: 10, 2: 21, 3: 30}  # file 1 falls back, never ahead
    assert caplog.messages == [f"checkpoint WAL {wal}: skipped 1 corrupt stretch(es), 56 bytes; files they covered "
                               "resume from an earlier checkpoint"]


def test_torn_trailing_record_is_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crash_after(tmp_path, [("update", 1, 10), ("update", 2, 20), ("update", 1, 11)])
    wal = tmp_path / WAL_NAME
    os.truncate(wal, wal.stat().st_size - 17)
    with caplog.at_level(logging.WARNING, LOGGER), CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 3)) == {1: 10, 2: 20}
    assert f"{RECORD_SIZE - 17} bytes" in caplog.text


def test_garbage_appended_or_inserted_loses_no_valid_record(tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    crash_after(tmp_path, [("update", 1, 10), ("update", 2, 20), ("update", 3, 30)])
    wal = tmp_path / WAL_NAME
    data = wal.read_bytes()
    garbage = random.Random(5).randbytes(77) + b"ETCK" + bytes(10)  # even a false magic inside
    wal.write_bytes(data[:RECORD_SIZE] + garbage + data[RECORD_SIZE:] + garbage)
    with caplog.at_level(logging.WARNING, LOGGER), CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 4)) == {1: 10, 2: 20, 3: 30}
        store.update(identity(4), 40)  # the compacted WAL is aligned again for new records
        store.flush()
    assert "skipped 2 corrupt stretch(es)" in caplog.text
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 5)) == {1: 10, 2: 20, 3: 30, 4: 40}


def test_corrupt_snapshot_is_set_aside_and_the_wal_still_replayed(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.update(identity(1), 10)
        store.update(identity(2), 20)
    crash_after(tmp_path, [("update", 3, 30)])  # snapshot holds files 1 and 2, the WAL file 3
    snapshot = tmp_path / SNAPSHOT_NAME
    data = bytearray(snapshot.read_bytes())
    data[12] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, LOGGER), CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 4)) == {1: None, 2: None, 3: 30}  # those files restart, none skipped
    assert (tmp_path / (SNAPSHOT_NAME + ".corrupt")).read_bytes() == bytes(data)
    assert caplog.messages == [f"checkpoint snapshot {snapshot} is corrupt: set aside as {SNAPSHOT_NAME}.corrupt, "
                               "replaying the WAL alone"]
    with CheckpointStore(tmp_path, **QUIET) as store:  # the fresh snapshot is good
        assert offsets(store, range(1, 4)) == {1: None, 2: None, 3: 30}


@pytest.mark.parametrize("content", [b"", b"ETSN", b"not a snapshot at all, just text\n" * 3])
def test_empty_or_foreign_snapshot_never_raises(tmp_path: Path, content: bytes) -> None:
    (tmp_path / SNAPSHOT_NAME).write_bytes(content)
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert store.lookup(7, 1, head_of(1)) is None
    assert (tmp_path / (SNAPSHOT_NAME + ".corrupt")).exists()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 4), st.integers(0, 10**9)), min_size=1, max_size=12),
       st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=0, max_size=70)), max_size=4),
       st.integers(0, RECORD_SIZE))
def test_any_damage_yields_only_offsets_that_were_written(writes: list[tuple[int, int]],
                                                          damage: list[tuple[int, bytes]], cut: int) -> None:
    """Whatever bytes are overwritten or cut off, replay never raises and never invents an offset."""
    wal = bytearray(b"".join(encode_record(Checkpoint(identity(i), off, 1)) for i, off in writes))
    for position, junk in damage:
        position %= len(wal)
        wal[position:position + len(junk)] = junk
    scan = scan_wal(bytes(wal[:len(wal) - cut]))
    written = {(7, i, off) for i, off in writes}
    for (device, inode), checkpoint in scan.records:
        assert checkpoint is not None and (device, inode, checkpoint.offset) in written
    if not damage and not cut:
        assert [c.offset for _, c in scan.records] == [off for _, off in writes]


# -- snapshots and fsync cadence -------------------------------------------------------------------


def test_periodic_snapshot_truncates_the_wal(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, sync_batch=1, interval_ms=3_600_000, snapshot_interval_ms=300) as store:
        started = time.monotonic()
        for inode in range(5):
            store.update(identity(inode), inode + 1)
        assert wait_until(lambda: wal_records(tmp_path) > 0)  # sync_batch=1: records reach the WAL first
        assert wait_until(lambda: wal_records(tmp_path) == 0)
        assert time.monotonic() - started >= 0.25
        crash_copy = tmp_path / "copy"
        crash_copy.mkdir()
        (crash_copy / SNAPSHOT_NAME).write_bytes((tmp_path / SNAPSHOT_NAME).read_bytes())
    with CheckpointStore(crash_copy, **QUIET) as replayed:  # the snapshot alone holds every offset
        assert offsets(replayed, range(5)) == {i: i + 1 for i in range(5)}


def test_records_reach_the_wal_every_sync_batch_updates(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, sync_batch=4, **QUIET) as store:
        for inode in range(3):
            store.update(identity(inode), 1)
        assert not wait_until(lambda: wal_records(tmp_path) > 0, 0.2), "written before the batch was full"
        store.update(identity(3), 1)
        assert wait_until(lambda: wal_records(tmp_path) == 4)
        for offset in range(2, 6):  # four updates of one file: one coalesced record
            store.update(identity(0), offset)
        assert wait_until(lambda: wal_records(tmp_path) == 5)
        assert not wait_until(lambda: wal_records(tmp_path) != 5, 0.1), "the coalesced updates were written apart"
    crash_after(tmp_path, [])  # nothing happens between
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(4)) == {0: 5, 1: 1, 2: 1, 3: 1}


def test_records_reach_the_wal_within_interval_ms(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, sync_batch=1000, interval_ms=300, snapshot_interval_ms=3_600_000) as store:
        store.update(identity(1), 10)
        queued = time.monotonic()
        assert wal_records(tmp_path) == 0
        assert wait_until(lambda: wal_records(tmp_path) == 1)  # the interval wrote it: the batch is far from full
        assert time.monotonic() - queued >= 0.25  # and not before the interval (a busy machine only delays it)


def test_flush_blocks_until_the_records_are_on_disk(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        for inode in range(20):
            store.update(identity(inode), inode)
        assert wal_records(tmp_path) == 0
        store.flush()
        assert wal_records(tmp_path) == 20
        store.flush()  # nothing new: returns at once
        assert wal_records(tmp_path) == 20


# -- TTL and max slots -----------------------------------------------------------------------------


def test_ttl_expires_slots_in_lookup_in_the_writer_and_on_load(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, ttl_ms=300, **QUIET) as store:
        store.update(identity(1), 10)
        assert store.lookup(7, 1, head_of(1)) is not None
        time.sleep(0.35)  # the TTL passing is what is tested (not synchronisation)
        assert store.lookup(7, 1, head_of(1)) is None
        store.update(identity(2), 20)
        store.flush()  # the writer expires slot 1 with a tombstone
    crash_after(tmp_path, [])
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 3)) == {1: None, 2: 20}
    with CheckpointStore(tmp_path, ttl_ms=100_000, **QUIET) as store:
        store.update(identity(3), 30)
    time.sleep(0.3)  # the TTL passing while no store is open is what is tested (not synchronisation)
    with CheckpointStore(tmp_path, ttl_ms=250, **QUIET) as store:  # expired while no tailer ran
        assert offsets(store, range(1, 4)) == {1: None, 2: None, 3: None}


def test_max_slots_evicts_the_least_recently_updated(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, max_slots=3, **QUIET) as store:
        for inode in range(1, 5):  # the sleeps give every update its own millisecond: the LRU order under test
            store.update(identity(inode), inode)
            time.sleep(0.003)
        store.update(identity(2), 22)  # 2 is now the newest
        time.sleep(0.003)
        store.update(identity(5), 5)
        assert offsets(store, range(1, 6)) == {1: None, 2: 22, 3: None, 4: 4, 5: 5}
        store.flush()
    crash_after(tmp_path, [])
    with CheckpointStore(tmp_path, max_slots=100, **QUIET) as store:  # evictions stay evicted
        assert offsets(store, range(1, 6)) == {1: None, 2: 22, 3: None, 4: 4, 5: 5}
    with CheckpointStore(tmp_path, max_slots=2, **QUIET) as store:  # a smaller limit applies on load
        assert offsets(store, range(1, 6)) == {1: None, 2: 22, 3: None, 4: None, 5: 5}


# -- lookup semantics ------------------------------------------------------------------------------


def test_lookup_matches_grown_files_and_rejects_rewritten_heads(tmp_path: Path) -> None:
    short_head = b"2024-01-01 start\n"
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.update(FileIdentity(7, 1, fingerprint(short_head), len(short_head)), 17)
        store.update(FileIdentity(7, 2, fingerprint(b""), 0), 0)  # an empty file
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert store.lookup(7, 1, short_head).offset == 17
        assert store.lookup(7, 1, short_head + b"more lines\n" * 200).offset == 17  # grew since
        assert store.lookup(7, 1, b"2024-01-02 start\n" + b"more lines\n") is None  # rewritten head
        assert store.lookup(7, 1, short_head[:-1]) is None  # truncated below the fingerprinted bytes
        assert store.lookup(7, 3, short_head) is None  # another inode
        assert store.lookup(8, 1, short_head) is None  # another device
        assert store.lookup(7, 2, b"anything written later\n").offset == 0
        store.update(FileIdentity(7, 1, fingerprint(b"new file\n"), 9), 9)  # inode reused by a new file
        assert store.lookup(7, 1, short_head) is None
        assert store.lookup(7, 1, b"new file\n").offset == 9


def test_forget_drops_the_slot_durably(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.update(identity(1), 10)
        store.update(identity(2), 20)
        store.forget(identity(1))
        store.forget(identity(9))  # unknown: nothing to do
        assert store.lookup(7, 1, head_of(1)) is None
        store.update(identity(3, b"new file reusing the inode\n"), 30)
        store.forget(identity(3))  # the rotated file that had this inode before expires
        assert store.lookup(7, 3, b"new file reusing the inode\n").offset == 30
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 3)) == {1: None, 2: 20}
        assert store.lookup(7, 3, b"new file reusing the inode\n").offset == 30


# -- lifecycle -------------------------------------------------------------------------------------


def test_second_store_on_one_state_dir_is_refused(tmp_path: Path) -> None:
    locked = pytest.raises(StateDirInUse, match=rf"in use by another edge-tail \(pid {os.getpid()}\)")
    with CheckpointStore(tmp_path, **QUIET), locked:
        CheckpointStore(tmp_path, **QUIET)
    with CheckpointStore(tmp_path, **QUIET):  # released by close
        pass


def test_lock_held_by_another_process_names_it_and_dies_with_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from edge.tail.checkpoint import CheckpointStore; "
         f"s = CheckpointStore({str(tmp_path)!r}); print('ready', flush=True); sys.stdin.read()"],
        cwd=Path(__file__).parents[2], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"ready\n"
        with pytest.raises(StateDirInUse, match=f"pid {holder.pid}"):
            CheckpointStore(tmp_path)
    finally:
        holder.kill()
        holder.wait(5)
    with CheckpointStore(tmp_path, **QUIET):  # the kernel released the lock of the killed holder
        pass


def test_close_is_idempotent_and_later_updates_are_refused(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, **QUIET)
    store.update(identity(1), 10)
    store.close()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.update(identity(1), 11)
    store.flush()  # nothing pending after close: returns


@pytest.mark.parametrize("bad", [{"sync_batch": 0}, {"interval_ms": -1}, {"max_slots": 0}, {"ttl_ms": 0},
                                 {"snapshot_interval_ms": 0}])
def test_non_positive_settings_are_rejected(tmp_path: Path, bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=f"{next(iter(bad))} must be a positive number"):
        CheckpointStore(tmp_path, **bad)


def test_out_of_range_offset_raises_in_the_caller(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        with pytest.raises(ValueError, match="does not fit a record"):
            store.update(identity(1), -1)
        store.update(identity(1), 5)  # the store still works
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert store.lookup(7, 1, head_of(1)).offset == 5


def files_at_crash(state_dir: Path, copy: Path) -> Path:
    """The state dir's files as a crash would leave them now (no snapshot at close): copied aside."""
    copy.mkdir()
    for name in (SNAPSHOT_NAME, WAL_NAME):
        (copy / name).write_bytes((state_dir / name).read_bytes())
    return copy


def test_a_forget_survives_a_crash_as_a_tombstone(tmp_path: Path) -> None:
    """Replayed from the WAL (no snapshot at close), a forgotten file has no checkpoint, not offset 0."""
    with CheckpointStore(tmp_path / "state", **QUIET) as store:
        store.update(identity(1), 10)
        store.update(identity(2), 20)
        store.flush()
        store.forget(identity(1))
        store.update(identity(3), 30)  # file 3 comes and goes within one batch: only its tombstone is written
        store.forget(identity(3))
        store.flush()
        crashed = files_at_crash(tmp_path / "state", tmp_path / "crashed")
    with CheckpointStore(crashed, **QUIET) as store:
        assert offsets(store, range(1, 4)) == {1: None, 2: 20, 3: None}


def test_an_update_after_a_forget_in_one_batch_wins_after_a_crash(tmp_path: Path) -> None:
    """Updates, a forget and a new update of one file coalesce before the WAL write: the newest record wins."""
    with CheckpointStore(tmp_path / "state", **QUIET) as store:
        store.update(identity(1), 10)
        store.forget(identity(1))
        store.update(identity(1), 20)
        store.flush()
        crashed = files_at_crash(tmp_path / "state", tmp_path / "crashed")
    with CheckpointStore(crashed, **QUIET) as store:
        assert offsets(store, range(1, 2)) == {1: 20}


def test_after_a_periodic_snapshot_the_writer_goes_on_and_idles(tmp_path: Path) -> None:
    """A snapshot leaves nothing dirty: no snapshot is rewritten until an update, and later updates still reach
    the WAL."""
    with CheckpointStore(tmp_path, sync_batch=1000, interval_ms=3_600_000, snapshot_interval_ms=100) as store:
        store.update(identity(1), 10)
        snapshot = tmp_path / SNAPSHOT_NAME

        def snapshotted() -> bool:
            found = decode_snapshot(snapshot.read_bytes()) or []
            return [(c.identity, c.offset) for c in found] == [(identity(1), 10)]

        assert wait_until(snapshotted)

        def version() -> tuple[int, int]:  # each snapshot is a new file renamed into place
            st = snapshot.stat()
            return st.st_ino, st.st_mtime_ns

        written = version()
        assert not wait_until(lambda: version() != written, 0.5), "an unchanged table was snapshotted again"
        store.update(identity(2), 20)
        store.flush()
        assert wal_records(tmp_path) == 1


def test_sync_batch_counts_again_from_zero_after_each_write(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, sync_batch=3, **QUIET) as store:
        for inode in range(3):
            store.update(identity(inode), 1)
        assert wait_until(lambda: wal_records(tmp_path) == 3)
        for inode in range(3, 5):
            store.update(identity(inode), 1)
        assert not wait_until(lambda: wal_records(tmp_path) > 3, 0.3), "written before the second batch was full"
        store.update(identity(5), 1)
        assert wait_until(lambda: wal_records(tmp_path) == 6)


# -- write failures ---------------------------------------------------------------------------------
# Real failures: the child process may not grow a file past a size (RLIMIT_FSIZE, SIGXFSZ ignored), so
# writes past it fail with EFBIG, as they would with ENOSPC on a full disk.

FAILING_WRITES = """
import json, logging, resource, signal, sys, time
from edge.tail.checkpoint import CheckpointStore, FileIdentity

messages = []

class Keep(logging.Handler):
    def emit(self, record):
        messages.append(record.getMessage())

logging.getLogger("edge.tail.checkpoint").addHandler(Keep())
logging.getLogger("edge.tail.checkpoint").setLevel(logging.INFO)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

def limit(size):
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, resource.RLIM_INFINITY))

def until(condition):
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            sys.exit(f"timed out; log: {messages}")
        time.sleep(0.01)

def count(text):
    return sum(text in m for m in messages)

def update(inode):
    store.update(FileIdentity(7, inode, 0, 0), inode * 10)
"""


def run_failing_writes(state_dir: Path, steps: str) -> list[str]:
    """Run FAILING_WRITES + `steps` in a child; its checkpoint log lines."""
    script = FAILING_WRITES + textwrap.dedent(steps) + "\nprint(json.dumps(messages))\n"
    proc = subprocess.run([sys.executable, "-c", script, str(state_dir)], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def failed(state_dir: Path, error: str = "[Errno 27] File too large") -> str:
    return (f"checkpoint write in {state_dir} failed: {error}; tailing goes on, checkpoints are kept in memory "
            "and retried with the next snapshot")


def test_wal_writes_that_work_again_are_not_a_recovery_until_a_snapshot_lands(tmp_path: Path) -> None:
    """Only a snapshot puts the whole table back on disk: a WAL append that works proves nothing yet."""
    messages = run_failing_writes(tmp_path, f"""
        store = CheckpointStore({str(tmp_path)!r}, interval_ms=3_600_000, snapshot_interval_ms=3_600_000)
        limit(20)  # the 16-byte startup snapshot is written; a 48-byte WAL record is not
        update(1)
        store.flush()
        limit(resource.RLIM_INFINITY)
        update(2)
        store.flush()
        messages.append("WAL written")
        store.close()
    """)
    assert messages == [failed(tmp_path), "WAL written",
                        f"checkpoint writes in {tmp_path} work again after 1 failure(s)"]


def test_a_failing_snapshot_is_retried_logged_by_streak_and_its_recovery_told(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """In process: a directory in the way of the snapshot's temp file makes every snapshot fail (EISDIR)."""
    monkeypatch.setattr(checkpoint_module, "FAILURE_LOG_INTERVAL_S", 2.0)  # the 5-minute reminder, shortened
    blocker = tmp_path / (SNAPSHOT_NAME + ".tmp")
    blocker.mkdir()
    error = f"[Errno 21] Is a directory: '{blocker}'"

    def lines(text: str) -> list[str]:
        return [m for m in caplog.messages if text in m]

    with caplog.at_level(logging.INFO, LOGGER), CheckpointStore(tmp_path, sync_batch=1000, interval_ms=3_600_000,
                                                                snapshot_interval_ms=50) as store:
        assert caplog.messages == [failed(tmp_path, error)]  # the startup snapshot
        store.update(identity(1), 10)
        store.flush()
        assert wal_records(tmp_path) == 1 and lines(" work again ") == []  # a WAL append is no recovery
        assert wait_until(lambda: lines(" still failing "))
        prefix = f"checkpoint writes in {tmp_path} still failing ("
        reminder = re.fullmatch(re.escape(prefix) + r"(\d+) failures so far\): " + re.escape(error),
                                lines(" still failing ")[0])
        assert reminder and int(reminder.group(1)) > 2  # retried every 50 ms, reminded only after 2 s
        blocker.rmdir()  # no update needed: the failed snapshot is retried
        assert wait_until(lambda: lines(" work again "))
        assert re.fullmatch(rf"checkpoint writes in {re.escape(str(tmp_path))} work again after \d+ failure\(s\)",
                            lines(" work again ")[0])
        blocker.mkdir()
        store.update(identity(2), 20)  # a new streak of failures is logged as one again
        assert wait_until(lambda: len(lines(" failed: ")) == 2)
        assert lines(" failed: ") == [failed(tmp_path, error)] * 2
        blocker.rmdir()
    with CheckpointStore(tmp_path, **QUIET) as store:
        assert offsets(store, range(1, 3)) == {1: 10, 2: 20}


def test_a_state_dir_is_created_with_its_parents(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path / "var" / "lib" / "edge-tail", **QUIET) as store:
        store.update(identity(1), 10)
    assert (tmp_path / "var" / "lib" / "edge-tail" / SNAPSHOT_NAME).exists()


def test_a_state_dir_that_cannot_be_read_raises_and_leaves_no_lock(tmp_path: Path) -> None:
    (tmp_path / WAL_NAME).mkdir()  # the WAL cannot be read
    descriptors = sorted(os.listdir("/proc/self/fd"))
    with pytest.raises(IsADirectoryError):
        CheckpointStore(tmp_path, **QUIET)
    assert sorted(os.listdir("/proc/self/fd")) == descriptors  # its own closed, no other one
    (tmp_path / WAL_NAME).rmdir()
    with CheckpointStore(tmp_path, **QUIET) as store:  # not "in use": the failed store released its lock
        store.update(identity(1), 10)


def test_flush_of_a_fresh_store_returns_at_once(tmp_path: Path) -> None:
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.flush()
        assert wal_records(tmp_path) == 0


def test_a_failed_startup_snapshot_is_retried_without_any_update(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / (SNAPSHOT_NAME + ".tmp")
    blocker.mkdir()
    with caplog.at_level(logging.INFO, LOGGER), CheckpointStore(tmp_path, sync_batch=1000, interval_ms=3_600_000,
                                                                snapshot_interval_ms=50):
        blocker.rmdir()
        assert wait_until(lambda: any(" work again " in m for m in caplog.messages))
