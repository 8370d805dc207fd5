"""Which files to tail, and waking up when something changes.

Patterns are plain paths or globs with `*` / `?` in the file name; they are expanded
again every `glob_interval_ms` (and whenever the watcher reports a change in one of
their directories), so files created later are picked up.

The watcher only decides *when* to look: `inotify` (watchdog's inotify observer on the
patterns' directories) wakes the tailer as soon as a file is written, created, renamed
or removed; `poll` wakes it every `poll_ms`. `auto` uses inotify and falls back to
polling when inotify is unavailable (no kernel support, watch limit reached).
"""

from __future__ import annotations

import glob
import logging
import os
import threading
from collections.abc import Iterable

from watchdog.events import (
    EVENT_TYPE_CREATED,
    EVENT_TYPE_DELETED,
    EVENT_TYPE_MOVED,
    FileSystemEvent,
    FileSystemEventHandler,
)

log = logging.getLogger("edge.tail")

_GLOB_CHARS = frozenset("*?[")
_STRUCTURAL = frozenset({EVENT_TYPE_CREATED, EVENT_TYPE_DELETED, EVENT_TYPE_MOVED})
# watchdog logs every inotify event at debug level and an error when it is stopped mid-event;
# neither says anything about the tailed data (polling catches whatever inotify misses).
logging.getLogger("watchdog").setLevel(logging.CRITICAL)


class WatchUnavailable(OSError):
    """inotify cannot be used here (the caller asked for it explicitly)."""


def is_glob(pattern: str) -> bool:
    return any(c in _GLOB_CHARS for c in os.path.basename(pattern))


def expand(patterns: Iterable[str]) -> list[str]:
    """Regular files named by the patterns now, in a stable order, each once."""
    found: dict[str, None] = {}
    for pattern in patterns:
        names = sorted(glob.glob(pattern)) if is_glob(pattern) else [pattern]
        for name in names:
            if os.path.isfile(name):
                found[name] = None
    return list(found)


def directories(patterns: Iterable[str]) -> list[str]:
    """The existing directories the patterns live in (what the watcher watches)."""
    dirs = {os.path.dirname(os.path.abspath(p)) for p in patterns}
    return sorted(d for d in dirs if os.path.isdir(d))


class _Wake(FileSystemEventHandler):
    """Any event wakes the reader; creations, moves and deletions also ask for a look at the paths."""

    def __init__(self, wakeup: threading.Event, changed: threading.Event) -> None:
        self.wakeup = wakeup
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in _STRUCTURAL:
            self.changed.set()
        self.wakeup.set()


class Watcher:
    """Sets `wakeup` when a watched directory changes (inotify), or never (poll: the caller times out)."""

    def __init__(self, engine: str, dirs: list[str], wakeup: threading.Event) -> None:
        self.wakeup = wakeup
        self.changed = threading.Event()
        self.observer = None
        self.engine = "poll"
        if engine == "poll" or not dirs:
            return
        try:
            self.observer = self._start_inotify(dirs)
            self.engine = "inotify"
        except (OSError, ImportError, RuntimeError) as exc:
            if engine == "inotify":
                raise WatchUnavailable(f"inotify is not available: {exc}") from None
            log.warning("inotify is not available (%s); polling instead", exc)

    def _start_inotify(self, dirs: list[str]) -> object:
        from watchdog.observers.inotify import InotifyObserver

        observer = InotifyObserver()
        handler = _Wake(self.wakeup, self.changed)
        for directory in dirs:
            observer.schedule(handler, directory, recursive=False)
        observer.daemon = True
        observer.start()
        return observer

    def take_change(self) -> bool:
        """Whether a file was created, moved or removed since the last call."""
        if not self.changed.is_set():
            return False
        self.changed.clear()
        return True

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.stop()
            self.observer.join(timeout=2)
            self.observer = None
