"""One tailed file: an open descriptor, how far it has been read, and its identity.

Reads are `pread`s of `read_buf` bytes at an explicit offset, cut at the last newline:
what comes back is a block of complete lines (the unit the policy engine evaluates) and
the partial last line is held until its newline arrives. A line longer than `max_line`
is cut to its first `max_line` bytes and the rest of it skipped.

A file is identified by (device, inode) plus a fingerprint of its first bytes
(`edge.tail.checkpoint`), which is what tells a truncated or rewritten file (start
again at 0) from one that merely grew.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

from edge.tail.block import Block
from edge.tail.checkpoint import FINGERPRINT_BYTES, FileIdentity, fingerprint

if TYPE_CHECKING:
    from edge.tail.multiline import RecordJoiner

FileKey = tuple[int, int]  # (device, inode)


def display(path: str) -> str:
    """`path` as valid UTF-8 text, for log lines and telemetry.

    A file name that is not UTF-8 comes from the file system with its undecodable bytes as
    lone surrogates, which no log line, JSON or protobuf string can carry: they are shown as
    U+FFFD. The name itself stays as it is for everything that opens or stats the file.
    """
    try:
        path.encode()
        return path
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISDIR, "directory"), (stat.S_ISSOCK, "socket"),
          (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"))


def file_kind(mode: int) -> str:
    """What a path that is not a regular file is, in words for a log line."""
    return next((name for test, name in _KINDS if test(mode)), "special file")


def identity_of(fd: int, st: os.stat_result) -> FileIdentity:
    head = os.pread(fd, FINGERPRINT_BYTES, 0)
    return FileIdentity(st.st_dev, st.st_ino, fingerprint(head), len(head))


class LineCutter:
    """Cuts a byte stream into blocks of complete lines, holding the partial last line.

    A line longer than `max_line` bytes is cut to its first `max_line` bytes (as Tero's
    edge-tail does) and the rest of it is skipped up to its newline; the cut line is then
    evaluated and delivered like any other. Without `cut_lines` only a partial line that
    outgrows `max_line` is cut: complete lines stay whole for the multi-line joiner, which
    cuts the record they make and needs their true lengths for its positions.
    """

    def __init__(self, max_line: int, cut_lines: bool = True) -> None:
        self.max_line = max_line
        self.cut_lines = cut_lines
        self.pending = b""  # the partial last line read so far
        self.in_long_line = False  # skipping the rest of an over-long line until its newline

    def feed(self, data: bytes, end_offset: int) -> list[Block]:
        """Blocks ready for delivery from `data` (which ends at stream offset `end_offset`)."""
        blocks: list[Block] = []
        if self.in_long_line:
            data = self._skip_rest(data, end_offset, blocks)
            if not data:
                return blocks
        buf = self.pending + data if self.pending else data
        cut = buf.rfind(b"\n") + 1
        self.pending = buf[cut:]
        if cut:
            lines = self._truncated(buf[:cut]) if self.cut_lines else buf[:cut]
            blocks.append(Block(lines, end_offset - len(self.pending)))
        if len(self.pending) > self.max_line:
            blocks.append(Block(self.pending[:self.max_line] + b"\n", end_offset))
            self.pending = b""
            self.in_long_line = True
        return blocks

    def _truncated(self, block: bytes) -> bytes:
        """`block` with every line cut to `max_line` bytes (the common case returns it untouched)."""
        if len(block) <= self.max_line + 1:
            return block
        lines = block.split(b"\n")
        if max(map(len, lines)) <= self.max_line:
            return block
        return b"\n".join([line[:self.max_line] for line in lines])

    def _skip_rest(self, data: bytes, end_offset: int, blocks: list[Block]) -> bytes:
        """Skip the rest of an over-long line (its position still advances); return what follows its newline."""
        newline = data.find(b"\n")
        if newline < 0:
            blocks.append(Block(b"", end_offset))
            return b""
        self.in_long_line = False
        rest = data[newline + 1:]
        blocks.append(Block(b"", end_offset - len(rest)))
        return rest

    def take_partial(self, end_offset: int) -> Block | None:
        """The held partial line completed with a newline: its stream is ending (stdin EOF, abandoned file)."""
        if not self.pending and not self.in_long_line:
            return None
        data = self.pending[:self.max_line] + b"\n" if self.pending else b""
        self.reset()
        return Block(data, end_offset)

    def reset(self) -> None:
        self.pending = b""
        self.in_long_line = False


class TailedFile:
    """An open file being tailed; `read` returns what is new since the last call."""

    def __init__(self, path: str, fd: int, st: os.stat_result, offset: int, max_line: int,
                 joiner: RecordJoiner | None = None) -> None:
        self.path = path
        self.fd = fd
        self.key: FileKey = (st.st_dev, st.st_ino)
        self.identity = identity_of(fd, st)
        self.offset = offset  # next byte to read
        self.cutter = LineCutter(max_line, cut_lines=joiner is None)
        self.joiner = joiner  # joins multi-line records (--multiline-start)
        self.orphan: tuple[FileIdentity, Block] | None = None  # see take_orphan
        self.detached_at: float | None = None  # monotonic time its path stopped naming this file
        self.size_seen = st.st_size
        self.at_eof = False  # the last read found nothing new

    @classmethod
    def open(cls, path: str, max_line: int, joiner: RecordJoiner | None = None) -> TailedFile:
        """Open `path` at offset 0; OSError when it cannot be read or is not a regular file.

        O_NONBLOCK: the path was a regular file when discovery looked, but a FIFO renamed into
        its place since would block a plain open until a writer comes, and the tailer with it.
        (On a regular file the flag changes nothing.)
        """
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise IsADirectoryError(21, f"not a regular file but a {file_kind(st.st_mode)}", path)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, st, 0, max_line, joiner)

    @property
    def name(self) -> str:
        """The path as text for logs and telemetry (see `display`)."""
        return display(self.path)

    def head(self) -> bytes:
        """The first bytes of the file, as far as a fingerprint covers them."""
        return os.pread(self.fd, FINGERPRINT_BYTES, 0)

    # ── reading ──

    def start_at(self, offset: int) -> None:
        """Read from `offset` on (a checkpoint, or the end for --read-from tail)."""
        self.offset = offset
        if self.joiner is not None:
            self.joiner.start_at(offset)

    def read(self, size: int) -> list[Block] | None:
        """One `pread` of up to `size` bytes as blocks ready for delivery (maybe none); None at end of file."""
        data = os.pread(self.fd, size, self.offset)
        self.at_eof = not data
        if not data:
            return None
        self.offset += len(data)
        self.size_seen = max(self.size_seen, self.offset)
        blocks = self.cutter.feed(data, self.offset)
        return blocks if self.joiner is None else self.joiner.feed_all(blocks)

    def take_partial(self) -> Block | None:
        return self.cutter.take_partial(self.offset)

    def take_rest(self) -> list[Block]:
        """Everything held back, at once: the file is abandoned (rotated or removed, and drained)."""
        last = self.take_partial()
        if self.joiner is None:
            return [last] if last is not None else []
        return self.joiner.finish(last)

    def expired(self, now: float) -> Block | None:
        """A multi-line record whose flush timeout has passed."""
        return self.joiner.expired(now) if self.joiner is not None else None

    def deadline(self) -> float | None:
        """When a held multi-line record is due (None: nothing held)."""
        return self.joiner.deadline() if self.joiner is not None else None

    # ── changes to the file itself ──

    def restart_if_replaced(self) -> str:
        """Detect copytruncate (size below our offset) or a rewritten head; restart at 0 if so.

        Returns "" when nothing happened, else the reason. While the file is shorter than
        FINGERPRINT_BYTES the identity's fingerprint grows with it.
        """
        st = os.fstat(self.fd)
        self.size_seen = st.st_size
        reason = ""
        if st.st_size < self.offset:
            reason = f"truncated to {st.st_size} bytes below offset {self.offset}"
        else:
            covered = self.identity.fingerprint_len
            head = os.pread(self.fd, FINGERPRINT_BYTES if covered < FINGERPRINT_BYTES else covered, 0)
            if len(head) < covered or fingerprint(head[:covered]) != self.identity.fingerprint:
                reason = "its first bytes were rewritten"
            elif len(head) > covered:
                self.identity = FileIdentity(st.st_dev, st.st_ino, fingerprint(head), len(head))
        if reason:
            if self.joiner is not None:
                pending = self.joiner.take_pending()
                self.orphan = (self.identity, pending) if pending is not None else None
                self.joiner.reset()
            self.identity = identity_of(self.fd, st)
            self.offset = 0
            self.cutter.reset()
        return reason

    def take_orphan(self) -> tuple[FileIdentity, Block] | None:
        """The multi-line record that was being joined when the file was replaced, with the identity it
        was read under: its lines were complete, so it is delivered rather than lost with the old content."""
        orphan, self.orphan = self.orphan, None
        return orphan

    def has_unread(self) -> bool:
        return self.size_seen > self.offset

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
