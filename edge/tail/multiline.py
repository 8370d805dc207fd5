"""Multi-line records: continuation lines joined to the line that starts their record.

A stack trace or a pretty-printed message spans several lines, but it is one event: with
`--multiline-start REGEX` a line the pattern matches (RE2, searched anywhere in the line,
so anchor it with `^`) starts a record, and every following line it does not match joins
that record. A record is emitted once the next one starts, or `--multiline-timeout-ms`
after its last line when no next one comes (a writer that stopped after a stack trace);
at the end of stdin and when a rotated file is abandoned, at once. A line that is not a
start with nothing before it (the first lines of a file read from the middle) begins a
record of its own. The joined record keeps its line breaks, is parsed by `--format` as one
record, and is cut to `--max-line` bytes as a whole.

Checkpoints stay behind the record that is still being joined: a block's position is the
end of its last emitted record, so a restart reads a pending record again from its first
line rather than from the middle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import re2

from edge.tail.block import Block

_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # the error is reported once, in our own words


class MultilineError(ValueError):
    """A start pattern RE2 does not accept (one line for the operator)."""


@dataclass(frozen=True, slots=True)
class Multiline:
    """The compiled start pattern and the flush timeout, shared by the joiners of every file."""

    pattern: str
    timeout_s: float
    program: Any  # the compiled RE2

    @classmethod
    def compile(cls, pattern: str, timeout_ms: int) -> Multiline:
        try:
            compiled = re2.compile(pattern, _OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise MultilineError(f"--multiline-start: RE2 does not accept {pattern!r}: {reason}") from None
        return cls(pattern, timeout_ms / 1000, compiled)

    def joiner(self, max_line: int) -> RecordJoiner:
        return RecordJoiner(self, max_line)


class RecordJoiner:
    """Joins the lines of one stream (a file or stdin) into records; see the module doc."""

    def __init__(self, multiline: Multiline, max_line: int) -> None:
        self.match = multiline.program._regexp.Match
        self.timeout_s = multiline.timeout_s
        self.max_line = max_line
        self.offset = 0  # stream offset where the next block starts
        self.lines: list[bytes] = []  # the pending record
        self.size = 0  # its bytes so far, line breaks included
        self.end = 0  # stream offset just after its last line
        self.last_at = 0.0  # monotonic time its last line came

    def start_at(self, offset: int) -> None:
        """Where the stream is read from (a resumed file starts at its checkpoint)."""
        self.offset = self.end = offset

    def feed(self, block: Block) -> list[Block]:
        """The records `block` completes, as one block of records (or a bare position); the rest is held."""
        start, self.offset = self.offset, block.end_offset
        if not block.data:
            if self.lines:
                self.end = block.end_offset  # the rest of a cut line belongs to the pending record
                return []
            return [block]
        done: list[bytes] = []
        done_end = -1
        lines = block.data.split(b"\n")
        lines.pop()
        for line, end in zip(lines, _line_ends(lines, start, block.end_offset), strict=True):
            if self.lines and self.match(_UNANCHORED, line, 0, len(line))[0][0] >= 0:
                done.append(self._take())
                done_end = self.end
            self._add(line, end)
        self.last_at = time.monotonic()
        return [_records_block(done, done_end)] if done else []

    def feed_all(self, blocks: list[Block]) -> list[Block]:
        return [out for block in blocks for out in self.feed(block)]

    def finish(self, last: Block | None) -> list[Block]:
        """The rest of a stream that ends (stdin's EOF, an abandoned file): the records its partial
        last line completes (`last`, from the line cutter), then the pending record."""
        blocks = self.feed(last) if last is not None else []
        pending = self.take_pending()
        return blocks + [pending] if pending is not None else blocks

    def deadline(self) -> float | None:
        return self.last_at + self.timeout_s if self.lines else None

    def expired(self, now: float) -> Block | None:
        """The pending record once its timeout has passed, else None."""
        if self.lines and now >= self.last_at + self.timeout_s:
            return self.take_pending()
        return None

    def take_pending(self) -> Block | None:
        """The pending record, at once (its stream ends or its file is abandoned)."""
        if not self.lines:
            return None
        return _records_block([self._take()], self.end)

    def reset(self, offset: int = 0) -> None:
        """Forget the pending record: its file is read again from `offset`."""
        self.lines, self.size = [], 0
        self.start_at(offset)

    def _add(self, line: bytes, end: int) -> None:
        if self.size <= self.max_line:  # past --max-line the record is cut anyway: hold no more of it
            self.lines.append(line)
            self.size += len(line) + (len(self.lines) > 1)
        self.end = end

    def _take(self) -> bytes:
        record = self.lines[0] if len(self.lines) == 1 else b"\n".join(self.lines)
        self.lines, self.size = [], 0
        return record[:self.max_line]


def _line_ends(lines: list[bytes], start: int, end: int) -> list[int]:
    """The stream offset after each line of a block that began at `start` and ends at `end`.

    The lines of a block are the bytes of the stream unless the reader cut an over-long
    partial line (then the block is that one line, and it ends where the block ends).
    """
    ends: list[int] = []
    at = start
    for line in lines:
        at += len(line) + 1
        ends.append(at)
    ends[-1] = end
    return ends


def _records_block(records: list[bytes], end: int) -> Block:
    return Block(b"\n".join(records) + b"\n", end, records)
