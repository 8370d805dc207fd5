"""NDJSON batches for the s3-dump extension: one open batch per (target, signal), a bounded queue of sealed ones.

A batch is sealed when it reaches `max_batch_bytes` or `max_batch_records`, or when it has
been open for the flush interval. Sealed batches wait in a queue of at most
`max_queued_batches`; when a new one would exceed that, the oldest is dropped (it has
waited longest, most likely behind a failing upload) and reported through `on_drop`, so
memory stays bounded whatever the object store does. Not thread-safe: the owner locks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Batch:
    target: str
    signal: str
    opened: float  # monotonic, for the flush interval
    opened_wall: float  # epoch seconds, for the object key's date path
    lines: list[bytes] = field(default_factory=list)
    size: int = 0
    attempts: int = 0  # failed uploads so far

    @property
    def records(self) -> int:
        return len(self.lines)

    def body(self) -> bytes:
        return b"".join(self.lines)


OnDrop = Callable[[Batch, str], None]


class Batcher:
    def __init__(self, max_bytes: int, max_records: int, max_queued: int, on_drop: OnDrop) -> None:
        self.max_bytes = max_bytes
        self.max_records = max_records
        self.max_queued = max_queued
        self.on_drop = on_drop
        self.open: dict[tuple[str, str], Batch] = {}
        self.ready: deque[Batch] = deque()

    def add(self, target: str, signal: str, lines: list[bytes], now: float) -> bool:
        """Append NDJSON lines; True when a batch was opened or sealed (the uploader may want to know)."""
        changed = False
        key = (target, signal)
        start = 0
        while start < len(lines):
            batch = self.open.get(key)
            if batch is None:
                batch = self.open[key] = Batch(target, signal, now, time.time())
                changed = True
            room = self.max_records - batch.records
            chunk = lines[start:start + room]
            size = sum(map(len, chunk))
            if batch.size + size > self.max_bytes:
                chunk, size = self._fit(chunk, self.max_bytes - batch.size)
                if not chunk and not batch.lines:  # one record larger than a batch: it goes alone
                    chunk, size = lines[start:start + 1], len(lines[start])
            if not chunk:  # not even one more line fits: seal and start a new batch
                self.seal(key)
                changed = True
                continue
            batch.lines.extend(chunk)
            batch.size += size
            start += len(chunk)
            if batch.records >= self.max_records or batch.size >= self.max_bytes:
                self.seal(key)
                changed = True
        return changed

    @staticmethod
    def _fit(chunk: list[bytes], room: int) -> tuple[list[bytes], int]:
        """The longest prefix of `chunk` within `room` bytes (only reached when a batch is about to fill)."""
        total = 0
        for i, line in enumerate(chunk):
            if total + len(line) > room:
                return chunk[:i], total
            total += len(line)
        return chunk, total

    def seal(self, key: tuple[str, str]) -> None:
        batch = self.open.pop(key, None)
        if batch is None or not batch.lines:
            return
        self.ready.append(batch)
        while len(self.ready) > self.max_queued:
            self.on_drop(self.ready.popleft(), "backlog_full")

    def seal_expired(self, now: float, interval: float) -> None:
        for key in [k for k, b in self.open.items() if now - b.opened >= interval]:
            self.seal(key)

    def seal_all(self) -> None:
        for key in list(self.open):
            self.seal(key)

    def next_deadline(self, interval: float) -> float | None:
        """When the oldest open batch is due (monotonic), None with nothing open."""
        if not self.open:
            return None
        return min(b.opened for b in self.open.values()) + interval

    def pop(self) -> Batch | None:
        return self.ready.popleft() if self.ready else None

    def requeue(self, batch: Batch) -> None:
        """A batch whose upload failed goes back to the front (it is the oldest)."""
        self.ready.appendleft(batch)
        while len(self.ready) > self.max_queued:
            self.on_drop(self.ready.popleft(), "backlog_full")

    def take_all(self) -> list[Batch]:
        """Everything not yet uploaded (at shutdown, to count what is given up)."""
        self.seal_all()
        batches = list(self.ready)
        self.ready.clear()
        return batches
