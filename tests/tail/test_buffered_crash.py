"""SIGKILL of edge-tail while kept lines wait in its output buffer: a restart delivers every one.

A checkpoint may only cover lines that reached the output (after the flush, or the upstream's
acknowledgement when forwarding). A checkpoint taken when lines enter the buffer would make a
restart resume after lines that were never written: all of them lost.
"""

from __future__ import annotations

from pathlib import Path

from edge.tail.checkpoint import WAL_NAME, scan_wal
from tests.tail.tail_helpers import Tailer, lines_of, wait_until, write_lines


def _bytes_read(pid: int) -> int:
    """Bytes the process has read so far (the tailer reads with pread: no descriptor position moves)."""
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/PID/io")


def _recorded_offset(state: Path) -> int:
    wal = state / WAL_NAME
    data = wal.read_bytes() if wal.exists() else b""
    return max((c.offset for _, c in scan_wal(data).records if c is not None), default=0)


def test_sigkill_with_lines_in_the_output_buffer_loses_none(tmp_path: Path) -> None:
    source, out, state = tmp_path / "app.log", tmp_path / "out.log", tmp_path / "state"
    source.touch()
    held = ["--flush-interval-ms", "600000", "--flush-lines", "100000", "--write-buf", "1048576",
            "--checkpoint-interval-ms", "10", "--checkpoint-sync-batch", "1"]
    tailer = Tailer(tmp_path, ["--read-from", "checkpoint", "-o", str(out), *held, str(source)]).start()
    try:
        tailer.wait_tailing(source)
        before = _bytes_read(tailer.proc.pid)
        write_lines(source, [f"line {i}" for i in range(100)])
        size = source.stat().st_size
        assert wait_until(lambda: _bytes_read(tailer.proc.pid) >= before + size), tailer.stderr()
        # Give a checkpoint taken too early (at write rather than after the flush) time to reach the
        # WAL: a hundred checkpoint intervals. The right behaviour records nothing here.
        wait_until(lambda: _recorded_offset(state) > 0, timeout=1.0)
        assert lines_of(out) == []  # the lines are still in the output buffer
        tailer.proc.kill()
        tailer.proc.wait(10)
    finally:
        tailer.kill()
    with Tailer(tmp_path, ["--read-from", "checkpoint", "-o", str(out), str(source)]) as again:
        assert wait_until(lambda: len(lines_of(out)) >= 100), again.stderr()
        again.stop()
    assert sorted(set(lines_of(out)), key=lambda b: int(b.split()[1])) == [f"line {i}".encode() for i in range(100)]
