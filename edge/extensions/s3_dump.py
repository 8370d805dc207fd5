"""The `com.usetero/s3-dump` extension: selected records go, as NDJSON batches, to an S3 bucket.

`submit` runs on the request path: it serialises the records (one C call each) and
appends them to an open batch under a lock held for microseconds. Everything that can
wait or fail — sealing by age, uploading, retrying — happens in one background thread,
so a slow, failing or unreachable object store never slows or fails a request. The
backlog is bounded (see `batching`); what is given up is counted in the proxy metrics.

Each line is `{"signal", "policy_id", "resource", "scope", "record"}` (the record with its
resource and scope, OTLP/JSON style). A policy's extension config may name the target
(`{"target": {"kind": "s3", "name": "archive"}}` or `{"target": "archive"}`); without
one, the first configured target is used.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Protocol

import orjson

from edge.config import S3DumpConfig
from edge.engine.extensions import S3_DUMP, ExtensionRegistry
from edge.extensions.batching import Batch, Batcher
from edge.extensions.uploader import S3Uploader

log = logging.getLogger(__name__)

EXTENSION_TYPE = S3_DUMP
MAX_ATTEMPTS = 5  # uploads of one batch before it is given up
BACKOFF_S = (1.0, 2.0, 4.0, 8.0)  # wait after the n-th consecutive failure (the last repeats)
STOP_TIMEOUT_S = 5.0  # at shutdown: time left to upload what is queued
DROP_LOG_INTERVAL_S = 10.0  # an outage fails and drops batch after batch: one warning per interval and kind
_MAX_CACHED_CONFIGS = 1024


class DumpCounters(Protocol):
    """Where outcomes are counted (the proxy's Prometheus metrics)."""

    def s3_dump_uploaded(self, records: int, size: int) -> None: ...

    def s3_dump_dropped(self, reason: str, records: int, batches: int = 1) -> None: ...

    def s3_dump_upload_failed(self) -> None: ...


def target_name(config: bytes, default: str) -> str:
    """The target a policy's extension config names, else `default` (an unreadable config too)."""
    try:
        doc = orjson.loads(config) if config else None
    except orjson.JSONDecodeError:
        return default
    target = doc.get("target") if isinstance(doc, dict) else None
    if isinstance(target, dict):
        target = target.get("name")
    return target if isinstance(target, str) and target else default


class S3Dump:
    """The extension handler plus its upload thread (`start`, `flush`, `stop`)."""

    def __init__(self, config: S3DumpConfig, counters: DumpCounters) -> None:
        self.config = config
        self.counters = counters
        self.uploader = S3Uploader(config.targets)
        self.clock = time.monotonic
        self.interval = config.flush_interval_ms / 1000
        self.default_target = config.targets[0].name
        self.target_names = {t.name for t in config.targets}
        self.batcher = Batcher(config.max_batch_bytes, config.max_batch_records, config.max_queued_batches,
                               self._dropped)
        self._cond = threading.Condition()
        self._targets_by_config: dict[bytes, str | None] = {}
        self._thread: threading.Thread | None = None
        self._in_flight: Batch | None = None
        self._retry_at = 0.0
        self._final = False  # stopping: one last attempt per batch, no backoff
        self._stopping = False
        self._closed = False
        self._unlogged_drops = [0, 0]  # batches, records since the last warning
        self._drop_logged_at = self._failure_logged_at = -DROP_LOG_INTERVAL_S

    # ── request path ──

    def submit(self, policy_id: str, signal: str, config: bytes, records: list[dict[str, Any]]) -> None:
        target = self._target(config)
        if target is None:
            self.counters.s3_dump_dropped("unknown_target", len(records), batches=0)
            return
        lines = [orjson.dumps({"signal": signal, "policy_id": policy_id, **r}, option=orjson.OPT_APPEND_NEWLINE)
                 for r in records]
        with self._cond:
            if self._closed:
                self.counters.s3_dump_dropped("shutdown", len(lines), batches=0)
                return
            if self.batcher.add(target, signal, lines, self.clock()):
                self._cond.notify_all()

    def _target(self, config: bytes) -> str | None:
        """Resolved once per distinct config (policies change per snapshot, not per request)."""
        try:
            return self._targets_by_config[config]
        except KeyError:
            pass
        name = target_name(config, self.default_target)
        resolved = name if name in self.target_names else None
        if resolved is None:
            log.warning("s3-dump: a policy names target %r, which is not configured; its records are dropped", name)
        if len(self._targets_by_config) >= _MAX_CACHED_CONFIGS:
            self._targets_by_config.clear()
        self._targets_by_config[config] = resolved
        return resolved

    def _dropped(self, batch: Batch, reason: str) -> None:
        """Count a batch given up (called with the lock held); warn at most once per interval."""
        self.counters.s3_dump_dropped(reason, batch.records)
        self._unlogged_drops[0] += 1
        self._unlogged_drops[1] += batch.records
        if self.clock() - self._drop_logged_at >= DROP_LOG_INTERVAL_S:
            self._log_drops(reason)

    def _log_drops(self, reason: str) -> None:
        batches, records = self._unlogged_drops
        if batches:
            log.warning("s3-dump: dropped %d batches (%d records), the last one because of %s", batches, records,
                        reason)
        self._unlogged_drops = [0, 0]
        self._drop_logged_at = self.clock()

    # ── lifecycle ──

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="s3-dump", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Seal every open batch and wait (at most `timeout`) until all are uploaded or given up."""
        deadline = self.clock() + timeout
        with self._cond:
            self.batcher.seal_all()
            self._retry_at = 0.0
            self._cond.notify_all()
            while self.batcher.ready or self._in_flight is not None:
                left = deadline - self.clock()
                if left <= 0 or self._thread is None or not self._thread.is_alive():
                    return False
                self._cond.wait(left)
        return True

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """One last attempt for every batch within `timeout`; what fails or is left is counted as dropped."""
        with self._cond:
            self._final = True
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._closed = True
            self._cond.notify_all()
            left = self.batcher.take_all()
            if self._in_flight is not None:
                left.append(self._in_flight)
                self._in_flight = None
            for batch in left:
                self._dropped(batch, "shutdown")
            self._log_drops("shutdown")
        if self._thread is not None:
            self._thread.join(0.5)

    # ── upload thread ──

    def _run(self) -> None:
        try:
            self.uploader.prepare()
        except Exception:  # noqa: BLE001 - retried with the first batch, which reports the error
            log.debug("s3-dump: preparing the client failed", exc_info=True)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                key = self.uploader.put(batch)
            except Exception as exc:  # noqa: BLE001 - any failure of the store is retried, then counted
                self._failed(batch, exc)
            else:
                self._uploaded(batch, key)

    def _next_batch(self) -> Batch | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                now = self.clock()
                self.batcher.seal_expired(now, self.interval)
                if self.batcher.ready and now >= self._retry_at:
                    self._in_flight = self.batcher.pop()
                    return self._in_flight
                wake = self.batcher.next_deadline(self.interval)
                if self.batcher.ready:
                    wake = self._retry_at if wake is None else min(wake, self._retry_at)
                self._cond.wait(None if wake is None else max(wake - now, 0.001))

    def _uploaded(self, batch: Batch, key: str) -> None:
        log.debug("s3-dump: uploaded %d %s records (%d bytes) to %s", batch.records, batch.signal, batch.size, key)
        with self._cond:
            if self._in_flight is not batch:  # stop() gave up on it meanwhile and counted it
                return
            self._in_flight = None
            self._retry_at = 0.0
            self.counters.s3_dump_uploaded(batch.records, batch.size)
            self._cond.notify_all()

    def _failed(self, batch: Batch, exc: Exception) -> None:
        self.counters.s3_dump_upload_failed()
        batch.attempts += 1
        given_up = batch.attempts >= MAX_ATTEMPTS or self._final
        if self.clock() - self._failure_logged_at >= DROP_LOG_INTERVAL_S:  # an outage fails every batch
            self._failure_logged_at = self.clock()
            log.warning("s3-dump: upload to target %s failed (attempt %d of %d): %s", batch.target, batch.attempts,
                        MAX_ATTEMPTS, exc)
        with self._cond:
            if self._in_flight is not batch:
                return
            self._in_flight = None
            if given_up:
                self._dropped(batch, "upload_failed")
            else:
                self._retry_at = self.clock() + BACKOFF_S[min(batch.attempts, len(BACKOFF_S)) - 1]
                self.batcher.requeue(batch)
            self._cond.notify_all()


def register_s3_dump(config: S3DumpConfig, registry: ExtensionRegistry, counters: DumpCounters) -> S3Dump | None:
    """When `s3_dump.enabled`, create the handler and register it for `com.usetero/s3-dump` (not started)."""
    if not config.enabled:
        return None
    handler = S3Dump(config, counters)
    registry.register(EXTENSION_TYPE, handler)
    return handler
