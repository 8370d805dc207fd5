"""Rate-limit windows shared by every worker process of one proxy instance.

"N/s" is per instance (docs/policies.md §4), so all workers spend from one window per policy.
The windows live in a shared-memory table (policy-id digest, window start, used) and
each `take()` holds an `flock` on a lock file for a few microseconds: once per policy
per batch, never per record. Window starts use CLOCK_MONOTONIC, which is system-wide.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import struct
import threading
import time
from multiprocessing import shared_memory

from edge.channels.snapshots import attach

_SLOT = struct.Struct("<16sdq")  # id digest, window start, used
SLOTS = 1024
SIZE = _SLOT.size * SLOTS


def create_table(name: str) -> shared_memory.SharedMemory:
    """Called by the supervisor: an all-zero table (an all-zero digest marks a free slot)."""
    segment = shared_memory.SharedMemory(name=name, create=True, size=SIZE)
    segment.buf[:SIZE] = bytes(SIZE)
    return segment


class SharedRateLimiter:
    def __init__(self, table_name: str, lock_path: str, clock=time.monotonic) -> None:
        self._segment = attach(table_name)
        self._lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._threads = threading.Lock()  # flock on one descriptor does not exclude this process's threads
        self._clock = clock

    def _slot(self, policy_id: str) -> tuple[int, bytes]:
        digest = hashlib.blake2b(policy_id.encode(), digest_size=16).digest()
        start = int.from_bytes(digest[:4], "little") % SLOTS
        buf = self._segment.buf
        for probe in range(SLOTS):
            offset = ((start + probe) % SLOTS) * _SLOT.size
            stored = bytes(buf[offset:offset + 16])
            if stored == digest or stored == bytes(16):
                return offset, digest
        raise RuntimeError("rate-limit table full")

    def load(self, policy_ids: set[str]) -> None:
        """First windows start now for policies the table has not seen yet."""
        now = self._clock()
        with self._locked():
            for pid in policy_ids:
                offset, digest = self._slot(pid)
                if bytes(self._segment.buf[offset:offset + 16]) != digest:
                    self._segment.buf[offset:offset + _SLOT.size] = _SLOT.pack(digest, now, 0)

    def take(self, policy_id: str, rate: int, window_s: float, count: int) -> int:
        now = self._clock()
        with self._locked():
            offset, digest = self._slot(policy_id)
            stored, start, used = _SLOT.unpack_from(self._segment.buf, offset)
            if stored != digest:
                start, used = now, 0
            if now - start >= window_s:
                start, used = now, 0
            granted = max(0, min(count, rate - used))
            self._segment.buf[offset:offset + _SLOT.size] = _SLOT.pack(digest, start, used + granted)
            return granted

    def _locked(self) -> _FileLock:
        return _FileLock(self._lock_fd, self._threads)

    def close(self) -> None:
        self._segment.close()
        os.close(self._lock_fd)


class _FileLock:
    """Excludes other processes (flock) and other threads of this one (a thread lock, taken first)."""

    def __init__(self, fd: int, threads: threading.Lock) -> None:
        self.fd = fd
        self.threads = threads

    def __enter__(self) -> None:
        self.threads.acquire()
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.threads.release()
