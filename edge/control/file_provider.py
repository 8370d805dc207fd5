"""A policy file (JSON or YAML) as a provider: watched, re-read when it changes, fail safe.

The file is watched through its parent directory plus a poll fallback: watching the
directory (not the file) sees editors that save by rename, files created after start and
Kubernetes ConfigMaps swapping a symlink; the poll covers what inotify misses (network
filesystems, a directory that did not exist yet or was replaced). A broken, missing or
empty file keeps the last good policies; before the first good read nothing of the file's is
in force, and the error line says so.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from edge.config import ProviderConfig
from edge.control.provider_thread import OnErrors, OnUpdate, ProviderThread, fallback
from edge.policy.loader import LoadResult, PolicyFileError, load_document, parse_document

log = logging.getLogger("edge.providers")

FILE_POLL_MAX_S = 2.0  # the poll fallback of a file provider runs at least this often
SETTLE_S = 0.05  # after a file event, wait for the writer to go quiet this long...
SETTLE_MAX_S = 0.5  # ...but never longer than this (the 2 s reaction budget)
# Events that can change what the file holds; opened / closed_no_write / attrib are what our
# own reads cause, and reacting to them would make the provider chase its own tail.
_CONTENT_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})


def read_regular_file(path: str) -> bytes:
    """The file's bytes; OSError when it is anything but a regular file (or a link to one).

    Opened non-blocking and checked on the open descriptor: opening a FIFO for reading
    blocks until a writer comes, which would wedge the provider's thread for good, and a
    check before the open could be raced by a rename.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


class _DirHandler(FileSystemEventHandler):
    """Flags content events for the watched file (any such event in the directory when the file is
    a symlink: Kubernetes ConfigMaps swap a `..data` symlink, never touching the file's own name)."""

    def __init__(self, target: str, changed: threading.Event) -> None:
        self._target = target
        self._changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in _CONTENT_EVENTS:
            return
        paths = {os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")}
        if self._target in paths or os.path.islink(self._target):
            self._changed.set()


class FileProvider(ProviderThread):
    """One policy file (JSON or YAML), watched through its parent directory plus a poll fallback.

    Watching the directory (not the file) sees editors that save by rename and files created
    after start; the poll (every `min(poll_interval, 2)` s) covers what inotify misses
    (network filesystems, a directory that did not exist yet or was replaced).
    """

    kind = "file"

    def __init__(self, config: ProviderConfig, on_update: OnUpdate, on_errors: OnErrors | None = None) -> None:
        super().__init__(config, on_update, on_errors)
        self.path = os.path.abspath(config.path)
        self.poll_s = min(config.poll_interval, FILE_POLL_MAX_S)
        self._changed = threading.Event()
        self._check_lock = threading.Lock()
        self._watch_lock = threading.Lock()
        self._observer: Any = None
        self._watched_dir: tuple[int, int] | None = None
        self._watch_failure: str | None = None
        self._good_hash: str | None = None  # content last delivered
        self._seen_hash: str | None = None  # content last parsed (good or bad)
        self._failure: str | None = None  # last failure logged (one line per distinct failure)
        self._good_count: int | None = None  # policies last delivered; None before the first delivery

    def check(self) -> bool:
        """Read the file now and deliver its policies if the content changed. True when delivered."""
        with self._check_lock:
            data = self._read()
            if data is None:
                return False
            digest = hashlib.sha256(data).hexdigest()
            if digest == self._seen_hash:
                return False
            self._seen_hash = digest
            result = self._parse(data)
            if result is None:
                return False
            self._report_errors(result.errors, before_update=digest != self._good_hash)
            if self._failure is not None:
                log.info("policy provider %s: %s is readable again", self.id, self.path)
                self._failure = None
            if digest == self._good_hash:
                return False
            return self._deliver(digest, result)

    def _read(self) -> bytes | None:
        try:
            data = read_regular_file(self.path)
        except OSError as exc:
            self._seen_hash = None  # the same bytes must be parsed again once the file is back
            self._fail(f"cannot read {self.path}: {exc.strerror or exc}",
                       "it appears" if exc.errno == errno.ENOENT else "it can be read")
            return None
        if not data.strip():
            # Almost always a writer caught between truncate and write: not a request to drop
            # every policy. `{"policies": []}` is how a file says "no policies".
            self._seen_hash = None
            self._fail(f"{self.path} is empty")
            return None
        return data

    def _parse(self, data: bytes) -> LoadResult | None:
        try:
            return load_document(parse_document(data, self.path), self.path)
        except (PolicyFileError, ValueError) as exc:
            self._fail(str(exc))
            return None

    def _deliver(self, digest: str, result: LoadResult) -> bool:
        for error in result.errors:
            log.warning("policy provider %s: %s", self.id, error)
        try:
            self._on_update(self.id, list(result.policies))
        except Exception:
            self._seen_hash = None  # retry the delivery on the next check
            raise
        self._good_hash = digest
        self._good_count = len(result.policies)
        log.info("policy provider %s: loaded %d policies from %s", self.id, len(result.policies), self.path)
        return True

    def _fail(self, reason: str, until: str = "it is fixed") -> None:
        """Shown on /_edge/policies; logged once per distinct failure: a warning while last good policies
        stay in force, else an error."""
        self._report_errors([f"{reason}; {fallback(self._good_count, until)}"])
        if reason == self._failure:
            return
        self._failure = reason
        level = logging.WARNING if self._good_count else logging.ERROR
        log.log(level, "policy provider %s: %s; %s", self.id, reason, fallback(self._good_count, until))

    # ── thread ──

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._guarded(self._ensure_watch)
            self._guarded(self.check)
            self._ready.set()
            if self._changed.wait(self.poll_s):
                self._settle()
        self._close_watch()

    def _settle(self) -> None:
        """Let a burst of events (truncate, write, close) end before reading."""
        deadline = time.monotonic() + SETTLE_MAX_S
        while not self._stopping.is_set() and time.monotonic() < deadline:
            self._changed.clear()
            if not self._changed.wait(SETTLE_S):
                return

    def _interrupt(self) -> None:
        self._changed.set()

    def join(self, timeout: float) -> None:
        super().join(timeout)
        self._close_watch()

    def _dir_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(os.path.dirname(self.path))
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _ensure_watch(self) -> None:
        """(Re)watch the parent directory when it appeared or was replaced since the last look."""
        identity = self._dir_identity()
        with self._watch_lock:
            if self._stopping.is_set() or identity is None or identity == self._watched_dir:
                return
            self._close_watch_locked()
            observer = Observer()
            try:
                observer.schedule(_DirHandler(self.path, self._changed), os.path.dirname(self.path),
                                  recursive=False)
                observer.start()
            except Exception as exc:  # inotify limits, permissions: the poll fallback still works
                self._stop_observer(observer)
                if str(exc) != self._watch_failure:
                    log.warning("policy provider %s: cannot watch %s (%s); polling every %.1fs",
                                self.id, os.path.dirname(self.path), exc, self.poll_s)
                    self._watch_failure = str(exc)
                return
            self._observer, self._watched_dir, self._watch_failure = observer, identity, None

    def _close_watch(self) -> None:
        with self._watch_lock:
            self._close_watch_locked()

    def _close_watch_locked(self) -> None:
        if self._observer is not None:
            self._stop_observer(self._observer)
        self._observer, self._watched_dir = None, None

    @staticmethod
    def _stop_observer(observer: Any) -> None:
        try:
            observer.stop()
            if observer.is_alive():
                observer.join(0.2)
        except Exception:  # noqa: BLE001 - shutting down a watcher must never raise
            log.debug("stopping a file watcher failed", exc_info=True)
