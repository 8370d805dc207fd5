"""Policy providers of the supervisor: policy files and sync servers, merged into one policy set.

Every provider runs in its own daemon thread and hands its latest *good* policy list to the
`PolicyMerger`, which merges by id and calls back only when the merged set really changed: a
touched file or an unchanged sync never costs a recompile. Providers fail safe: a broken or
missing file, or a policy server that is down, keeps the last good policies, and a bug in a
provider is logged without killing its thread (a silent dead thread would freeze policies).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from edge.config import ProviderConfig, ServiceConfig
from edge.engine.stats import PolicyCounters
from edge.policy.loader import LoadResult, PolicyFileError, load_document, parse_document
from edge.policy.sync import JSON, SyncClient, SyncError, SyncResult, statuses
from edge.proto.tero.policy.v1.policy_pb2 import Policy

log = logging.getLogger("edge.providers")

OnUpdate = Callable[[str, list[Policy]], None]
OnChange = Callable[[list[Policy], str], None]
StatsSource = Callable[[], dict[str, PolicyCounters]]
StatsReturn = Callable[[dict[str, PolicyCounters]], None]
ErrorsSource = Callable[[], dict[str, list[str]]]

FILE_POLL_MAX_S = 2.0  # the poll fallback of a file provider runs at least this often
SETTLE_S = 0.05  # after a file event, wait for the writer to go quiet this long...
SETTLE_MAX_S = 0.5  # ...but never longer than this (the 2 s reaction budget)
BACKOFF_CAP_MIN_S = 60.0
FINAL_SYNC_TIMEOUT_S = 2.0
# Events that can change what the file holds; opened / closed_no_write / attrib are what our
# own reads cause, and reacting to them would make the provider chase its own tail.
_CONTENT_EVENTS = frozenset({"created", "modified", "moved", "deleted", "closed"})


def policies_version(policies: Iterable[Policy]) -> str:
    """A short hash of a policy set that ignores order: identical sets get identical versions."""
    blobs = sorted((p.id, p.SerializeToString(deterministic=True)) for p in policies)
    digest = hashlib.sha256()
    for _, blob in blobs:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()[:16]


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: spreads the retries of many proxies after an outage."""
    bound = min(cap, base * 2 ** min(max(failures, 1) - 1, 62))
    return rng.uniform(0.0, bound)


# ── merger ──────────────────────────────────────────────────────────────────


class PolicyMerger:
    """Merges the latest policy list of every provider by id into the one set that gets compiled.

    Precedence for an id defined by several providers: http providers over file providers (the
    policy server is the source of truth), then the provider listed first in the config.
    `on_change(policies, version)` runs under the merger's lock, so snapshots are delivered in
    order even though providers call in from their own threads.
    """

    def __init__(self, on_change: OnChange, providers: Iterable[ProviderConfig] = ()) -> None:
        self._on_change = on_change
        self._lock = threading.RLock()
        self._rank: dict[str, tuple[int, int]] = {}
        self._sets: dict[str, list[Policy]] = {}
        self._merged: list[Policy] = []
        self._version = policies_version([])
        for config in providers:
            self.register(config.id, config.type)

    def register(self, provider_id: str, kind: str) -> None:
        """Declare a provider; registration order is config order (earlier wins among equals)."""
        with self._lock:
            if provider_id not in self._rank:
                self._rank[provider_id] = (1 if kind == "http" else 0, -len(self._rank))

    def update(self, provider_id: str, policies: Sequence[Policy]) -> bool:
        """A provider's new complete list. True when the merged set changed and was delivered.

        An unregistered provider id is registered as a file provider after the known ones.
        """
        with self._lock:
            self.register(provider_id, "file")
            self._sets[provider_id] = list(policies)
            merged = self._merge()
            version = policies_version(merged)
            if version == self._version:
                return False
            try:
                self._on_change(merged, version)
            except Exception:
                # Not marking the version as current makes the next update retry the delivery.
                log.exception("policy set %s could not be applied", version)
                return False
            self._merged, self._version = merged, version
            return True

    def _merge(self) -> list[Policy]:
        by_id: dict[str, Policy] = {}
        for provider_id in sorted(self._sets, key=self._rank.__getitem__):
            for policy in self._sets[provider_id]:
                by_id[policy.id] = policy  # higher rank comes later and overwrites
        return [by_id[pid] for pid in sorted(by_id, key=lambda s: s.encode())]

    def current(self) -> tuple[list[Policy], str]:
        """The last delivered set and its version (empty set before the first change)."""
        with self._lock:
            return list(self._merged), self._version

    @property
    def version(self) -> str:
        with self._lock:
            return self._version


# ── providers ───────────────────────────────────────────────────────────────


class _Provider:
    """Thread plumbing shared by the providers: start, prompt stop, first-attempt readiness."""

    kind = ""

    def __init__(self, config: ProviderConfig, on_update: OnUpdate) -> None:
        self.config = config
        self.id = config.id
        self._on_update = on_update
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_forever, name=f"policy-provider-{self.id}",
                                            daemon=True)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop without waiting (ProviderSet stops all providers in parallel)."""
        self._stopping.set()
        self._interrupt()

    def join(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(timeout, 0.0))

    def stop(self, timeout: float = 1.0) -> None:
        self.request_stop()
        self.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """True once the first load / sync attempt finished (whether or not it succeeded)."""
        return self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _interrupt(self) -> None:
        """Wake the thread out of its wait (subclasses wait on more than the stop event)."""

    def _run(self) -> None:
        raise NotImplementedError

    def _run_forever(self) -> None:
        # The loops guard each step themselves; this outer guard catches bugs in the loop itself.
        while not self._stopping.is_set():
            try:
                self._run()
            except Exception:
                log.exception("policy provider %s: unexpected error, continuing", self.id)
                self._ready.set()
                self._stopping.wait(1.0)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Exception:
            log.exception("policy provider %s: unexpected error, continuing", self.id)
            return None


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


class FileProvider(_Provider):
    """One policy file (JSON or YAML), watched through its parent directory plus a poll fallback.

    Watching the directory (not the file) sees editors that save by rename and files created
    after start; the poll (every `min(poll_interval, 2)` s) covers what inotify misses
    (network filesystems, a directory that did not exist yet or was replaced).
    """

    kind = "file"

    def __init__(self, config: ProviderConfig, on_update: OnUpdate) -> None:
        super().__init__(config, on_update)
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
        self._failure: str | None = None  # last failure logged (one warning per distinct failure)

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
            if self._failure is not None:
                log.info("policy provider %s: %s is readable again", self.id, self.path)
                self._failure = None
            if digest == self._good_hash:
                return False
            return self._deliver(digest, result)

    def _read(self) -> bytes | None:
        try:
            with open(self.path, "rb") as fh:
                data = fh.read()
        except OSError as exc:
            self._seen_hash = None  # the same bytes must be parsed again once the file is back
            self._fail(f"cannot read {self.path}: {exc.strerror or exc}")
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
        log.info("policy provider %s: loaded %d policies from %s", self.id, len(result.policies), self.path)
        return True

    def _fail(self, reason: str) -> None:
        if reason != self._failure:
            log.warning("policy provider %s: %s; keeping the last good policies", self.id, reason)
            self._failure = reason

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


class HttpProvider(_Provider):
    """Polls a policy sync server (docs/policies.md §10) and reports match statistics back to it.

    Only the statistics and errors of policies this server supplied are sent to it; the others
    are handed back at once, so with several servers each one hears about its own policies.
    A failed sync hands its drained statistics back through `stats_return`: nothing is lost.
    """

    kind = "http"

    def __init__(self, config: ProviderConfig, on_update: OnUpdate, *, service: ServiceConfig | None = None,
                 stats_source: StatsSource | None = None, stats_return: StatsReturn | None = None,
                 errors_source: ErrorsSource | None = None, wire: str = JSON, extensions: Sequence[str] = (),
                 timeout: float = 10.0, backoff_base: float = 1.0, rng: random.Random | None = None) -> None:
        super().__init__(config, on_update)
        fields = dataclasses.asdict(service) if service is not None else {}
        self.client = SyncClient(config.url, headers=dict(config.headers), wire=wire, timeout=timeout,
                                 service={k: str(v) for k, v in fields.items()}, extensions=list(extensions))
        self.interval = float(config.poll_interval)  # replaced by the server's recommendation
        self.failures = 0
        self.next_delay = 0.0
        self.backoff_base = backoff_base
        self._rng = rng or random.Random()
        self._stats_source = stats_source or dict
        self._stats_return = stats_return or (lambda counts: None)
        self._errors_source = errors_source or dict
        self._owned: frozenset[str] = frozenset()
        self._delivered: str | None = None
        self._sync_lock = threading.Lock()

    def sync_once(self) -> bool:
        """One sync: report pending stats, apply the answer. False when it failed (stats handed back)."""
        with self._sync_lock:
            result = self._exchange(final=False)
            if result is None:
                return False
            self._apply(result)
            return True

    def final_sync(self, timeout: float = FINAL_SYNC_TIMEOUT_S) -> bool:
        """Report the pending stats one last time (at shutdown); the answer's policies are not applied."""
        if not self._sync_lock.acquire(timeout=timeout):
            log.warning("policy provider %s: final sync skipped, a sync is still running", self.id)
            return False
        try:
            saved, self.client.timeout = self.client.timeout, timeout
            try:
                return self._exchange(final=True) is not None
            finally:
                self.client.timeout = saved
        finally:
            self._sync_lock.release()

    def _exchange(self, final: bool) -> SyncResult | None:
        counts: dict[str, PolicyCounters] = {}
        try:
            counts = self._take_stats()
            errors = {pid: list(errs) for pid, errs in self._errors_source().items() if pid in self._owned}
            result = self.client.sync(statuses(counts, errors))
        except Exception as exc:
            self._give_back(counts)
            self._failed(exc, final)
            return None
        self.failures = 0
        if result.interval_s > 0:
            self.interval = float(result.interval_s)
        self.next_delay = self.interval
        return result

    def _take_stats(self) -> dict[str, PolicyCounters]:
        counts = self._stats_source()
        others = {pid: c for pid, c in counts.items() if pid not in self._owned}
        self._give_back(others)
        return {pid: c for pid, c in counts.items() if pid in self._owned}

    def _give_back(self, counts: dict[str, PolicyCounters]) -> None:
        if counts:
            self._stats_return(counts)

    def _failed(self, exc: Exception, final: bool) -> None:
        self.failures += 1
        self.next_delay = backoff_delay(self.failures, self.backoff_base, max(self.interval, BACKOFF_CAP_MIN_S),
                                        self._rng)
        if not isinstance(exc, SyncError):
            log.error("policy provider %s: sync failed unexpectedly", self.id, exc_info=exc)
        elif final:
            log.warning("policy provider %s: final sync failed: %s", self.id, exc)
        else:
            log.warning("policy provider %s: sync failed: %s; keeping the last good policies, retry in %.1fs",
                        self.id, exc, self.next_delay)

    def _apply(self, result: SyncResult) -> None:
        if result.unchanged:
            return
        version = policies_version(result.policies)
        if version == self._delivered:
            return  # same content under a new hash: nothing to recompile
        for error in result.decode_errors:
            log.warning("policy provider %s: %s", self.id, error)
        try:
            self._on_update(self.id, list(result.policies))
        except Exception:
            self.client.last_hash = ""  # ask for a full sync next time, so the delivery is retried
            raise
        self._delivered = version
        self._owned = frozenset(p.id for p in result.policies)
        log.info("policy provider %s: received %d policies (hash %s)", self.id, len(result.policies),
                 result.hash or "-")

    # ── thread ──

    def _run(self) -> None:
        while not self._stopping.is_set():
            if self._guarded(self.sync_once) is None:
                self.next_delay = max(self.next_delay, 1.0)  # a bug: do not spin
            self._ready.set()
            self._stopping.wait(self.next_delay)


Provider = FileProvider | HttpProvider


class ProviderSet:
    """The configured providers, wired to one merger; started and stopped together."""

    def __init__(self, configs: Sequence[ProviderConfig], merger: PolicyMerger, *,
                 service: ServiceConfig | None = None, stats_source: StatsSource | None = None,
                 stats_return: StatsReturn | None = None, errors_source: ErrorsSource | None = None,
                 wire: str = JSON, extensions: Sequence[str] = (), http_timeout: float = 10.0) -> None:
        self.merger = merger
        for config in configs:
            merger.register(config.id, config.type)
        http_options: Mapping[str, Any] = {
            "service": service, "stats_source": stats_source, "stats_return": stats_return,
            "errors_source": errors_source, "wire": wire, "extensions": extensions, "timeout": http_timeout,
        }
        self.providers: list[Provider] = [
            HttpProvider(c, merger.update, **http_options) if c.type == "http" else FileProvider(c, merger.update)
            for c in configs
        ]

    @property
    def http_providers(self) -> list[HttpProvider]:
        return [p for p in self.providers if isinstance(p, HttpProvider)]

    def start(self) -> None:
        for provider in self.providers:
            provider.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every provider finished its first attempt (useful before starting workers)."""
        deadline = time.monotonic() + timeout
        return all(p.wait_ready(max(deadline - time.monotonic(), 0.0)) for p in self.providers)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop all providers in parallel; a thread stuck in a network call is abandoned (daemon)."""
        for provider in self.providers:
            provider.request_stop()
        deadline = time.monotonic() + timeout
        for provider in self.providers:
            provider.join(deadline - time.monotonic())

    def final_sync(self, timeout: float = FINAL_SYNC_TIMEOUT_S) -> bool:
        """One last stats report to every policy server (call after `stop()`); True when all accepted it."""
        return all([p.final_sync(timeout) for p in self.http_providers])


def start_providers(configs: Sequence[ProviderConfig], merger: PolicyMerger, **options: Any) -> ProviderSet:
    """Build a ProviderSet (options as in its constructor) and start it."""
    providers = ProviderSet(configs, merger, **options)
    providers.start()
    return providers
