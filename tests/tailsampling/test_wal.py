"""The sampler's write-ahead log on real files: what a restart gets back, syncing, bounds, damage.

A crash is a real one where it matters: a child process appending in a loop is SIGKILLed, and
every submission it reported as appended must come back. Damage (a torn tail, a flipped byte)
is made by editing the segment files the log wrote.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.tailsampling import wal as wal_module
from edge.tailsampling.interfaces import TraceFragment, WalFull, WriteAheadLog
from edge.tailsampling.wal import FileWal, WalLocked
from tests.proxy_fixtures import REPO
from tests.test_declared_interfaces import assert_implements
from tests.waiting import wait_for

T0 = 1_700_000_000.0


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def fragment(n: int, size: int = 200, tag: bytes = b"") -> TraceFragment:
    return TraceFragment(tid(n), (tag + n.to_bytes(4, "big")) * (size // (4 + len(tag))), 2)


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.wal"))


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the log called fdatasync (every call still syncs)."""
    calls: list[float] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(time.monotonic())
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    return calls


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[list[FileWal]]:
    """Logs a test opened, closed at its end whatever happened."""
    logs: list[FileWal] = []
    yield logs
    for log in logs:
        log.close()


def open_wal(opened: list[FileWal], directory: Path, **options: object) -> FileWal:
    log = FileWal(str(directory), **options)  # type: ignore[arg-type]
    opened.append(log)
    return log


def reopen(opened: list[FileWal], log: FileWal, **options: object) -> FileWal:
    log.close()
    return open_wal(opened, Path(log.directory), **options)


def test_it_is_a_write_ahead_log(tmp_path: Path, opened: list[FileWal]) -> None:
    log = open_wal(opened, tmp_path)
    assert_implements(log, WriteAheadLog)


@pytest.mark.parametrize("fsync", ["interval", "always", "never"])
def test_a_restart_gets_back_what_was_not_done(tmp_path: Path, opened: list[FileWal], fsync: str) -> None:
    log = open_wal(opened, tmp_path, fsync=fsync)
    log.append([fragment(1), fragment(2), fragment(3)], T0)
    log.append([fragment(4), fragment(1, tag=b"late")], T0 + 5)
    log.append([fragment(5)], T0 + 6)
    log.append([fragment(2, tag=b"more")], T0 - 1)  # clocks move: the earliest arrival counts
    log.decided(tid(2), True)
    log.decided(tid(3), False)
    log.decided(tid(4), True)
    log.done([tid(4), tid(5), tid(99)])  # 99 was never written: nothing to do

    replayed = reopen(opened, log, fsync=fsync).replay()

    assert [(t.trace_id, t.arrived, t.payloads) for t in replayed.undecided] == [
        (tid(1), T0, [fragment(1).payload, fragment(1, tag=b"late").payload])]
    assert [(t.trace_id, t.arrived, t.payloads) for t in replayed.to_export] == [
        (tid(2), T0 - 1, [fragment(2).payload, fragment(2, tag=b"more").payload])]
    assert [(t.trace_id, t.arrived, t.payloads) for t in replayed.to_rollup] == [
        (tid(3), T0, [fragment(3).payload])]


def test_the_replay_is_what_the_log_held_when_opened(tmp_path: Path, opened: list[FileWal]) -> None:
    log = open_wal(opened, tmp_path)
    log.append([fragment(1), fragment(2)], T0)
    log = reopen(opened, log)
    assert {t.trace_id for t in log.replay().undecided} == {tid(1), tid(2)}
    assert log.replay().undecided == []  # handed over once: the sampler buffers them from now on
    log.done([tid(1)])
    assert [t.trace_id for t in reopen(opened, log).replay().undecided] == [tid(2)]


def test_spans_after_done_start_a_new_entry(tmp_path: Path, opened: list[FileWal]) -> None:
    """A late span of a trace already exported is a trace of its own: only it comes back."""
    log = open_wal(opened, tmp_path)
    log.append([fragment(1)], T0)
    log.decided(tid(1), True)
    log.done([tid(1)])
    log.append([fragment(1, tag=b"late")], T0 + 40)
    replayed = reopen(opened, log).replay()
    assert [(t.trace_id, t.arrived, t.payloads) for t in replayed.undecided] == [
        (tid(1), T0 + 40, [fragment(1, tag=b"late").payload])]
    assert replayed.to_export == []


def test_always_syncs_before_append_returns(tmp_path: Path, opened: list[FileWal], syncs: list[float]) -> None:
    log = open_wal(opened, tmp_path, fsync="always")
    for n in range(5):
        before = len(syncs)
        log.append([fragment(n)], T0)
        assert len(syncs) > before


def test_interval_syncs_in_the_background_at_most_every_interval(
        tmp_path: Path, opened: list[FileWal], syncs: list[float]) -> None:
    log = open_wal(opened, tmp_path, fsync="interval", fsync_interval=0.05)
    start = time.monotonic()
    while time.monotonic() - start < 0.5:
        log.append([fragment(1)], T0)
        time.sleep(0.001)
    last_append = time.monotonic()
    assert wait_for(lambda: syncs and syncs[-1] >= last_append)  # what was written last is synced too
    during = [t for t in syncs if start <= t <= last_append]
    # synced while appends went on (a starved syncer may manage only one), and never more often than the interval
    assert 1 <= len(during) <= (last_append - start) / 0.05 + 2


def test_never_does_not_sync(tmp_path: Path, opened: list[FileWal], syncs: list[float]) -> None:
    log = open_wal(opened, tmp_path, fsync="never", segment_bytes=4096)
    for n in range(50):
        log.append([fragment(n)], T0)
    log.close()
    assert syncs == []
    assert len(reopen(opened, log, fsync="never").replay().undecided) == 50


def test_an_unknown_fsync_mode_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval, always, never"):
        FileWal(str(tmp_path), fsync="sometimes")


def test_wal_full_until_traces_are_done(tmp_path: Path, opened: list[FileWal]) -> None:
    log = open_wal(opened, tmp_path, max_bytes=20_000, segment_bytes=4096)
    written = 0
    with pytest.raises(WalFull):
        while True:
            log.append([fragment(written, 1000)], T0)
            written += 1
    assert 10 <= written < 20
    assert log.bytes_used <= 20_000
    log.done([tid(n) for n in range(written)])
    assert log.bytes_used < 5000  # every segment but the newest is gone
    log.append([fragment(1000, 1000)], T0)  # room again
    assert [t.trace_id for t in reopen(opened, log).replay().undecided] == [tid(1000)]


def test_a_long_steady_run_keeps_disk_use_bounded(tmp_path: Path, opened: list[FileWal]) -> None:
    """Traces done in order, and one in fifty done much later: the stragglers' segments are
    rewritten forward instead of keeping everything after them on disk."""
    segment = 16 << 10
    log = open_wal(opened, tmp_path, segment_bytes=segment, max_bytes=64 << 20)
    largest = 0
    live: set[int] = set()
    for n in range(12_000):
        log.append([fragment(n, 300)], T0 + n)
        log.decided(tid(n), n % 3 == 0)
        live.add(n)
        normal, straggler = n - 100, n - 4000
        for old in (normal,) if normal >= 0 and normal % 50 else ():
            log.done([tid(old)])
            live.discard(old)
        for old in (straggler,) if straggler >= 0 and straggler % 50 == 0 else ():
            log.done([tid(old)])
            live.discard(old)
        largest = max(largest, log.bytes_used)
    live_bytes = len(live) * 400  # a fragment of 300 bytes with its framing and decision
    assert largest < 12_000 * 300 / 10  # far from all that was written
    assert log.bytes_used <= 2 * live_bytes + 5 * segment
    replayed = reopen(opened, log, segment_bytes=segment).replay()
    back = {t.trace_id: t for t in [*replayed.to_export, *replayed.to_rollup]}
    assert set(back) == {tid(n) for n in live}
    assert all(t.payloads == [fragment(int.from_bytes(t.trace_id, "big"), 300).payload] for t in back.values())
    assert all(t.arrived == T0 + int.from_bytes(t.trace_id, "big") for t in back.values())


def test_a_rewrite_cut_short_by_a_crash_replays_each_trace_once(tmp_path: Path, opened: list[FileWal]) -> None:
    """The rewritten segment is in place but the old one was not deleted yet."""
    log = open_wal(opened, tmp_path, segment_bytes=4096)
    log.append([fragment(0)], T0)
    log.decided(tid(0), True)
    for n in range(1, 60):
        log.append([fragment(n)], T0)  # four segments
    first = segments(tmp_path)[0]
    saved = first.read_bytes()
    log.done([tid(n) for n in range(1, 60)])  # trace 0 straggles, keeping three segments of garbage: rewritten
    assert not first.exists()
    first.write_bytes(saved)
    replayed = reopen(opened, log, segment_bytes=4096).replay()
    assert [(t.trace_id, t.payloads) for t in replayed.to_export] == [(tid(0), [fragment(0).payload])]
    assert replayed.undecided == []
    assert not first.exists()


def test_a_torn_tail_is_cut_off(tmp_path: Path, opened: list[FileWal]) -> None:
    log = open_wal(opened, tmp_path)
    log.append([fragment(1)], T0)
    log.append([fragment(2)], T0)
    log.close()
    newest = segments(tmp_path)[-1]
    whole = newest.stat().st_size
    with open(newest, "ab") as f:  # a write cut off by a crash: half a record
        f.write(saved_record(tmp_path, fragment(3))[:100])
    log = open_wal(opened, tmp_path)
    assert log.truncated_bytes == 100 and log.corrupt_records == 0
    assert newest.stat().st_size == whole
    assert {t.trace_id for t in log.replay().undecided} == {tid(1), tid(2)}
    log.append([fragment(4)], T0)
    assert {t.trace_id for t in reopen(opened, log).replay().undecided} == {tid(1), tid(2), tid(4)}


def saved_record(tmp_path: Path, f: TraceFragment) -> bytes:
    """The bytes one append of `f` writes, taken from a scratch log."""
    scratch = tmp_path / "scratch"
    log = FileWal(str(scratch), fsync="never")
    before = segments(scratch)[-1].stat().st_size
    log.append([f], T0)
    log.close()
    data = segments(scratch)[-1].read_bytes()[before:]
    shutil.rmtree(scratch)
    return data


def test_a_corrupt_record_is_skipped_counted_and_logged_once(
        tmp_path: Path, opened: list[FileWal], caplog: pytest.LogCaptureFixture) -> None:
    log = open_wal(opened, tmp_path)
    for n in range(1, 6):
        log.append([fragment(n, 500, tag=b"<%d>" % n)], T0)
    log.close()
    newest = segments(tmp_path)[-1]
    data = bytearray(newest.read_bytes())
    at = data.index(b"<2>")
    data[at] ^= 0xFF
    data[data.index(b"<4>")] ^= 0xFF
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="edge.tailsampling.wal"):
        log = open_wal(opened, tmp_path)
    assert log.corrupt_records == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"the write-ahead log in {tmp_path} had 2 damaged records; they were skipped"]
    assert {t.trace_id for t in log.replay().undecided} == {tid(1), tid(3), tid(5)}


def test_one_process_per_directory(tmp_path: Path, opened: list[FileWal], monkeypatch: pytest.MonkeyPatch) -> None:
    open_wal(opened, tmp_path)
    monkeypatch.setattr(wal_module, "LOCK_WAIT_S", 0.2)
    with pytest.raises(WalLocked, match="in use by another process"):
        FileWal(str(tmp_path))


def test_the_next_owner_waits_for_the_previous_one_to_let_go(tmp_path: Path, opened: list[FileWal]) -> None:
    first = open_wal(opened, tmp_path)
    first.append([fragment(1)], T0)
    threading.Timer(0.3, first.close).start()
    second = open_wal(opened, tmp_path)
    assert [t.trace_id for t in second.replay().undecided] == [tid(1)]


CHILD = """
import os, sys, time
from edge.tailsampling.interfaces import TraceFragment
from edge.tailsampling.wal import FileWal

log = FileWal(sys.argv[1], segment_bytes=1 << 20)
n = 0
while True:
    size = 1000 + (n * 7919) % 200_000  # large writes, so the kill may land inside one
    log.append([TraceFragment(n.to_bytes(16, "big"), bytes([n % 251]) * size, 1)], 1.0 + n)
    os.write(1, b"%d\\n" % n)
    n += 1
"""


def test_sigkill_while_appending_loses_nothing_that_was_acknowledged(tmp_path: Path, opened: list[FileWal]) -> None:
    directory = tmp_path / "wal"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(directory)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    acknowledged: list[int] = []
    try:
        while len(acknowledged) < 300:
            line = child.stdout.readline()
            assert line, child.stderr.read() if child.stderr else ""
            acknowledged.append(int(line))
    finally:
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate(timeout=10)
    acknowledged += [int(line) for line in rest.split(b"\n") if line]  # printed before the kill landed

    replayed = open_wal(opened, directory).replay()

    back = {int.from_bytes(t.trace_id, "big"): t for t in replayed.undecided}
    assert set(acknowledged) <= set(back)
    for n, trace in back.items():
        assert trace.payloads == [bytes([n % 251]) * (1000 + (n * 7919) % 200_000)]
        assert trace.arrived == 1.0 + n



def test_a_close_during_a_sync_stops_the_syncer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """close() may set its flags just before the syncer clears `_wake` for the sync it started:
    the syncer must still see it, or close() waits for it forever."""
    real = FileWal._sync_pending

    def close_arrives_first(self: FileWal) -> None:
        self._closing.set()  # what close() does before joining the syncer
        self._wake.set()
        real(self)

    monkeypatch.setattr(FileWal, "_sync_pending", close_arrives_first)
    log = FileWal(str(tmp_path), fsync_interval=0.0)
    try:
        assert log._syncer is not None
        log._syncer.join(10)
        assert not log._syncer.is_alive()
    finally:
        log.close()
