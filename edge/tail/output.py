"""Where kept lines go, and when they count as delivered.

A sink takes blocks of kept lines together with the file position they reach, and
reports positions back (`on_delivered`) only once the lines before them are delivered:
for a file or stdout that is when the buffered bytes have been written to the
descriptor. The tailer turns those reports into checkpoints, so a checkpoint never gets
ahead of the output (at-least-once).

`FileSink` buffers up to `write_buf` bytes or `flush_lines` lines and at most
`flush_interval_ms`, then writes everything with one `os.write` loop.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from typing import Protocol

from edge.tail.checkpoint import FileIdentity

Position = tuple[FileIdentity, int]  # everything before this offset of this file is in the sink
Delivered = Callable[[list[Position]], None]


class OutputError(OSError):
    """The output cannot be opened or written (one line for the operator)."""


class Sink(Protocol):
    def write(self, data: bytes, lines: int, source: str, position: Position | None,
              records: list[bytes] | None = None) -> None:
        """Take kept lines (`records`: the multi-line records `data` joins) and the position they reach."""

    def resume(self, position: Position, ahead: int) -> None:
        """A file is read from `position`; `ahead`: its urgent records after it already delivered."""

    def flush(self) -> None: ...

    def deadline(self) -> float | None: ...

    def ready(self) -> bool: ...

    def close(self) -> None: ...


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class FileSink:
    """Appends kept lines to a file, or writes them to stdout (`path` "-")."""

    def __init__(self, path: str, *, write_buf: int, flush_lines: int, flush_interval_ms: int,
                 on_delivered: Delivered) -> None:
        self.path = path
        self.fd = open_output(path)
        self.write_buf = write_buf
        self.flush_lines = flush_lines
        self.interval = flush_interval_ms / 1000
        self.on_delivered = on_delivered
        self.buffer: list[bytes] = []
        self.size = 0
        self.lines = 0
        self.positions: dict[tuple[int, int], Position] = {}
        self.first_at: float | None = None
        st = os.fstat(self.fd)
        self.file_key = (st.st_dev, st.st_ino)  # never tail our own output (a glob may match it)

    def write(self, data: bytes, lines: int, source: str, position: Position | None,
              records: list[bytes] | None = None) -> None:
        """The bytes go out as they are: a multi-line record keeps its line breaks."""
        if data:
            self.buffer.append(data)
            self.size += len(data)
            self.lines += lines
        if position is not None:
            identity = position[0]
            self.positions[identity.key] = position
        if self.first_at is None and (data or position is not None):
            self.first_at = time.monotonic()
        if self.size >= self.write_buf or self.lines >= self.flush_lines:
            self.flush()

    def resume(self, position: Position, ahead: int) -> None:
        """Nothing to do: every line goes out in file order, so no checkpoint this sink writes has
        records delivered ahead of it (a count left by forwarding means lines written twice at worst)."""

    def deadline(self) -> float | None:
        """When the buffered lines must be flushed (None: nothing buffered)."""
        return None if self.first_at is None else self.first_at + self.interval

    def ready(self) -> bool:
        return True  # a slow output blocks in write(): that is its backpressure

    def flush(self) -> None:
        if self.buffer:
            data = self.buffer[0] if len(self.buffer) == 1 else b"".join(self.buffer)
            self.buffer = []
            try:
                write_all(self.fd, data)
            except OSError as exc:
                if exc.errno == errno.EPIPE:
                    raise OutputError(errno.EPIPE, "the output was closed by its reader") from None
                raise OutputError(exc.errno, f"cannot write {self._name}: {exc.strerror}") from None
        self.size = self.lines = 0
        self.first_at = None
        if self.positions:
            positions = list(self.positions.values())
            self.positions = {}
            self.on_delivered(positions)

    @property
    def _name(self) -> str:
        return "stdout" if self.path == "-" else self.path

    def close(self) -> None:
        try:
            self.flush()
        finally:
            if self.fd > 2:
                os.close(self.fd)
            self.fd = -1


def open_output(path: str) -> int:
    """The descriptor to write to: stdout for "-", else the file opened for appending (created if needed)."""
    if path == "-":
        return 1
    try:
        return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise OutputError(exc.errno, f"cannot open output {path}: {exc.strerror}") from None
