"""A policy sync server (docs/policies.md §10) as a provider, reporting match statistics back to it.

Each sync reports the statistics gathered since the last one and applies the policies of
the answer. A server that is down keeps the last good policies and is retried with
exponential backoff and full jitter; the statistics of a failed sync are handed back, so
no count is lost.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import threading
from collections.abc import Callable, Sequence

from edge.config import ProviderConfig, ServiceConfig
from edge.control.merger import policies_version
from edge.control.provider_thread import OnErrors, OnUpdate, ProviderThread, fallback
from edge.engine.stats import PolicyCounters
from edge.policy.sync import JSON, SyncClient, SyncError, SyncResult, statuses

log = logging.getLogger("edge.providers")

StatsDrain = Callable[[], dict[str, PolicyCounters]]
StatsReturn = Callable[[dict[str, PolicyCounters]], None]
ErrorsSource = Callable[[], dict[str, list[str]]]

BACKOFF_CAP_MIN_S = 60.0
FINAL_SYNC_TIMEOUT_S = 2.0
SYNC_TIMEOUT_S = 10.0
SYNC_FAILED = "sync failed (the reason is logged)"


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: spreads the retries of many proxies after an outage."""
    bound = min(cap, base * 2 ** min(max(failures, 1) - 1, 62))
    return rng.uniform(0.0, bound)


class HttpProvider(ProviderThread):
    """Polls a policy sync server (docs/policies.md §10) and reports match statistics back to it.

    Only the statistics and errors of policies this server supplied are sent to it; the others
    are handed back at once, so with several servers each one hears about its own policies.
    A failed sync hands its drained statistics back through `stats_return`: nothing is lost.
    """

    kind = "http"

    def __init__(self, config: ProviderConfig, on_update: OnUpdate, *, on_errors: OnErrors | None = None,
                 service: ServiceConfig | None = None,
                 stats_source: StatsDrain | None = None, stats_return: StatsReturn | None = None,
                 errors_source: ErrorsSource | None = None, wire: str = JSON, extensions: Sequence[str] = (),
                 timeout: float = SYNC_TIMEOUT_S, backoff_base: float = 1.0, rng: random.Random | None = None,
                 workspace_id: str = "") -> None:
        super().__init__(config, on_update, on_errors)
        fields = dataclasses.asdict(service) if service is not None else {}
        self.client = SyncClient(config.url, headers=dict(config.headers), wire=wire, timeout=timeout,
                                 service={k: str(v) for k, v in fields.items()}, extensions=list(extensions),
                                 max_response_bytes=config.max_response_bytes, workspace_id=workspace_id)
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
        self._decode_errors: list[str] = []  # policies of the last applied answer that could not be read
        self._sync_lock = threading.Lock()

    def sync_once(self) -> bool:
        """One sync: report pending stats, apply the answer. False when it failed (stats handed back)."""
        with self._sync_lock:
            result = self._exchange(final=False)
            if result is None:
                return False
            self._apply(result)
            self._report_errors(self._decode_errors)
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
            if not final:  # one stable line per outage (the reasons, which vary, are logged): no republish per retry
                self._report_errors([f"{SYNC_FAILED}; {fallback(self._in_force(), 'it answers')}",
                                     *self._decode_errors])
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
            log.warning("policy provider %s: sync failed: %s; %s, retry in %.1fs", self.id, exc,
                        fallback(self._in_force(), "it answers"), self.next_delay)

    def _in_force(self) -> int | None:
        """How many of this provider's policies are in force; None before its first delivery."""
        return len(self._owned) if self._delivered is not None else None

    def _apply(self, result: SyncResult) -> None:
        if result.unchanged:
            return
        version = policies_version(result.policies)
        if version == self._delivered:
            return  # same content under a new hash: nothing to recompile
        for error in result.decode_errors:
            log.warning("policy provider %s: %s", self.id, error)
        self._report_errors(list(result.decode_errors), before_update=True)
        try:
            self._on_update(self.id, list(result.policies))
        except Exception:
            self.client.last_hash = ""  # ask for a full sync next time, so the delivery is retried
            raise
        self._delivered = version
        self._decode_errors = list(result.decode_errors)
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
