"""edge-tail checkpoints: how far each tailed file has been delivered, kept across crashes.

The tailer updates offsets often (after every output flush), so it must never wait on the
disk: `update` only queues, and a background thread appends fixed-size records to a
write-ahead log, fsyncing every `sync_batch` updates or `interval_ms`. Each record carries
its own CRC, so a torn append (crash mid-write), a flipped bit or stray bytes cost only the
records they touch: replay skips them and resynchronises on the next record's magic.
Periodically the whole table is written as a snapshot (temp file, fsync, rename, fsync the
directory) and the WAL is truncated, so replay stays short.

Delivery is at-least-once: the tailer records an offset only once the lines before it are
delivered, and whatever this store loses (unsynced or corrupt records, a crash between a
snapshot and the WAL truncation) moves a file's checkpoint back to an earlier one, which
repeats lines but never skips any.

A write that fails (a full disk, above all) never stops the tailer, even at startup: the
table stays in memory, the next snapshot retries all of it, and the failure is logged once
when it starts, again at most every FAILURE_LOG_INTERVAL_S while it lasts, and once more
when writes work again.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b
from pathlib import Path

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1024
FAILURE_LOG_INTERVAL_S = 300.0  # while checkpoint writes keep failing, say so again this often at most

WAL_NAME = "checkpoints.wal"
SNAPSHOT_NAME = "checkpoints.snapshot"
LOCK_NAME = "lock"

_RECORD_MAGIC = b"ETCK"
_SNAPSHOT_MAGIC = b"ETSN"
_VERSION = 1
_TOMBSTONE = 1
# magic, version, flags, ahead, device, inode, fingerprint, fingerprint_len, offset, updated_ms
# (`ahead` took two pad bytes that were always zero, so older records read as ahead 0)
_RECORD_BODY = struct.Struct("<4sBBHQQQIQQ")
MAX_AHEAD = 0xFFFF
_CRC = struct.Struct("<I")
RECORD_SIZE = _RECORD_BODY.size + _CRC.size
# magic, version, (3 pad), record count; followed by the records and a CRC over everything before it
_SNAPSHOT_HEADER = struct.Struct("<4sB3xI")

Key = tuple[int, int]  # (device, inode): one slot per file


def fingerprint(head: bytes) -> int:
    """The 64-bit hash the tailer fingerprints a file's first bytes with."""
    return int.from_bytes(blake2b(head, digest_size=8).digest(), "little")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class FileIdentity:
    device: int
    inode: int
    fingerprint: int  # fingerprint() of the first `fingerprint_len` bytes of the file
    fingerprint_len: int  # how many leading bytes the fingerprint covers (0..FINGERPRINT_BYTES)

    @property
    def key(self) -> Key:
        """(device, inode): what tells files apart while they exist (the fingerprint tells reuse apart)."""
        return self.device, self.inode


@dataclass(frozen=True, slots=True)
class Checkpoint:
    identity: FileIdentity
    offset: int  # byte offset of the first line NOT yet delivered
    updated_ms: int  # wall-clock ms of the last update
    ahead: int = 0  # urgent records after `offset` already delivered (edge.tail.ledger), at most MAX_AHEAD


class StateDirInUse(OSError):
    """Another process holds the state dir's lock: two tailers would overwrite each other's checkpoints."""


def encode_record(checkpoint: Checkpoint, *, tombstone: bool = False) -> bytes:
    """One WAL record; ValueError for values that do not fit (negative or too large)."""
    ident = checkpoint.identity
    try:
        body = _RECORD_BODY.pack(_RECORD_MAGIC, _VERSION, _TOMBSTONE if tombstone else 0, checkpoint.ahead,
                                 ident.device, ident.inode, ident.fingerprint, ident.fingerprint_len,
                                 checkpoint.offset, checkpoint.updated_ms)
    except struct.error as exc:
        raise ValueError(f"checkpoint {checkpoint} does not fit a record: {exc}") from None
    return body + _CRC.pack(zlib.crc32(body))


def decode_record(data: bytes | memoryview) -> tuple[Key, Checkpoint | None] | None:
    """(key, checkpoint) of a valid record, checkpoint None for a tombstone; None when the record is invalid."""
    if len(data) != RECORD_SIZE:
        return None
    body = data[:_RECORD_BODY.size]
    if _CRC.unpack_from(data, _RECORD_BODY.size)[0] != zlib.crc32(body):
        return None
    magic, version, flags, ahead, device, inode, fp, fp_len, offset, updated_ms = _RECORD_BODY.unpack(body)
    if magic != _RECORD_MAGIC or version != _VERSION:
        return None
    if flags & _TOMBSTONE:
        return (device, inode), None
    return (device, inode), Checkpoint(FileIdentity(device, inode, fp, fp_len), offset, updated_ms, ahead)


@dataclass(frozen=True, slots=True)
class WalScan:
    records: list[tuple[Key, Checkpoint | None]]
    corrupt_stretches: int  # runs of bytes that were not valid records (bad CRC, garbage, torn tail)
    corrupt_bytes: int


def scan_wal(data: bytes) -> WalScan:
    """The valid records of a WAL in order. An invalid record is skipped by searching for the
    next record magic, so a flipped bit costs one record and inserted garbage costs nothing."""
    view = memoryview(data)
    records: list[tuple[Key, Checkpoint | None]] = []
    stretches = skipped = pos = 0
    in_corruption = False
    while pos < len(data):
        decoded = decode_record(view[pos:pos + RECORD_SIZE])
        if decoded is not None:
            records.append(decoded)
            pos += RECORD_SIZE
            in_corruption = False
            continue
        stretches += not in_corruption
        in_corruption = True
        resume = data.find(_RECORD_MAGIC, pos + 1)
        resume = len(data) if resume < 0 else resume
        skipped += resume - pos
        pos = resume
    return WalScan(records, stretches, skipped)


def encode_snapshot(checkpoints: Iterable[Checkpoint]) -> bytes:
    records = [encode_record(c) for c in checkpoints]
    body = _SNAPSHOT_HEADER.pack(_SNAPSHOT_MAGIC, _VERSION, len(records)) + b"".join(records)
    return body + _CRC.pack(zlib.crc32(body))


def decode_snapshot(data: bytes) -> list[Checkpoint] | None:
    """The checkpoints of a snapshot, or None when any part of it is invalid."""
    if len(data) < _SNAPSHOT_HEADER.size + _CRC.size:
        return None
    magic, version, count = _SNAPSHOT_HEADER.unpack_from(data)
    if magic != _SNAPSHOT_MAGIC or version != _VERSION:
        return None
    if len(data) != _SNAPSHOT_HEADER.size + count * RECORD_SIZE + _CRC.size:
        return None
    if _CRC.unpack_from(data, len(data) - _CRC.size)[0] != zlib.crc32(memoryview(data)[:-_CRC.size]):
        return None
    scan = scan_wal(data[_SNAPSHOT_HEADER.size:-_CRC.size])
    if scan.corrupt_stretches or any(c is None for _, c in scan.records):
        return None
    return [c for _, c in scan.records if c is not None]


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_state_dir(directory: Path) -> int:
    """Hold an exclusive flock on `directory/lock` for the store's lifetime (the kernel drops it when
    the process dies, so a crashed tailer never leaves a stale lock)."""
    fd = os.open(directory / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateDirInUse(f"state dir {directory} is in use by another edge-tail (pid {holder}); "
                            "give each tailer its own --state-dir") from None
    try:  # the holder's pid only makes the message above clearer: a full disk must not stop the tailer
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        log.debug("cannot write the pid into %s: %s", directory / LOCK_NAME, exc)
    return fd


def _expired(slots: dict[Key, Checkpoint], ttl_ms: int, now: int) -> list[Key]:
    return [key for key, c in slots.items() if now - c.updated_ms > ttl_ms]


def _overflow(slots: dict[Key, Checkpoint], max_slots: int) -> list[Key]:
    """The least recently updated slots beyond `max_slots`."""
    excess = len(slots) - max_slots
    return sorted(slots, key=lambda k: slots[k].updated_ms)[:excess] if excess > 0 else []


@dataclass(slots=True)
class _Job:
    """What the writer thread does next, taken under the lock and done outside it."""
    records: bytes | None  # WAL records to append and fsync
    snapshot: list[Checkpoint] | None  # or the whole table to snapshot (then truncate the WAL)
    seq: int  # every update queued up to this one is durable once the job is done
    stop: bool


class CheckpointStore:
    """Offsets of tailed files in `state_dir`, durable through a WAL and snapshots (see the module doc)."""

    def __init__(self, state_dir: str | Path, *, sync_batch: int = 64, interval_ms: int = 5000,
                 snapshot_interval_ms: int = 60000, ttl_ms: int = 259_200_000, max_slots: int = 256) -> None:
        """Creates state_dir, replays snapshot + WAL (skipping corrupt records), starts the writer thread."""
        for name, value in (("sync_batch", sync_batch), ("interval_ms", interval_ms),
                            ("snapshot_interval_ms", snapshot_interval_ms), ("ttl_ms", ttl_ms),
                            ("max_slots", max_slots)):
            if value < 1:
                raise ValueError(f"checkpoint {name} must be a positive number, got {value}")
        self._dir = Path(state_dir)
        self._sync_batch = sync_batch
        self._interval = interval_ms / 1000
        self._snapshot_interval = snapshot_interval_ms / 1000
        self._ttl_ms = ttl_ms
        self._max_slots = max_slots
        self._dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_state_dir(self._dir)
        self._wal_fd = -1
        self._failures = 0  # failed writes in a row
        self._failure_logged_at = 0.0
        compaction_error: OSError | None = None
        try:
            self._slots = self._replay()
            for key in _expired(self._slots, ttl_ms, now_ms()) + _overflow(self._slots, max_slots):
                self._slots.pop(key, None)
            self._wal_fd = os.open(self._dir / WAL_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                self._write_snapshot(list(self._slots.values()))  # compacts: replay starts clean next time
            except OSError as exc:  # a full disk: the state read is good, the writer thread retries
                compaction_error = exc
        except BaseException:
            for fd in (self._wal_fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)
            raise
        self._cond = threading.Condition()
        self._pending: dict[Key, bytes] = {}  # coalesced: the newest record per file
        self._queued = 0  # updates queued so far
        self._synced = 0  # updates durable so far
        self._updates_since_write = 0
        self._first_pending_at = 0.0
        self._dirty = False  # changed since the last snapshot
        self._snapshot_due_at = 0.0
        self._flush_requested = False
        self._stopping = False
        self._closed = False
        if compaction_error is not None:
            self._write_failed(compaction_error)
            self._dirty, self._snapshot_due_at = True, time.monotonic() + self._snapshot_interval
        self._writer = threading.Thread(target=self._run, name="checkpoint-writer", daemon=True)
        self._writer.start()

    # -- the tailer's side -------------------------------------------------------------------------

    def lookup(self, device: int, inode: int, head: bytes) -> Checkpoint | None:
        """The checkpoint of this file if (device, inode) match and the stored fingerprint equals
        fingerprint(head[:stored fingerprint_len]) -- so a file that grew since still matches, a
        rewritten head does not."""
        with self._cond:
            checkpoint = self._slots.get((device, inode))
        if checkpoint is None or now_ms() - checkpoint.updated_ms > self._ttl_ms:
            return None
        covered = checkpoint.identity.fingerprint_len
        if len(head) < covered or fingerprint(head[:covered]) != checkpoint.identity.fingerprint:
            return None
        return checkpoint

    def update(self, identity: FileIdentity, offset: int, ahead: int = 0) -> None:
        """Non-blocking: record that everything before `offset` is delivered, and the first `ahead` urgent
        records after it (queued to the writer thread). A larger `ahead` is stored as MAX_AHEAD: fewer
        records skipped on restart means some sent twice, never one lost."""
        checkpoint = Checkpoint(identity, offset, now_ms(), min(ahead, MAX_AHEAD))
        record = encode_record(checkpoint)  # raises here, in the caller, for out-of-range values
        key = identity.key
        with self._cond:
            self._check_open()
            self._slots[key] = checkpoint
            self._queue(key, record)
            for evicted in _overflow(self._slots, self._max_slots):
                self._drop(evicted)

    def forget(self, identity: FileIdentity) -> None:
        """Drop the slot (file expired). A slot that another file has taken over since (the inode was
        reused, the identity differs) is kept: forgetting it would make that file be read again."""
        with self._cond:
            self._check_open()
            slot = self._slots.get(identity.key)
            if slot is not None and slot.identity == identity:
                self._drop(identity.key)

    def flush(self) -> None:
        """Block until every update queued so far is written and fsynced."""
        with self._cond:
            target = self._queued
            if self._synced >= target:
                return
            self._flush_requested = True
            self._cond.notify_all()
            while self._synced < target and self._writer.is_alive():
                self._cond.wait(0.5)

    def close(self) -> None:
        """flush, write a snapshot, truncate the WAL, stop the thread. Idempotent."""
        with self._cond:
            if self._closed:
                return
            self._closed = self._stopping = True
            self._cond.notify_all()
        self._writer.join()
        os.close(self._wal_fd)
        os.close(self._lock_fd)

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- bookkeeping under the lock ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"checkpoint store {self._dir} is closed")

    def _drop(self, key: Key) -> None:
        checkpoint = self._slots.pop(key)
        self._queue(key, encode_record(Checkpoint(checkpoint.identity, 0, now_ms()), tombstone=True))

    def _queue(self, key: Key, record: bytes) -> None:
        """Add a record for the writer; wake it only when it has a new deadline or a full batch."""
        now = time.monotonic()
        wake = not self._pending
        if wake:
            self._first_pending_at = now
        if not self._dirty:
            self._dirty, self._snapshot_due_at = True, now + self._snapshot_interval
        self._pending[key] = record
        self._queued += 1
        self._updates_since_write += 1
        if wake or self._updates_since_write >= self._sync_batch:
            self._cond.notify_all()

    # -- the writer thread -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    job = self._take_job()
                self._do(job)
                if job.stop:
                    return
        except Exception:  # never expected: log loudly, flush() stops waiting on a dead writer
            log.exception("checkpoint writer for %s stopped; checkpoints are no longer saved", self._dir)
            with self._cond:
                self._cond.notify_all()

    def _take_job(self) -> _Job:
        """Wait until a snapshot, a WAL batch or the stop is due, and take its data."""
        while True:
            now = time.monotonic()
            if self._stopping or (self._dirty and now >= self._snapshot_due_at):
                for key in _expired(self._slots, self._ttl_ms, now_ms()):
                    del self._slots[key]
                job = _Job(None, list(self._slots.values()), self._queued, self._stopping)
                self._pending.clear()
                self._dirty = False
                self._reset_batch()
                return job
            if self._pending and (self._flush_requested or self._updates_since_write >= self._sync_batch
                                  or now >= self._first_pending_at + self._interval):
                for key in _expired(self._slots, self._ttl_ms, now_ms()):
                    self._drop(key)
                job = _Job(b"".join(self._pending.values()), None, self._queued, False)
                self._pending.clear()
                self._reset_batch()
                return job
            self._flush_requested = False  # nothing pending: the writer is finishing what a flush waits for
            self._cond.wait(self._seconds_to_deadline(now))

    def _reset_batch(self) -> None:
        self._updates_since_write = 0
        self._flush_requested = False

    def _seconds_to_deadline(self, now: float) -> float | None:
        deadlines = [self._snapshot_due_at] if self._dirty else []
        if self._pending:
            deadlines.append(self._first_pending_at + self._interval)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _do(self, job: _Job) -> None:
        try:
            if job.snapshot is not None:
                self._write_snapshot(job.snapshot)
            elif job.records:
                _write_all(self._wal_fd, job.records)
                os.fsync(self._wal_fd)
        except OSError as exc:  # e.g. disk full: tailing goes on, the next snapshot retries the whole table
            self._write_failed(exc)
            with self._cond:
                if not self._dirty:
                    self._dirty, self._snapshot_due_at = True, time.monotonic() + self._snapshot_interval
        else:
            if job.snapshot is not None:  # the whole table is on disk again, whatever failed before
                self._write_worked()
        with self._cond:
            self._synced = max(self._synced, job.seq)
            self._cond.notify_all()

    def _write_failed(self, exc: OSError) -> None:
        """Log a failed write when failures start, then at most every FAILURE_LOG_INTERVAL_S.

        On a full disk every WAL batch fails (several a second): one line per failure would
        bury everything else in the log and fill the disk the log is on.
        """
        self._failures += 1
        now = time.monotonic()
        if self._failures == 1:
            log.error("checkpoint write in %s failed: %s; tailing goes on, checkpoints are kept in memory "
                      "and retried with the next snapshot", self._dir, exc)
        elif now - self._failure_logged_at < FAILURE_LOG_INTERVAL_S:
            return
        else:
            log.error("checkpoint writes in %s still failing (%d failures so far): %s", self._dir, self._failures,
                      exc)
        self._failure_logged_at = now

    def _write_worked(self) -> None:
        """A snapshot was written: after failures, everything is durable again (WAL appends that
        squeeze into a page already allocated do not tell: the retry is the snapshot)."""
        if self._failures:
            log.warning("checkpoint writes in %s work again after %d failure(s)", self._dir, self._failures)
            self._failures = 0

    # -- files -------------------------------------------------------------------------------------

    def _replay(self) -> dict[Key, Checkpoint]:
        """Snapshot, then the WAL in order (the last record per file wins). Corrupt state never
        stops the tailer: a bad snapshot is set aside, bad WAL records are skipped, with a warning."""
        slots: dict[Key, Checkpoint] = {}
        snapshot_path = self._dir / SNAPSHOT_NAME
        if snapshot_path.exists():
            checkpoints = decode_snapshot(snapshot_path.read_bytes())
            if checkpoints is None:
                aside = snapshot_path.with_name(SNAPSHOT_NAME + ".corrupt")
                os.replace(snapshot_path, aside)
                log.warning("checkpoint snapshot %s is corrupt: set aside as %s, replaying the WAL alone",
                            snapshot_path, aside.name)
            else:
                slots = {c.identity.key: c for c in checkpoints}
        wal_path = self._dir / WAL_NAME
        scan = scan_wal(wal_path.read_bytes() if wal_path.exists() else b"")
        for key, checkpoint in scan.records:
            if checkpoint is None:
                slots.pop(key, None)
            else:
                slots[key] = checkpoint
        if scan.corrupt_stretches:
            log.warning("checkpoint WAL %s: skipped %d corrupt stretch(es), %d bytes; files they covered "
                        "resume from an earlier checkpoint", wal_path, scan.corrupt_stretches, scan.corrupt_bytes)
        return slots

    def _write_snapshot(self, checkpoints: list[Checkpoint]) -> None:
        """Replace the snapshot atomically and durably, then empty the WAL it supersedes."""
        temp = self._dir / (SNAPSHOT_NAME + ".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(fd, encode_snapshot(checkpoints))
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp)  # a partial temp file would only hold on to the space that ran out
            raise
        finally:
            os.close(fd)
        os.replace(temp, self._dir / SNAPSHOT_NAME)
        _fsync_dir(self._dir)
        os.ftruncate(self._wal_fd, 0)
        os.fsync(self._wal_fd)
