"""A backlog toward a slow or paused target: errors go first, and restarts (SIGTERM, SIGKILL) lose nothing.

A real `edge-tail` forwards to a real recording upstream on loopback that refuses (503)
or answers slowly. What the upstream received is read back record by record: every line
arrives, errors of a backlog arrive before the other lines of it, and a restart sends a
line again only when its batch was not acknowledged before the stop.
"""

from __future__ import annotations

import collections
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import Tailer, wait_until, write_lines
from tests.tail.test_parsed_records import records

BATCH = 20
READ_BUF = 2048  # small blocks, so the backlog builds while the file is still being read
BLOCK_LINES = READ_BUF // 40 + 1  # at most this many of our lines (over 40 bytes each) in one block


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def mixed_lines(count: int) -> list[str]:
    """JSON lines: every 7th an error, every 50th an info whose message says CRITICAL (urgent too)."""
    out = []
    for i in range(count):
        level = "error" if i % 7 == 3 else "info"
        message = f"n{i:05d} {'CRITICAL disk full' if i % 50 == 10 else 'request done'}"
        out.append(json.dumps({"level": level, "msg": message}))
    return out


def urgent(message: str) -> bool:
    number = int(message[1:6])
    return number % 7 == 3 or number % 50 == 10


def received(upstream: RecordingUpstream) -> list[str]:
    return [r.body.string_value for r in records(upstream)]


def args(src: Path, upstream: RecordingUpstream, *extra: str) -> list[str]:
    return [str(src), "-f", "json", "--read-from", "checkpoint", "--forward-url", f"{upstream.url}/v1/logs",
            "--batch-lines", str(BATCH), "--batch-interval-ms", "20", "--read-buf", str(READ_BUF),
            "--max-buffer-records", "5000", "--retry-backoff-ms", "50", *extra]


def test_errors_of_a_backlog_go_first_and_a_restart_resends_only_unacknowledged_batches(
        tmp_path: Path, upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    lines = mixed_lines(600)
    write_lines(src, lines)
    upstream.reset(status=503)  # paused: every batch is refused and retried
    tailer = Tailer(tmp_path, args(src, upstream)).start()
    try:
        assert wait_until(lambda: len(upstream.received()) >= 5), tailer.stderr()  # ~750 ms of retries
        upstream.reset(delay=0.1)  # back, but slower than the backlog: each batch takes 100 ms
        want_urgent = {f"n{i:05d}" for i in range(600) if urgent(f"n{i:05d}")}
        assert wait_until(lambda: want_urgent <= {m[:6] for m in received(upstream)}), tailer.stderr()
        resumed = received(upstream)
        # the first batch was sealed before there was a backlog, so it holds both kinds; after it, no other
        # line was sent until every error had been
        last_urgent = max(i for i, m in enumerate(resumed) if urgent(m))
        early = [m for m in resumed[:last_urgent] if not urgent(m)]
        assert all(int(m[1:6]) < BLOCK_LINES for m in early), early
        assert len(resumed) - last_urgent <= 2 * BATCH  # few other batches were acknowledged meanwhile
        assert tailer.proc is not None
        tailer.stop()  # SIGTERM while most of the other lines still wait
    finally:
        tailer.kill()
    first_run = received(upstream)
    assert len(first_run) < len(lines)
    upstream.reset()
    with Tailer(tmp_path, args(src, upstream)) as again:
        assert wait_until(lambda: {m[:6] for m in received(upstream)} >= {f"n{i:05d}" for i in range(600)}
                          - {m[:6] for m in first_run}), again.stderr()
        again.stop()
    counts = collections.Counter(m[:6] for m in first_run + received(upstream))
    assert set(counts) == {f"n{i:05d}" for i in range(600)}  # nothing lost
    again_sent = sorted(k for k, n in counts.items() if n > 1)
    assert max(counts.values()) <= 2
    # resent: the batch in flight at SIGTERM and the block the checkpoint stopped before; errors
    # acknowledged ahead of the checkpoint are not among them
    assert len(again_sent) <= BATCH + BLOCK_LINES, again_sent
    assert sum(urgent(k) for k in again_sent) <= (BATCH + BLOCK_LINES) // 7 + 2, again_sent


def test_sigkill_with_a_backlog_in_flight_loses_nothing_and_resends_at_most_once(
        tmp_path: Path, upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    lines = mixed_lines(800)
    write_lines(src, lines)
    upstream.reset(delay=0.05)  # acknowledges slowly: a backlog builds at once
    tailer = Tailer(tmp_path, args(src, upstream, "--checkpoint-sync-batch", "1")).start()
    try:
        assert wait_until(lambda: len(upstream.received()) >= 8), tailer.stderr()
        assert tailer.proc is not None
        tailer.proc.send_signal(signal.SIGKILL)
        assert tailer.proc.wait(10) == -signal.SIGKILL
    finally:
        tailer.kill()
    first_run = received(upstream)
    assert len(first_run) < len(lines)  # killed mid-backlog
    upstream.reset()
    with Tailer(tmp_path, args(src, upstream)) as again:
        assert wait_until(lambda: {m[:6] for m in first_run + received(upstream)}
                          == {f"n{i:05d}" for i in range(800)}), again.stderr()
        again.stop()
    counts = collections.Counter(m[:6] for m in first_run + received(upstream))
    assert len(counts) == 800  # no line lost
    assert max(counts.values()) <= 2  # none resent more than once
    # the non-urgent lines keep their file order within each run
    for run in (first_run, received(upstream)):
        normal = [int(m[1:6]) for m in run if not urgent(m)]
        assert normal == sorted(normal)
