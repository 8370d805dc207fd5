"""Forwarding kept lines as OTLP/HTTP log batches instead of writing them.

Lines accumulate into a batch of at most `batch_lines` records (or `batch_interval_ms`
after its first record); each sealed batch is encoded (protobuf or JSON), gzipped and
POSTed by one aiohttp session running in a background thread. Batches are sent one at
a time, in order, and a batch is retried until the target answers 2xx: exponential
backoff with jitter from `--retry-backoff-ms`, or the target's `Retry-After` when it gives
one, each attempt bounded by `--http-timeout-s`. A batch the target refuses for good (a 4xx
other than 408 and 429), or one still failing after `--max-retries` retries, is written to
the dead-letter directory in the state dir and logged once: it is set aside, not dropped,
and reading goes on. On SIGTERM, batches still failing are given up after `DRAIN_S`
(their checkpoints stay behind them, so they are sent again on the next start); at the
end of stdin, which has no checkpoint, after `EOF_DRAIN_S`.
While `max_queued` batches (`--max-buffer-records` in whole batches) wait, `ready()` is false and the tailer stops
reading (backpressure); positions are reported delivered only when the batch holding
their lines is acknowledged (or set aside), so checkpoints never pass unsent lines.

Each line becomes one record as `edge.tail.otlp` encodes it for the line format (raw: the
line as body; json/logfmt: parsed time, severity, body, trace context and attributes),
with the attribute `log.file.path`; the resource carries `--resource` pairs and the
Kubernetes downward-API variables (`POD_NAME`, `NAMESPACE`, `SERVICE_NAME`).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import gzip
import logging
import os
import random
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from edge.logs import redact
from edge.tail.otlp import ENCODERS, Parser, record_parser
from edge.tail.output import Delivered, Position
from edge.tail.reader import display

log = logging.getLogger("edge.tail")

MAX_QUEUED = 4  # sealed batches waiting or in flight before reading pauses, by default
BACKOFF_MAX_S = 30.0
RETRY_AFTER_MAX_S = 300.0
DRAIN_S = 1.0  # SIGTERM with the target down still exits within 2 s (the rest of shutdown included)
EOF_DRAIN_S = 10.0
DEAD_LETTER_DIR = "dead-letter"
CONNECT_CHECK_S = 5.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """How hard a batch is pushed: per-request timeout, first backoff, retries (None = forever), dead letters."""

    http_timeout_s: float = 30.0
    retry_backoff_s: float = 0.1
    max_retries: int | None = None
    dead_letter_dir: str = ""


def retryable(status: int) -> bool:
    """Whether a non-2xx answer may succeed later: 5xx, 408 and 429 yes, other 4xx never."""
    return status >= 500 or status in (408, 429) or status < 400


@dataclass(slots=True)
class Batch:
    """Lines of one request, grouped by source file, and the positions they complete."""

    groups: list[tuple[str, list[bytes]]] = field(default_factory=list)
    count: int = 0
    positions: dict[tuple[int, int], Position] = field(default_factory=dict)
    started: float = 0.0

    def add(self, source: str, lines: list[bytes]) -> None:
        if self.groups and self.groups[-1][0] == source:
            self.groups[-1][1].extend(lines)
        else:
            self.groups.append((source, lines))
        self.count += len(lines)


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header (seconds or an HTTP date) as seconds from now, capped."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX_S)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, min(when.timestamp() - time.time(), RETRY_AFTER_MAX_S))


def backoff_seconds(attempt: int, first: float = 0.1) -> float:
    """Exponential backoff with jitter: a random delay in [d/2, d], d doubling from `first`."""
    delay = min(BACKOFF_MAX_S, first * (2 ** min(attempt, 20)))
    return random.uniform(delay / 2, delay)


def write_dead_letter(directory: str, body: bytes, reason: str, content_type: str) -> str:
    """The gzipped request body as one file (the name says when and why); returns its path."""
    os.makedirs(directory, exist_ok=True)
    suffix = "json.gz" if content_type == "application/json" else "pb.gz"
    path = os.path.join(directory, f"{time.time_ns()}-{reason.replace(' ', '-')}.otlp.{suffix}")
    with open(path, "xb") as f:
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    return path


class ForwardSink:
    """The `Sink` that POSTs OTLP log batches (see the module doc)."""

    def __init__(self, url: str, *, fmt: str, batch_lines: int, batch_interval_ms: int,
                 resource: Mapping[str, str], on_delivered: Delivered, wakeup: threading.Event,
                 parse: Parser | None = None, delivery: Delivery | None = None,
                 stop: threading.Event | None = None, max_queued: int = MAX_QUEUED) -> None:
        self.url = url
        self.max_queued = max_queued
        self.stop = stop or threading.Event()
        self.delivery = delivery or Delivery()
        self.encode, self.content_type = ENCODERS[fmt]
        self.parse = parse or record_parser("raw")
        self.batch_lines = batch_lines
        self.interval = batch_interval_ms / 1000
        self.resource = {display(k): display(v) for k, v in resource.items()}  # environment values may not be UTF-8
        self.on_delivered = on_delivered
        self.wakeup = wakeup
        self.current = Batch()
        self.sealed: collections.deque[Batch] = collections.deque()  # waiting or in flight, oldest first
        self.lock = threading.Lock()
        self.more = threading.Event()
        self.stopping = threading.Event()
        self.give_up_at: float | None = None
        self.thread = threading.Thread(target=self._thread_main, name="edge-tail-forward", daemon=True)
        self.thread.start()

    # ── the tailer's side ──

    def write(self, data: bytes, lines: int, source: str, position: Position | None) -> None:
        if data:
            records = data.split(b"\n")
            if not records[-1]:
                records.pop()
            start = 0
            while start < len(records):
                if not self.current.count:
                    self.current.started = time.monotonic()
                room = self.batch_lines - self.current.count
                self.current.add(source, records[start:start + room])
                start += room
                if self.current.count >= self.batch_lines:
                    self._seal()
        if position is not None:
            identity = position[0]
            self.current.positions[(identity.device, identity.inode)] = position
            if not self.current.started:
                self.current.started = time.monotonic()

    def deadline(self) -> float | None:
        return self.current.started + self.interval if self.current.started else None

    def flush(self) -> None:
        """Seal the open batch now (it is sent in the background)."""
        if self.current.count or self.current.positions:
            self._seal()

    def ready(self) -> bool:
        with self.lock:
            return len(self.sealed) < self.max_queued

    def pending(self) -> int:
        with self.lock:
            return len(self.sealed)

    def close(self, drain_s: float | None = None) -> None:
        """Seal what is open and wait up to `drain_s` (by default as the module doc says) for every batch."""
        if drain_s is None:
            drain_s = DRAIN_S if self.stop.is_set() else EOF_DRAIN_S
        self.flush()
        self.give_up_at = time.monotonic() + drain_s
        self.stopping.set()
        self.more.set()
        self.thread.join(drain_s + 5)
        left = sum(b.count for b in self.sealed)
        if left:
            log.warning("%d forwarded lines were not acknowledged before shutdown; their checkpoints were "
                        "not advanced, so they are sent again on the next start", left)

    def _seal(self) -> None:
        batch, self.current = self.current, Batch()
        with self.lock:
            self.sealed.append(batch)
        self.more.set()

    # ── the sender thread ──

    def _thread_main(self) -> None:
        asyncio.run(self._send_loop())

    async def check_connectivity(self) -> None:
        """One TCP connection to the target at start-up, its outcome logged (a warning, never an exit).

        A plain connect, not a request: it sends the target nothing, so it counts no request
        and needs no credentials, yet tells a wrong host or port from the start.
        """
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        where = f"{parts.hostname}:{port}"
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port),
                                               min(CONNECT_CHECK_S, self.delivery.http_timeout_s))
        except (OSError, TimeoutError) as exc:
            log.warning("forward target %s is not reachable at start-up (%s: %s); lines wait until it is",
                        redact(self.url), type(exc).__name__, exc)
            return
        writer.close()
        log.info("forward target %s reachable at %s", redact(self.url), where)

    async def _send_loop(self) -> None:
        await self.check_connectivity()
        timeout = aiohttp.ClientTimeout(total=self.delivery.http_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                with self.lock:
                    batch = self.sealed[0] if self.sealed else None
                if batch is None:
                    if self.stopping.is_set():
                        return
                    await asyncio.to_thread(self.more.wait, 0.5)
                    self.more.clear()
                    continue
                if not await self._deliver(session, batch):
                    return  # shutting down with the target still failing
                with self.lock:
                    self.sealed.popleft()
                if batch.positions:
                    self.on_delivered(list(batch.positions.values()))
                self.wakeup.set()

    async def _deliver(self, session: aiohttp.ClientSession, batch: Batch) -> bool:
        """Send until acknowledged or set aside; False only when shutdown's drain time ran out first."""
        if not batch.count:
            return True
        body = gzip.compress(self.encode(batch.groups, self.parse, self.resource, time.time_ns()), compresslevel=5)
        headers = {"Content-Type": self.content_type, "Content-Encoding": "gzip"}
        attempt = 0
        while True:
            outcome = await self._bounded(self._attempt(session, body, headers, batch.count, attempt))
            if outcome is None:
                return False
            delay, reason, final = outcome
            if delay is None:
                return True
            retries = self.delivery.max_retries
            exhausted = retries is not None and attempt >= retries
            if (final or exhausted) and self._set_aside(body, batch.count, reason, final):
                return True
            attempt += 1
            if self.give_up_at is not None and time.monotonic() + delay > self.give_up_at:
                return False
            await asyncio.sleep(delay)

    async def _bounded(self, attempt: Any) -> Any:
        """The attempt's outcome, or None when shutdown's drain time ends while it is in flight."""
        task = asyncio.ensure_future(attempt)
        while not task.done():
            await asyncio.wait([task], timeout=0.1)
            if not task.done() and self.give_up_at is not None and time.monotonic() > self.give_up_at:
                task.cancel()
                return None
        return task.result()

    def _set_aside(self, body: bytes, count: int, reason: str, final: bool) -> bool:
        """Write a batch that will not be accepted to the dead-letter directory; True when it is safely there."""
        why = "the target refused it" if final else f"still failing after {self.delivery.max_retries} retries"
        try:
            path = write_dead_letter(self.delivery.dead_letter_dir, body, reason, self.content_type)
        except OSError as exc:
            log.error("cannot write the dead-letter file for %d lines (%s): %s; retrying the batch",
                      count, reason, exc.strerror or exc)
            return False
        log.error("%d lines not delivered to %s (%s, %s); the batch is in %s", count, self.url, reason, why, path)
        return True

    async def _attempt(self, session: aiohttp.ClientSession, body: bytes, headers: dict[str, str],
                       count: int, attempt: int) -> tuple[float | None, str, bool]:
        """One POST: (None, "", False) when acknowledged, else (wait before the next try, reason, refused for good)."""
        try:
            async with session.post(self.url, data=body, headers=headers) as response:
                await response.read()
                if 200 <= response.status < 300:
                    if attempt:
                        log.info("forward target %s accepts again after %d retries", self.url, attempt)
                    return None, "", False
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                reason = f"HTTP {response.status}"
                if not retryable(response.status):
                    return 0.0, reason, True
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            wait, reason = None, f"{type(exc).__name__}: {exc}"
        delay = wait if wait is not None else backoff_seconds(attempt, self.delivery.retry_backoff_s)
        log.warning("forwarding %d lines to %s failed (%s); retrying in %.2f s", count, self.url, reason, delay)
        return delay, reason, False
