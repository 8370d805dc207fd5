"""The sampler's write-ahead log: spans acknowledged to a sender survive a crash of the sampler or of edge.

`FileWal` keeps segment files (`<id>.wal`, rotated at `segment_bytes`) in its directory and
writes the records of `wal_format` to the newest one: the fragments of one submission as one
record with one `write()`, then a trace's decision, then the ids of traces that need nothing
more. Replaying the segments in order gives back every trace whose fragments were written and
that was not marked done, with its decision if it had one.

Durability (`tail_sampling.wal_fsync`) and what each choice can lose. Whatever the mode, a
written record is in the kernel's page cache when `append` returns, so a crash of the sampler
or of all of edge (SIGKILL, OOM kill) loses nothing acknowledged:

- `always`: `fdatasync` before `append` returns. A power loss or kernel crash loses nothing
  acknowledged either; each submission waits for the disk.
- `interval` (the default): a background thread syncs at most every `fsync_interval` (100 ms
  by default) after something was written. A power loss or kernel crash can lose what was
  acknowledged during the last interval.
- `never`: the kernel writes back when it pleases (typically within 30 s). A power loss or
  kernel crash can lose that much.

Decisions and done marks are never synced on their own: losing one only means the trace is
decided again or exported again after a restart (a duplicate, never a loss).

Space: a segment whose traces are all done is deleted once it is the oldest (deleting only the
oldest keeps every done mark behind the fragments it cancels). The oldest segment's live
traces' fragments (and decisions) are rewritten into a new newest segment, and the oldest
deleted, in two cases: stragglers, when it holds little that is live (`REWRITE_FRACTION` of
it) while more than `BLOCKED_SEGMENTS` segments' worth of garbage waits behind it (traces done
in order never wait for this); and garbage, when the log spans more than
`GARBAGE_FREE_SEGMENTS` segments and less than half of it is live. The new segment's first
record says which segment it supersedes; it is written whole under a temporary name and
renamed into place, so a crash leaves either the old segment alone or both, and opening the
log deletes what a complete rewrite superseded: no trace is lost or replayed twice. So disk
use stays within about twice what is live (and at least a few segments), whatever the oldest
straggler, and a byte is rewritten about once on average at worst. `append` raises `WalFull`
when its record would take the log past `max_bytes`; a rewrite may pass it briefly by at most
the live part of one segment.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from edge.logs import RateLimitedLog
from edge.tailsampling import wal_format as fmt
from edge.tailsampling.interfaces import Replayed, ReplayedTrace, TraceFragment, TraceId, WalFull

log = logging.getLogger("edge.tailsampling.wal")
_failures = RateLimitedLog(log)

FSYNC_MODES = ("interval", "always", "never")
SEGMENT_BYTES = 4 << 20
REWRITE_FRACTION = 0.125
BLOCKED_SEGMENTS = 2
GARBAGE_FREE_SEGMENTS = 4  # below this many segments' worth of bytes, garbage is left to the deletions
LOCK_WAIT_S = 5.0  # a previous sampler still exiting releases the directory within this
SUFFIX = ".wal"
PARTIAL = ".tmp"  # a rewritten segment until it is complete
_SEGMENT_HEADER_BYTES = len(fmt.encode_segment(0, 0))

Position = tuple[int, int]  # (segment id, offset): the order records were written in


@dataclass(slots=True)
class _Segment:
    id: int
    path: str
    size: int
    live_bytes: int = 0  # bytes of records that traces not yet done still need


@dataclass(slots=True)
class _Trace:
    since: Position  # its first fragment after its last done mark: older fragments of the same id are dead
    arrived: float
    sampled: bool | None = None
    bytes_in: dict[int, int] = field(default_factory=dict)  # segment id -> bytes of its records there


class WalLocked(RuntimeError):
    """Another process holds the log's directory (a previous sampler that has not exited)."""


def _lock_directory(directory: str) -> int:
    """An exclusive lock on the directory, held until the fd is closed (or the process dies)."""
    fd = os.open(os.path.join(directory, "LOCK"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise WalLocked(f"the write-ahead log in {directory} is in use by another process") from None
            time.sleep(0.05)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FileWal:
    """A `WriteAheadLog` in segment files (see the module doc). Thread-safe; one process per directory."""

    def __init__(self, directory: str, *, fsync: str = "interval", fsync_interval: float = 0.1,
                 max_bytes: int = 1 << 30, segment_bytes: int = SEGMENT_BYTES) -> None:
        if fsync not in FSYNC_MODES:
            raise ValueError(f"wal fsync must be one of {', '.join(FSYNC_MODES)}, not {fsync!r}")
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.fsync = fsync
        self.fsync_interval = fsync_interval
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.corrupt_records = 0  # damaged records skipped while opening
        self.truncated_bytes = 0  # torn tails cut off while opening
        self._lock = threading.Lock()
        self._lock_fd = _lock_directory(directory)
        self._segments: dict[int, _Segment] = {}  # by id, oldest first
        self._traces: dict[TraceId, _Trace] = {}
        self._live_bytes = 0
        self._bytes_used = 0
        self._recovered: dict[TraceId, list[bytes]] | None = {}
        self._fd = -1
        self._retired: list[int] = []  # fds of rotated segments, still to be synced and closed
        self._dirty = False  # the newest segment has writes not yet synced
        self._dir_dirty = False  # segment files were created or deleted since the last sync
        self._wake = threading.Event()
        self._closing = threading.Event()
        self._closed = False
        self._load()
        self._rotate()
        self._reclaim()
        self._syncer: threading.Thread | None = None
        if fsync == "interval":
            self._syncer = threading.Thread(target=self._sync_loop, name="edge-wal-sync", daemon=True)
            self._syncer.start()

    # ── the WriteAheadLog interface ──

    @property
    def bytes_used(self) -> int:
        return self._bytes_used

    def append(self, fragments: Sequence[TraceFragment], arrived: float) -> None:
        if not fragments:
            return
        record = fmt.encode_fragments(fragments, arrived)
        with self._lock:
            if self._bytes_used + len(record) > self.max_bytes:
                raise WalFull(f"the write-ahead log holds {self._bytes_used} of {self.max_bytes} bytes")
            position = self._write(record)
            self._add_fragments(position, arrived, fmt.fragment_sizes(fragments))
            if self.fsync == "always":
                os.fdatasync(self._fd)
                self._dirty = False
            self._reclaim()  # a rotation may have left a dead segment behind

    def decided(self, trace_id: TraceId, sampled: bool) -> None:
        with self._lock:
            trace = self._traces.get(trace_id)
            if trace is None or trace.sampled is sampled:
                return
            record = fmt.encode_decided(trace_id, sampled)
            self._charge(trace, self._write(record)[0], len(record))
            trace.sampled = sampled

    def done(self, trace_ids: Sequence[TraceId]) -> None:
        with self._lock:
            live = [t for t in dict.fromkeys(trace_ids) if t in self._traces]
            if not live:
                return
            self._write(fmt.encode_done(live))
            for trace_id in live:
                self._forget(trace_id)
            self._reclaim()

    def replay(self) -> Replayed:
        """What the previous run left, as read when the log was opened; call it once, before appending."""
        with self._lock:
            recovered, self._recovered = self._recovered or {}, None
            replayed = Replayed([], [], [])
            buckets = {None: replayed.undecided, True: replayed.to_export, False: replayed.to_rollup}
            for trace_id, payloads in recovered.items():
                trace = self._traces.get(trace_id)
                if trace is not None:
                    buckets[trace.sampled].append(ReplayedTrace(trace_id, trace.arrived, payloads))
        for bucket in replayed:
            bucket.sort(key=lambda t: t.arrived)
        return replayed

    def close(self) -> None:
        """Sync what was written (unless fsync is `never`) and release the directory."""
        if self._closed:
            return
        self._closed = True
        self._closing.set()
        self._wake.set()
        if self._syncer is not None:
            self._syncer.join()
        with self._lock:
            fds, self._retired = [*self._retired, self._fd], []
            self._fd = -1
        self._sync_and_close(fds, sync=self.fsync != "never")
        if self.fsync != "never":
            _fsync_directory(self.directory)
        os.close(self._lock_fd)

    # ── writing (callers hold the lock) ──

    def _newest(self) -> _Segment:
        return next(reversed(self._segments.values()))

    def _next_id(self) -> int:
        return self._newest().id + 1 if self._segments else 1

    def _path(self, segment_id: int) -> str:
        return os.path.join(self.directory, f"{segment_id:016x}{SUFFIX}")

    def _write(self, record: bytes) -> Position:
        segment = self._newest()
        if segment.size + len(record) > self.segment_bytes and segment.size > _SEGMENT_HEADER_BYTES:
            self._rotate()
            segment = self._newest()
        position = (segment.id, segment.size)
        _write_all(self._fd, record)
        segment.size += len(record)
        self._bytes_used += len(record)
        if self.fsync == "interval" and not self._dirty:
            self._dirty = True
            self._wake.set()
        return position

    def _rotate(self) -> None:
        """Start a new newest segment; the old one's fd is synced and closed per the fsync mode."""
        segment_id = self._next_id()
        path = self._path(segment_id)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
        header = fmt.encode_segment(segment_id, 0)
        _write_all(fd, header)
        self._adopt(_Segment(segment_id, path, len(header)), fd)

    def _adopt(self, segment: _Segment, fd: int) -> None:
        """Make a just-written segment file the newest, the one appends go to."""
        if self._fd >= 0:
            self._retire(self._fd)
        self._fd = fd
        self._segments[segment.id] = segment
        self._bytes_used += segment.size
        self._dir_dirty = True
        if self.fsync == "always":
            os.fdatasync(fd)
            _fsync_directory(self.directory)
            self._dir_dirty = False
        elif self.fsync == "interval":
            self._dirty = True
            self._wake.set()

    def _retire(self, fd: int) -> None:
        if self.fsync == "interval":
            self._retired.append(fd)
            return
        if self.fsync == "always":
            os.fdatasync(fd)  # decisions and done marks written since the last append
        os.close(fd)

    # ── what is live where ──

    def _add_fragments(self, position: Position, arrived: float, sizes: list[tuple[TraceId, int]]) -> None:
        for trace_id, size in sizes:
            trace = self._traces.get(trace_id)
            if trace is None:
                trace = self._traces[trace_id] = _Trace(position, arrived)
            elif arrived < trace.arrived:
                trace.arrived = arrived
            self._charge(trace, position[0], size)

    def _charge(self, trace: _Trace, segment_id: int, size: int) -> None:
        """Count `size` bytes of a segment as live until the trace is done (or they are rewritten)."""
        trace.bytes_in[segment_id] = trace.bytes_in.get(segment_id, 0) + size
        self._segments[segment_id].live_bytes += size
        self._live_bytes += size

    def _discharge(self, trace: _Trace, segment_id: int) -> None:
        size = trace.bytes_in.pop(segment_id, 0)
        self._segments[segment_id].live_bytes -= size
        self._live_bytes -= size

    def _forget(self, trace_id: TraceId) -> None:
        trace = self._traces.pop(trace_id)
        for segment_id in list(trace.bytes_in):
            self._discharge(trace, segment_id)

    # ── reclaiming space ──

    def _reclaim(self) -> None:
        """Delete or rewrite the oldest segments while that frees space (see the module doc).

        Only segments older than the newest one at the start are candidates, so a rewrite never
        works on its own output."""
        newest = self._newest().id
        while len(self._segments) > 1:
            oldest = next(iter(self._segments.values()))
            if oldest.id >= newest:
                return
            if oldest.live_bytes <= 0:
                self._delete(oldest)
            elif self._straggling(oldest) or self._mostly_garbage():
                self._rewrite(oldest)
            else:
                return

    def _straggling(self, oldest: _Segment) -> bool:
        """A few live traces in the oldest segment keep garbage behind it from being deleted."""
        garbage = self._bytes_used - self._live_bytes
        return oldest.live_bytes <= oldest.size * REWRITE_FRACTION and garbage > BLOCKED_SEGMENTS * self.segment_bytes

    def _mostly_garbage(self) -> bool:
        return (self._bytes_used > GARBAGE_FREE_SEGMENTS * self.segment_bytes
                and self._live_bytes * 2 < self._bytes_used)

    def _delete(self, segment: _Segment) -> None:
        os.unlink(segment.path)
        del self._segments[segment.id]
        self._bytes_used -= segment.size
        self._dir_dirty = True

    def _rewrite(self, oldest: _Segment) -> None:
        """Copy what the oldest segment holds for live traces (fragments, and the decisions of every
        trace with a record there) into a new newest segment, then delete it."""
        touched = {t: trace for t, trace in self._traces.items() if oldest.id in trace.bytes_in}
        with open(oldest.path, "rb") as f:
            scanned = fmt.scan(f.read())
        segment_id = self._next_id()
        records = [fmt.encode_segment(segment_id, oldest.id)]
        offset = len(records[0])
        added: list[tuple[Position, float, list[tuple[TraceId, int]]]] = []
        for record in scanned.records:
            if record.kind is not fmt.Kind.FRAGMENTS:
                continue
            position = (oldest.id, record.offset)
            arrived, fragments = fmt.decode_fragments(record.body)
            live = [f for f in fragments if f.trace_id in touched and position >= touched[f.trace_id].since]
            if live:
                records.append(fmt.encode_fragments(live, arrived))
                added.append(((segment_id, offset), arrived, fmt.fragment_sizes(live)))
                offset += len(records[-1])
        decisions = [(touched[t], fmt.encode_decided(t, trace.sampled))
                     for t, trace in touched.items() if trace.sampled is not None]
        records += [record for _, record in decisions]
        fd = self._write_whole(segment_id, b"".join(records))
        self._adopt(_Segment(segment_id, self._path(segment_id), sum(map(len, records))), fd)
        for trace in touched.values():
            self._discharge(trace, oldest.id)
        for position, arrived, sizes in added:
            self._add_fragments(position, arrived, sizes)
        for trace, record in decisions:
            self._charge(trace, segment_id, len(record))
        self._delete(oldest)

    def _write_whole(self, segment_id: int, data: bytes) -> int:
        """A segment file that appears complete or not at all; returns its fd, open for appends."""
        path = self._path(segment_id)
        fd = os.open(path + PARTIAL, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o644)
        _write_all(fd, data)
        if self.fsync != "never":
            os.fdatasync(fd)
        os.rename(path + PARTIAL, path)
        return fd

    # ── opening: reading back what a previous run left ──

    def _load(self) -> None:
        names = os.listdir(self.directory)
        for name in names:
            if name.endswith(SUFFIX + PARTIAL):
                os.unlink(os.path.join(self.directory, name))  # a rewrite cut short: its segment is intact
        paths = sorted(p for p in names if p.endswith(SUFFIX))
        superseded = max((self._supersedes(p) for p in paths), default=0)
        for name in paths:
            path = os.path.join(self.directory, name)
            segment_id = int(name[:-len(SUFFIX)], 16)
            if segment_id <= superseded:
                os.unlink(path)  # rewritten forward before a crash kept it from being deleted
                continue
            self._load_segment(segment_id, path)
        if self.corrupt_records:
            log.warning("the write-ahead log in %s had %d damaged records; they were skipped",
                        self.directory, self.corrupt_records)

    def _supersedes(self, name: str) -> int:
        with open(os.path.join(self.directory, name), "rb") as f:
            scanned = fmt.scan(f.read(fmt.HEADER_SIZE + 16))
        first = scanned.records[0] if scanned.records else None
        return fmt.decode_segment(first.body)[1] if first and first.kind is fmt.Kind.SEGMENT else 0

    def _load_segment(self, segment_id: int, path: str) -> None:
        with open(path, "rb") as f:
            raw = f.read()
        scanned = fmt.scan(raw)
        self.corrupt_records += scanned.corrupt
        if scanned.end < len(raw):
            self.truncated_bytes += len(raw) - scanned.end
            os.truncate(path, scanned.end)
        if not scanned.records:
            os.unlink(path)
            return
        self._segments[segment_id] = _Segment(segment_id, path, scanned.end)
        self._bytes_used += scanned.end
        for record in scanned.records:
            self._apply(segment_id, record)

    def _apply(self, segment_id: int, record: fmt.Record) -> None:
        if record.kind is fmt.Kind.FRAGMENTS:
            arrived, fragments = fmt.decode_fragments(record.body)
            self._add_fragments((segment_id, record.offset), arrived, fmt.fragment_sizes(fragments))
            assert self._recovered is not None
            for f in fragments:
                self._recovered.setdefault(f.trace_id, []).append(f.payload)
        elif record.kind is fmt.Kind.DECIDED:
            trace_id, sampled = fmt.decode_decided(record.body)
            trace = self._traces.get(trace_id)
            if trace is not None:
                trace.sampled = sampled
                self._charge(trace, segment_id, fmt.HEADER_SIZE + len(record.body))
        elif record.kind is fmt.Kind.DONE:
            assert self._recovered is not None
            for trace_id in fmt.decode_done(record.body):
                if trace_id in self._traces:
                    self._forget(trace_id)
                    self._recovered.pop(trace_id, None)

    # ── the interval syncer ──

    def _sync_loop(self) -> None:
        last = 0.0
        while not self._closing.is_set():  # checked after each sync: close() may come while one clears `_wake`
            self._wake.wait()
            if self._closing.wait(max(0.0, last + self.fsync_interval - time.monotonic())):
                return  # close() syncs what is left
            last = time.monotonic()
            self._sync_pending()

    def _sync_pending(self) -> None:
        with self._lock:
            retired, self._retired = self._retired, []
            current = os.dup(self._fd) if self._dirty else -1
            sync_directory, self._dir_dirty = self._dir_dirty, False
            self._dirty = False
            self._wake.clear()
        self._sync_and_close([*retired, current] if current >= 0 else retired, sync=True)
        if sync_directory:
            _fsync_directory(self.directory)

    def _sync_and_close(self, fds: list[int], *, sync: bool) -> None:
        """A failed sync is logged, not raised: raising would stop the syncer for good, and the records
        are written, so only a power loss or kernel crash could still take them."""
        for fd in fds:
            if fd < 0:
                continue
            try:
                if sync:
                    os.fdatasync(fd)
            except OSError as exc:
                _failures.log(logging.ERROR, "fsync", "syncing the write-ahead log in %s failed: %s; acknowledged "
                              "spans may not survive a power loss", self.directory, exc.strerror or exc)
            finally:
                os.close(fd)
