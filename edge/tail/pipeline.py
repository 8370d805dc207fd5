"""The tail pipeline: read → cut into lines → policies → write or forward → checkpoint.

Used by the `edge-tail` command and by the supervisor's tail worker alike.

stdin mode reads until EOF and exits. File mode tails paths and globs until `stop` is
set (SIGTERM/SIGINT), then flushes the output and the checkpoints. Start positions of
the files present at startup follow `--read-from`: `head` (offset 0), `tail` (their
current end) or `checkpoint` (the stored offset when the store knows the file, else
offset 0 so nothing is lost). Files that appear later are read from their first byte
(or from their checkpoint, when the store knows them).

Rotation: when a tailed path stops naming the file we opened (renamed or removed), that
file keeps being read for `rotate_wait_ms` and then until its end, and the path's new
file is read from offset 0. A file that shrinks below our offset (copytruncate) or whose
first bytes change is read again from 0. Files gone for `removed_expire_ms` are
forgotten by the checkpoint store. A partial last line is held until its newline; when
its file is abandoned (rotated or removed, and drained) it is delivered completed with
a newline rather than lost.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge.tail.block import Block
from edge.tail.checkpoint import CheckpointStore, FileIdentity
from edge.tail.discovery import Watcher, directories, expand, is_glob
from edge.tail.keeping import Filter
from edge.tail.output import Position, Sink
from edge.tail.reader import FileKey, LineCutter, TailedFile, display, file_kind
from edge.tail.settings import TailSettings

if TYPE_CHECKING:
    from edge.tail.multiline import Multiline, RecordJoiner

log = logging.getLogger("edge.tail")

READS_PER_TURN = 16  # reads of one file before the others get a turn
INOTIFY_IDLE_S = 1.0  # with inotify, look at the files at least this often anyway


class StartupError(ValueError):
    """Input that cannot be tailed at startup (one line for the operator)."""


def deliver(block: Block, line_filter: Filter, sink: Sink, source: str, identity: FileIdentity | None) -> None:
    """Filter one block and hand what is kept to the sink with the position it reaches."""
    kept = line_filter.apply(block.data, source, block.records)
    position: Position | None = (identity, block.end_offset) if identity is not None else None
    sink.write(kept.data, kept.lines, source, position, kept.records)


# ── stdin ──


def run_stdin(settings: TailSettings, line_filter: Filter, sink: Sink, stop: threading.Event,
              fd: int = 0, multiline: Multiline | None = None) -> int:
    """Read `fd` to EOF (or until `stop`), delivering complete lines (or records); the last partial one too.

    Returns how many bytes were read."""
    joiner = multiline.joiner(settings.max_line) if multiline is not None else None
    cutter = LineCutter(settings.max_line, cut_lines=joiner is None)
    offset = 0
    size = max(settings.read_buf, 1)
    while not stop.is_set():
        deadlines = [d for d in (sink.deadline(), joiner.deadline() if joiner else None) if d is not None]
        timeout = min([0.2, *(d - time.monotonic() for d in deadlines)])
        readable, _, _ = select.select([fd], [], [], max(0.0, timeout))
        if not readable:
            _flush_due(joiner, line_filter, sink)
            continue
        data = os.read(fd, size)
        if not data:
            break
        offset += len(data)
        blocks = cutter.feed(data, offset)
        for block in blocks if joiner is None else joiner.feed_all(blocks):
            deliver(block, line_filter, sink, "", None)
    if not stop.is_set():
        last = cutter.take_partial(offset)
        for block in joiner.finish(last) if joiner is not None else [last] if last is not None else []:
            deliver(block, line_filter, sink, "", None)
    return offset


def _flush_due(joiner: RecordJoiner | None, line_filter: Filter, sink: Sink) -> None:
    """stdin went quiet: deliver a multi-line record whose timeout passed, flush a batch that is due."""
    now = time.monotonic()
    expired = joiner.expired(now) if joiner is not None else None
    if expired is not None:
        deliver(expired, line_filter, sink, "", None)
    deadline = sink.deadline()
    if deadline is not None and now >= deadline:
        sink.flush()


# ── files ──


def check_inputs(patterns: tuple[str, ...], *, exit_on_missing: bool = False) -> list[str]:
    """What is missing among the inputs, as reasons; StartupError for an input that can never be tailed.

    A missing file or glob directory is waited for (like Fluent Bit and Vector do), unless
    `exit_on_missing`; a path that is not a regular file, or that cannot be read, is an error.
    """
    missing = []
    for pattern in patterns:
        reason = _missing(pattern)
        if reason:
            if exit_on_missing and not reason.endswith("no file matches yet"):
                raise StartupError(f"{pattern}: {reason}")
            missing.append(f"{display(pattern)}: {reason}")
            continue
        if is_glob(pattern):
            continue
        if not os.path.isfile(pattern):
            raise StartupError(f"{pattern}: not a regular file")
        try:
            os.close(os.open(pattern, os.O_RDONLY))
        except OSError as exc:
            raise StartupError(f"{pattern}: {exc.strerror or exc}") from None
    return missing


def _missing(pattern: str) -> str:
    if is_glob(pattern):
        if not os.path.isdir(os.path.dirname(os.path.abspath(pattern))):
            return "no such directory"
        return "" if expand([pattern]) else "no file matches yet"
    return "" if os.path.exists(pattern) else "no such file"


@dataclass(slots=True)
class Expiring:
    """A file no longer tailed: its checkpoint is forgotten at `forget_at`."""

    identity: FileIdentity
    forget_at: float


class FileTailer:
    """Tails the settings' paths until `stop` is set."""

    def __init__(self, settings: TailSettings, line_filter: Filter, sink: Sink, store: CheckpointStore,
                 stop: threading.Event, wakeup: threading.Event, multiline: Multiline | None = None) -> None:
        self.settings = settings
        self.multiline = multiline
        self.filter = line_filter
        self.sink = sink
        self.store = store
        self.stop = stop
        self.wakeup = wakeup
        self.files: dict[FileKey, TailedFile] = {}
        self.expiring: dict[FileKey, Expiring] = {}
        self.watcher: Watcher | None = None
        self.next_glob = 0.0
        self.next_check = 0.0
        output_key = getattr(sink, "file_key", None)
        self.excluded: set[FileKey] = {output_key} if output_key is not None else set()

    # ── startup ──

    def open_initial(self, missing: list[str] | None = None) -> None:
        """Open every file the patterns name now (`check_inputs` has vetted the literal paths).

        `missing` inputs get one warning together; they are picked up when they appear.
        """
        for path in expand(self.settings.paths):
            if not self._is_excluded(path):
                self._track(path, initial=True)
        if missing:
            log.warning("waiting for inputs to appear: %s", "; ".join(missing))

    def _is_excluded(self, path: str) -> bool:
        try:
            st = os.stat(path)
        except OSError:
            return True
        return (st.st_dev, st.st_ino) in self.excluded

    def _start_offset(self, tailed: TailedFile, initial: bool) -> tuple[int, int]:
        """Files present at startup follow --read-from; later ones start at their checkpoint or at 0.

        Returns the offset and the urgent records after it that were already delivered (see `Sink.resume`).
        """
        read_from = self.settings.read_from if initial else "checkpoint"
        if read_from == "head":
            return 0, 0
        if read_from == "tail":
            return tailed.size_seen, 0
        found = self.store.lookup(tailed.key[0], tailed.key[1], tailed.head())
        return (found.offset, found.ahead) if found is not None and found.offset <= tailed.size_seen else (0, 0)

    def _track(self, path: str, initial: bool) -> None:
        try:
            joiner = self.multiline.joiner(self.settings.max_line) if self.multiline is not None else None
            tailed = TailedFile.open(path, self.settings.max_line, joiner)
        except OSError as exc:
            log.warning("cannot open %s: %s", display(path), exc.strerror or exc)
            return
        try:
            offset, ahead = self._start_offset(tailed, initial)
        except OSError as exc:
            tailed.close()
            log.warning("cannot read %s: %s", display(path), exc.strerror or exc)
            return
        known = self.files.get(tailed.key)
        if known is not None:  # raced with discovery of the same file under another name
            tailed.close()
            known.path, known.detached_at = path, None
            return
        tailed.start_at(offset)
        self.sink.resume((tailed.identity, offset), ahead)
        self.expiring.pop(tailed.key, None)
        self.files[tailed.key] = tailed
        log.info("tailing %s from offset %d", tailed.name, tailed.offset)

    # ── discovery and rotation ──

    def discover(self) -> None:
        """Re-expand the patterns: new files are tracked, renamed ones follow their new name."""
        for path in expand(self.settings.paths):
            try:
                st = os.stat(path)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if key in self.excluded:
                continue
            tailed = self.files.get(key)
            if tailed is None:
                self._track(path, initial=False)
            elif tailed.path != path or tailed.detached_at is not None:
                if self._path_owner(path) not in (None, tailed):
                    continue
                tailed.path, tailed.detached_at = path, None

    def _path_owner(self, path: str) -> TailedFile | None:
        return next((f for f in self.files.values() if f.path == path and f.detached_at is None), None)

    def check_files(self, now: float) -> None:
        """Notice rotation, removal, truncation and rewritten heads of the tracked files."""
        moved = False
        for tailed in list(self.files.values()):
            if tailed.detached_at is None:
                try:
                    st: os.stat_result | None = os.stat(tailed.path)
                except OSError:
                    st = None
                if st is None or (st.st_dev, st.st_ino) != tailed.key:
                    tailed.detached_at = now
                    moved = True
                    _log_replaced(tailed.path, st)
            self._restart_if_replaced(tailed)
        if moved:
            self.discover()

    def _restart_if_replaced(self, tailed: TailedFile) -> None:
        try:
            reason = tailed.restart_if_replaced()
        except OSError as exc:
            log.warning("cannot check %s: %s", tailed.name, exc.strerror or exc)
            return
        if reason:
            log.info("%s: %s; reading it again from the start", tailed.name, reason)
            orphan = tailed.take_orphan()
            if orphan is not None:
                deliver(orphan[1], self.filter, self.sink, tailed.name, orphan[0])
            self.sink.write(b"", 0, tailed.name, (tailed.identity, 0))

    def retire_drained(self, now: float) -> None:
        """Close detached files once `rotate_wait_ms` has passed and they are read to the end."""
        wait = self.settings.rotate_wait_ms / 1000
        for key, tailed in list(self.files.items()):
            if tailed.detached_at is None or now < tailed.detached_at + wait or tailed.has_unread():
                continue
            for block in tailed.take_rest():
                deliver(block, self.filter, self.sink, tailed.name, tailed.identity)
            tailed.close()
            del self.files[key]
            self.expiring[key] = Expiring(tailed.identity, now + self.settings.removed_expire_ms / 1000)
            log.info("stopped tailing the rotated or removed %s", tailed.name)
        for key, entry in list(self.expiring.items()):
            if now >= entry.forget_at:
                del self.expiring[key]
                self.store.forget(entry.identity)

    # ── reading ──

    def flush_expired(self, now: float) -> None:
        """Deliver the multi-line records whose files went quiet for --multiline-timeout-ms."""
        for tailed in self.files.values():
            block = tailed.expired(now)
            if block is not None:
                deliver(block, self.filter, self.sink, tailed.name, tailed.identity)

    def read_available(self) -> bool:
        """One turn over every file; True when anything was read."""
        progressed = False
        for tailed in list(self.files.values()):
            if tailed.at_eof:  # new data after a pause: first make sure the file was not replaced meanwhile
                self._restart_if_replaced(tailed)
            for _ in range(READS_PER_TURN):
                if not self.sink.ready() or self.stop.is_set():
                    return progressed
                try:
                    blocks = tailed.read(self.settings.read_buf)
                except OSError as exc:
                    log.warning("cannot read %s: %s", tailed.name, exc.strerror or exc)
                    break
                if blocks is None:
                    break
                progressed = True
                for block in blocks:
                    deliver(block, self.filter, self.sink, tailed.name, tailed.identity)
        return progressed

    # ── the loop ──

    def _wait(self, now: float) -> None:
        base = self.settings.poll_ms / 1000
        if self.watcher is not None and self.watcher.engine == "inotify":
            base = max(base, INOTIFY_IDLE_S)
        deadlines = [now + base, self.next_glob]
        deadlines += [d for d in (self.sink.deadline(), *(f.deadline() for f in self.files.values()))
                      if d is not None]
        if any(f.detached_at is not None for f in self.files.values()):
            deadlines.append(now + self.settings.poll_ms / 1000)
        self.wakeup.wait(max(0.0, min(deadlines) - now))
        self.wakeup.clear()

    def run(self) -> None:
        self.watcher = Watcher(self.settings.io_engine, directories(self.settings.paths), self.wakeup)
        try:
            while not self.stop.is_set():
                now = time.monotonic()
                changed = self.watcher.take_change()
                if now >= self.next_check or changed:
                    self.check_files(now)
                    self.retire_drained(now)
                    self.next_check = now + self.settings.poll_ms / 1000
                if now >= self.next_glob or changed:
                    self.discover()
                    self.next_glob = now + self.settings.glob_interval_ms / 1000
                progressed = self.read_available()
                if self.multiline is not None:
                    self.flush_expired(time.monotonic())
                flush_at = self.sink.deadline()
                if flush_at is not None and time.monotonic() >= flush_at:
                    self.sink.flush()
                if not progressed:
                    self._wait(time.monotonic())
        finally:
            self.watcher.stop()

    def close(self) -> None:
        for tailed in self.files.values():
            tailed.close()
        self.files.clear()


def _log_replaced(path: str, st: os.stat_result | None) -> None:
    """Say why a tailed path stopped naming its file; a non-regular file in its place gets a warning.

    Said once: discovery skips what is not a regular file without a word (a glob over a log
    directory matches subdirectories too), and tails a regular file put back at the path again.
    """
    if st is None or stat.S_ISREG(st.st_mode):
        log.info("%s was rotated or removed; draining the old file", display(path))
    else:
        log.warning("%s is now a %s, not a regular file: not tailing it (the file it replaced is drained); "
                    "a regular file put there will be tailed", display(path), file_kind(st.st_mode))


class CheckpointRecorder:
    """The sinks' `on_delivered`: delivered positions become checkpoints (once the store is open), with
    the count of urgent records delivered beyond them when forwarding (`edge.tail.ledger`)."""

    def __init__(self) -> None:
        self.store: CheckpointStore | None = None

    def __call__(self, positions: list[Position], ahead: Mapping[FileKey, int] | None = None) -> None:
        if self.store is not None:
            for identity, offset in positions:
                self.store.update(identity, offset, ahead.get(identity.key, 0) if ahead else 0)
