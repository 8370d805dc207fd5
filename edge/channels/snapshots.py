"""Publish compiled snapshots through shared memory; workers map the newest generation.

Layout: one small *control* segment holds `generation:u64 | length:u64 | name:64 bytes`
(the name of the data segment); each snapshot lives in its own *data* segment. The
supervisor writes the data segment completely, then the name and length, then the
generation, so a reader that sees a generation also sees its name. Readers compare
the generation (one 8-byte read, ~45 ns) on every request and reload only when it
moved: copy the bytes out, verify the generation did not move meanwhile, done. No
locks on the request path. The publisher keeps the previous data segment alive for a
grace period so a reader that is just copying it is not cut off, then unlinks it.
"""

from __future__ import annotations

import os
import re
import struct
import threading
import time
from multiprocessing import resource_tracker, shared_memory

from edge.policy.snapshot import Snapshot

_HEADER = struct.Struct("<QQ64s")
_SHM_DIR = "/dev/shm"
_OWNED = re.compile(r"^edge-(\d+)-")
_TRACKER_LOCK = threading.Lock()
CONTROL_SIZE = _HEADER.size


def attach(name: str) -> shared_memory.SharedMemory:
    """Attach without adopting the segment: only the supervisor may ever unlink it.

    On Python 3.11 attaching registers the segment with the caller's resource tracker,
    which would unlink it when the worker exits, and merely registering starts a tracker
    process (~12 MB) per worker. Registration is suppressed for the duration of the call.
    """
    with _TRACKER_LOCK:
        register = resource_tracker.register
        resource_tracker.register = _ignore  # type: ignore[assignment]
        try:
            return shared_memory.SharedMemory(name=name)
        finally:
            resource_tracker.register = register  # type: ignore[assignment]


def _ignore(name: str, rtype: str) -> None:
    """Stands in for resource_tracker.register while attaching."""


class SnapshotPublisher:
    """Owned by the supervisor: creates the control segment and one data segment per snapshot."""

    def __init__(self, prefix: str, keep_seconds: float = 5.0) -> None:
        self.prefix = prefix
        self.keep_seconds = keep_seconds
        self.generation = 0
        self.control = shared_memory.SharedMemory(name=f"{prefix}-ctl", create=True, size=CONTROL_SIZE)
        self.control.buf[:CONTROL_SIZE] = _HEADER.pack(0, 0, b"")
        self._live: list[tuple[shared_memory.SharedMemory, float]] = []  # (segment, retired at)

    @property
    def control_name(self) -> str:
        return self.control.name

    def publish(self, snapshot: Snapshot) -> int:
        """Write the snapshot to a new segment and make it current; returns its generation."""
        data = snapshot.to_bytes()
        generation = self.generation + 1
        segment = shared_memory.SharedMemory(name=f"{self.prefix}-g{generation}", create=True,
                                             size=max(1, len(data)))
        segment.buf[:len(data)] = data
        name = segment.name.encode()
        self.control.buf[8:CONTROL_SIZE] = _HEADER.pack(0, len(data), name)[8:]
        self.control.buf[:8] = struct.pack("<Q", generation)
        self.generation = generation
        now = time.monotonic()
        self._live = [(seg, retired or now) for seg, retired in self._live] + [(segment, 0.0)]
        self._release(now)
        return generation

    def _release(self, now: float) -> None:
        """Unlink retired segments once the grace period has passed."""
        keep = []
        for segment, retired in self._live:
            if retired and now - retired >= self.keep_seconds:
                segment.close()
                segment.unlink()
            else:
                keep.append((segment, retired))
        self._live = keep

    def tick(self) -> None:
        self._release(time.monotonic())

    def close(self) -> None:
        """Unlink everything (supervisor shutdown): no segment outlives the proxy."""
        for segment, _ in self._live:
            segment.close()
            segment.unlink()
        self._live = []
        self.control.close()
        self.control.unlink()


class SnapshotReader:
    """Used by each worker: `current()` returns the newest snapshot (None before the first)."""

    def __init__(self, control_name: str) -> None:
        self._control = attach(control_name)
        self._generation_view = self._control.buf[:8].cast("Q")
        self.generation = 0
        self.snapshot: Snapshot | None = None

    def current(self) -> Snapshot | None:
        generation = self._generation_view[0]
        if generation != self.generation:
            self._load(generation)
        return self.snapshot

    def _load(self, generation: int) -> None:
        for _ in range(5):
            _, length, raw_name = _HEADER.unpack(bytes(self._control.buf[:CONTROL_SIZE]))
            name = raw_name.rstrip(b"\0").decode()
            try:
                segment = attach(name)
            except FileNotFoundError:
                generation = self._generation_view[0]
                continue
            try:
                data = bytes(segment.buf[:length])
            finally:
                segment.close()
            if self._generation_view[0] != generation:
                generation = self._generation_view[0]
                continue
            self.snapshot = Snapshot.from_bytes(data)
            self.generation = generation
            return

    def close(self) -> None:
        self._generation_view.release()
        self._control.close()


def remove_stale_segments() -> list[str]:
    """Unlink `edge-<pid>-*` segments whose supervisor no longer exists.

    A supervisor killed with SIGKILL together with its resource tracker (a whole
    process group, as container runtimes and test harnesses do) cannot clean up after
    itself; the next one to start does.
    """
    removed = []
    try:
        names = os.listdir(_SHM_DIR)
    except OSError:
        return removed
    for name in names:
        m = _OWNED.match(name)
        if m is None or _alive(int(m.group(1))):
            continue
        try:
            os.unlink(os.path.join(_SHM_DIR, name))
            removed.append(name)
        except OSError:
            pass
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
