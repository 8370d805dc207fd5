"""OTLP/HTTP export from the sampler's event loop: sampled traces, and the rollups' metrics.

`OtlpHttpExporter` takes serialised OTLP export requests of any signal (traces to the traces
upstream, `ExportMetricsServiceRequest`s to `metrics_url`) with the trace ids each one settles.
Serialised protobuf messages concatenate into their merge, so a batch is the queued payloads
joined, up to `batch_bytes` or `batch_delay` after its oldest payload was queued, whichever
comes first; it is gzipped and POSTed as `application/x-protobuf` by one of `senders` tasks.

A batch is retried, with exponential backoff and jitter or after the upstream's `Retry-After`
(seconds or an HTTP date), on connection errors, timeouts, 408, 429 and 5xx. Any other answer
settles it: 2xx is acknowledged, another 4xx is refused for good (logged once per status and
interval with the count, counted as rejected), since sending the same bytes again cannot
change that answer. Either way `on_acked` gets the batch's trace ids: the write-ahead log may
let go of them. Until then a payload counts against `queue_bytes`, and `submit` returns False
when it would not fit (the caller keeps those traces and offers them again later).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gzip
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp

from edge.logs import RateLimitedLog
from edge.tail.forward import backoff_seconds, retry_after_seconds, retryable
from edge.tailsampling.interfaces import AckCallback, TraceId

log = logging.getLogger("edge.tailsampling.export")

BATCH_BYTES = 1 << 20
BATCH_DELAY_S = 0.2
SENDERS = 2
TIMEOUT_S = 30.0
FIRST_BACKOFF_S = 0.2
GZIP_LEVEL = 1  # the sampler is CPU-bound; on protobuf, level 1 already gets most of the ratio


@dataclass(slots=True)
class ExportCounters:
    """What the exporter did, for `/_edge/metrics` (bytes are uncompressed payload bytes)."""

    exported_traces: int = 0
    exported_items: int = 0  # spans, or metric data points
    exported_bytes: int = 0
    requests: int = 0
    retries: int = 0
    rejected_traces: int = 0
    rejected_items: int = 0


@dataclass(slots=True)
class _Payload:
    trace_ids: Sequence[TraceId]
    data: bytes
    items: int
    queued: float  # loop time


@dataclass(slots=True)
class _Batch:
    trace_ids: list[TraceId]
    data: bytes
    items: int


class _Answer(NamedTuple):
    settled: bool  # acknowledged or refused for good
    accepted: bool
    delay: float  # before the next attempt, when not settled
    reason: str


class OtlpHttpExporter:
    """A `TraceExporter` (see the module doc). `start()` and every call run on one event loop."""

    def __init__(self, url: str, on_acked: AckCallback, *, what: str = "traces", queue_bytes: int = 64 << 20,
                 batch_bytes: int = BATCH_BYTES, batch_delay: float = BATCH_DELAY_S, senders: int = SENDERS,
                 timeout: float = TIMEOUT_S, first_backoff: float = FIRST_BACKOFF_S,
                 headers: Mapping[str, str] | None = None) -> None:
        self.url = url
        self.on_acked = on_acked
        self.what = what  # names the data in log lines: "traces", "rollup metrics"
        self.max_queue_bytes = queue_bytes
        self.batch_bytes = batch_bytes
        self.batch_delay = batch_delay
        self.senders = senders
        self.timeout = timeout
        self.first_backoff = first_backoff
        self.headers = {**(headers or {}), "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}
        self.counters = ExportCounters()
        self._log = RateLimitedLog(log)
        self._pending: collections.deque[_Payload] = collections.deque()
        self._pending_bytes = 0
        self._queued_bytes = 0  # pending, batched or in flight: until settled
        self._queued_traces = 0
        self._more = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._batches: asyncio.Queue[_Batch] = asyncio.Queue(maxsize=1)
        self._flushing = False
        self._closed = False
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def queue_bytes(self) -> int:
        """Payload bytes submitted and not yet settled."""
        return self._queued_bytes

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        self._tasks = [asyncio.create_task(self._batch_loop(), name=f"export-{self.what}-batches")]
        self._tasks += [asyncio.create_task(self._send_loop(), name=f"export-{self.what}-{n}")
                        for n in range(self.senders)]

    def submit(self, trace_ids: Sequence[TraceId], payload: bytes, items: int = 0) -> bool:
        if self._closed or (self._queued_bytes and self._queued_bytes + len(payload) > self.max_queue_bytes):
            return False  # an empty queue takes even a payload larger than the bound, or it would never go
        self._pending.append(_Payload(trace_ids, payload, items, asyncio.get_running_loop().time()))
        self._pending_bytes += len(payload)
        self._queued_bytes += len(payload)
        self._queued_traces += len(trace_ids)
        self._idle.clear()
        self._more.set()
        return True

    async def close(self, drain_seconds: float) -> int:
        """Send what is queued, without waiting for batches to fill, for up to `drain_seconds`; then
        stop. Returns how many traces were left unacknowledged (they stay in the write-ahead log)."""
        self._closed = True
        self._flushing = True
        self._more.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_seconds)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
        if self._queued_traces:
            log.warning("%d %s were not acknowledged by %s before shutdown; they are sent again after the restart",
                        self._queued_traces, self.what, self.url)
        return self._queued_traces

    # ── batching ──

    async def _batch_loop(self) -> None:
        while True:
            await self._more.wait()
            while self._pending:
                await self._fill()
                await self._batches.put(self._take())
            self._more.clear()

    async def _fill(self) -> None:
        """Wait until the pending payloads make a full batch, or the oldest waited `batch_delay`."""
        loop = asyncio.get_running_loop()
        while self._pending_bytes < self.batch_bytes and not self._flushing:
            left = self._pending[0].queued + self.batch_delay - loop.time()
            if left <= 0:
                return
            self._more.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._more.wait(), left)

    def _take(self) -> _Batch:
        """The oldest pending payloads, up to `batch_bytes` (at least one)."""
        parts: list[bytes] = []
        batch = _Batch([], b"", 0)
        size = 0
        while self._pending and (not parts or size + len(self._pending[0].data) <= self.batch_bytes):
            payload = self._pending.popleft()
            parts.append(payload.data)
            batch.trace_ids += payload.trace_ids
            batch.items += payload.items
            size += len(payload.data)
        self._pending_bytes -= size
        batch.data = b"".join(parts)
        return batch

    # ── sending ──

    async def _send_loop(self) -> None:
        while True:
            batch = await self._batches.get()
            await self._deliver(batch)

    async def _deliver(self, batch: _Batch) -> None:
        """Send until settled (see the module doc); cancelled by `close` when its drain time is up."""
        body = await asyncio.to_thread(gzip.compress, batch.data, GZIP_LEVEL)
        attempt = 0
        while not (answer := await self._attempt(body, attempt)).settled:
            self.counters.retries += 1
            self._log.log(logging.WARNING, "retry", "sending %d %s to %s failed (%s); retrying in %.2f s",
                          len(batch.trace_ids), self.what, self.url, answer.reason, answer.delay)
            attempt += 1
            await asyncio.sleep(answer.delay)
        self._settle(batch, answer)

    async def _attempt(self, body: bytes, attempt: int) -> _Answer:
        assert self._session is not None, "start() was not called"
        self.counters.requests += 1
        started = time.monotonic()
        try:
            async with self._session.post(self.url, data=body, headers=self.headers) as response:
                await response.read()
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            reason = f"{type(exc).__name__} after {time.monotonic() - started:.1f} s: {exc}"
            return _Answer(False, False, backoff_seconds(attempt, self.first_backoff), reason)
        if 200 <= response.status < 300:
            return _Answer(True, True, 0.0, "")
        reason = f"HTTP {response.status}"
        if not retryable(response.status):
            return _Answer(True, False, 0.0, reason)
        wait = retry_after_seconds(response.headers.get("Retry-After"))
        return _Answer(False, False, wait if wait is not None else backoff_seconds(attempt, self.first_backoff),
                       reason)

    def _settle(self, batch: _Batch, answer: _Answer) -> None:
        c = self.counters
        if answer.accepted:
            c.exported_traces += len(batch.trace_ids)
            c.exported_items += batch.items
            c.exported_bytes += len(batch.data)
        else:
            c.rejected_traces += len(batch.trace_ids)
            c.rejected_items += batch.items
            self._log.log(logging.ERROR, f"refused {answer.reason}", "%s refused %d %s (%s); they are dropped, "
                          "not retried", self.url, len(batch.trace_ids), self.what, answer.reason)
        self._queued_bytes -= len(batch.data)
        self._queued_traces -= len(batch.trace_ids)
        if not self._queued_bytes:
            self._idle.set()
        self.on_acked(batch.trace_ids)
