"""edge-tail's file sink in process, on real files and pipes: buffering, flush triggers, delivery reports, errors.

A checkpoint must never get ahead of the output, so what is pinned here is when positions are
reported back: only after their lines reached the descriptor, newest position per file.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edge.tail.checkpoint import FileIdentity
from edge.tail.output import FileSink, OutputError, open_output
from edge.tail.output import Position as SinkPosition


def ident(inode: int, device: int = 3) -> FileIdentity:
    return FileIdentity(device, inode, 0, 0)


class Recorder:
    """Collects what the sink reports as delivered, with what the output file held at that moment."""

    def __init__(self, output: Path | None = None) -> None:
        self.output = output
        self.reports: list[list[SinkPosition]] = []
        self.seen: list[bytes] = []

    def __call__(self, positions: list[SinkPosition]) -> None:
        self.reports.append(positions)
        if self.output is not None:
            self.seen.append(self.output.read_bytes())


def sink(path: Path, recorder: Recorder, *, write_buf: int = 1 << 20, flush_lines: int = 1000,
         flush_interval_ms: int = 1000) -> FileSink:
    return FileSink(str(path), write_buf=write_buf, flush_lines=flush_lines, flush_interval_ms=flush_interval_ms,
                    on_delivered=recorder)


def test_lines_are_buffered_until_flush_then_positions_are_reported(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    recorder = Recorder(out)
    s = sink(out, recorder)
    try:
        s.write(b"a\n", 1, "src", (ident(1), 2))
        s.write(b"b\nc\n", 2, "src", (ident(1), 6))
        assert out.read_bytes() == b""
        assert (s.size, s.lines) == (6, 3)
        s.flush()
        assert out.read_bytes() == b"a\nb\nc\n"
        assert recorder.reports == [[(ident(1), 6)]]  # newest position per file
        assert recorder.seen == [b"a\nb\nc\n"]  # reported once the lines were written
        assert (s.size, s.lines, s.deadline()) == (0, 0, None)
        s.flush()
        assert len(recorder.reports) == 1  # nothing new: nothing reported
        s.write(b"d\n", 1, "src", (ident(1), 8))  # the sink goes on after a flush
        s.flush()
        assert out.read_bytes() == b"a\nb\nc\nd\n"
        assert recorder.reports[1:] == [[(ident(1), 8)]]
    finally:
        s.close()


def test_positions_of_several_files_are_reported_together(tmp_path: Path) -> None:
    recorder = Recorder()
    s = sink(tmp_path / "out.log", recorder)
    s.write(b"a\n", 1, "one", (ident(1), 2))
    s.write(b"b\n", 1, "two", (ident(2), 2))
    s.write(b"", 0, "one", (ident(1, device=4), 9))  # same inode, another device: another file
    s.close()
    assert recorder.reports == [[(ident(1), 2), (ident(2), 2), (ident(1, device=4), 9)]]


def test_a_position_without_lines_is_reported_at_the_next_flush(tmp_path: Path) -> None:
    """All lines of a block dropped: the file position still moves on."""
    out = tmp_path / "out.log"
    recorder = Recorder(out)
    s = sink(out, recorder)
    s.write(b"", 0, "src", (ident(1), 40))
    assert s.deadline() is not None and s.lines == 0
    s.flush()
    assert recorder.reports == [[(ident(1), 40)]] and out.read_bytes() == b""
    s.close()


def test_write_buf_bytes_trigger_a_flush(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    recorder = Recorder(out)
    s = sink(out, recorder, write_buf=4)
    s.write(b"ab\n", 1, "src", (ident(1), 3))
    assert out.read_bytes() == b""
    s.write(b"c\n", 1, "src", (ident(1), 5))  # 5 bytes >= 4
    assert out.read_bytes() == b"ab\nc\n" and recorder.reports == [[(ident(1), 5)]]
    s.close()


def test_exactly_write_buf_bytes_flush(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    s = sink(out, Recorder(), write_buf=3)
    s.write(b"ab\n", 1, "src", None)
    assert out.read_bytes() == b"ab\n"
    s.close()


def test_flush_lines_trigger_a_flush(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    s = sink(out, Recorder(), flush_lines=2)
    s.write(b"a\n", 1, "src", None)
    assert out.read_bytes() == b""
    s.write(b"b\n", 1, "src", None)
    assert out.read_bytes() == b"a\nb\n"
    s.close()


def test_the_deadline_is_the_first_buffered_write_plus_the_interval(tmp_path: Path) -> None:
    s = sink(tmp_path / "out.log", Recorder(), flush_interval_ms=2500)
    try:
        assert s.deadline() is None
        before = time.monotonic()
        s.write(b"a\n", 1, "src", None)
        after = time.monotonic()
        first = s.deadline()
        assert before + 2.5 <= first <= after + 2.5
        s.write(b"b\n", 1, "src", None)
        assert s.deadline() == first  # later writes do not move it
        s.write(b"", 0, "src", None)
        assert s.deadline() == first
        s.flush()
        assert s.deadline() is None
        s.write(b"", 0, "src", None)  # nothing to deliver: no deadline
        assert s.deadline() is None
    finally:
        s.close()


def test_output_appends_to_an_existing_file_and_is_never_tailed(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_bytes(b"old\n")
    s = sink(out, Recorder())
    st = os.stat(out)
    assert s.file_key == (st.st_dev, st.st_ino)
    assert s.ready()
    s.write(b"new\n", 1, "src", None)
    s.close()
    assert out.read_bytes() == b"old\nnew\n"
    assert s.fd == -1


def test_close_flushes_and_closes_the_descriptor(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    recorder = Recorder(out)
    s = sink(out, recorder)
    fd = s.fd
    s.write(b"a\n", 1, "src", (ident(1), 2))
    s.close()
    assert out.read_bytes() == b"a\n" and recorder.reports == [[(ident(1), 2)]]
    with pytest.raises(OSError):
        os.fstat(fd)


def test_descriptor_3_the_first_after_the_standard_ones_is_closed(tmp_path: Path) -> None:
    """In edge-tail the output file is usually descriptor 3: only 0, 1 and 2 are the standard streams."""
    saved = os.dup(3)
    os.close(3)  # free the lowest descriptor after the standard ones, as in a fresh process
    try:
        s = sink(tmp_path / "out.log", Recorder())
        assert s.fd == 3
        s.close()
        with pytest.raises(OSError):
            os.fstat(3)
    finally:
        os.dup2(saved, 3)
        os.close(saved)


def test_stdout_is_written_but_never_closed() -> None:
    saved = os.dup(1)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 1)
    try:
        recorder = Recorder()
        s = FileSink("-", write_buf=1 << 20, flush_lines=1000, flush_interval_ms=1000, on_delivered=recorder)
        assert s.fd == 1
        s.write(b"to stdout\n", 1, "src", (ident(1), 10))
        s.close()
        os.write(1, b"still open\n")
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"to stdout\nstill open\n"
    assert recorder.reports == [[(ident(1), 10)]]


def test_a_closed_reader_is_one_clear_error(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that opening the output does not block
    s = sink(fifo, Recorder())
    os.close(reader)
    s.write(b"a\n", 1, "src", None)
    with pytest.raises(OutputError) as failure:
        s.flush()
    os.close(s.fd)
    assert str(failure.value) == "[Errno 32] the output was closed by its reader"


def test_a_failing_write_names_the_output(tmp_path: Path) -> None:
    recorder = Recorder()
    s = FileSink("/dev/full", write_buf=1 << 20, flush_lines=1000, flush_interval_ms=1000, on_delivered=recorder)
    s.write(b"a\n", 1, "src", (ident(1), 2))
    with pytest.raises(OutputError) as failure:
        s.flush()
    assert str(failure.value) == "[Errno 28] cannot write /dev/full: No space left on device"
    assert recorder.reports == []  # nothing was delivered
    os.close(s.fd)


def test_a_failing_stdout_write_names_stdout() -> None:
    saved = os.dup(1)
    full = os.open("/dev/full", os.O_WRONLY)
    os.dup2(full, 1)
    try:
        s = FileSink("-", write_buf=1 << 20, flush_lines=1000, flush_interval_ms=1000, on_delivered=Recorder())
        s.write(b"a\n", 1, "src", None)
        with pytest.raises(OutputError) as failure:
            s.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(full)
    assert str(failure.value) == "[Errno 28] cannot write stdout: No space left on device"


def test_an_output_that_cannot_be_opened_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError) as failure:
        open_output(str(tmp_path / "missing" / "out.log"))
    assert str(failure.value) == (f"[Errno 2] cannot open output {tmp_path / 'missing' / 'out.log'}: "
                                  "No such file or directory")


def test_open_output_creates_the_file_for_appending(tmp_path: Path) -> None:
    path = tmp_path / "new.log"
    umask = os.umask(0o022)
    try:
        fd = open_output(str(path))
    finally:
        os.umask(umask)
    try:
        os.write(fd, b"x")
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x"
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert open_output("-") == 1
