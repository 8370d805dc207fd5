"""Forwarding kept lines as OTLP/HTTP log batches instead of writing them.

Each block of lines is parsed into records when the tailer hands it over (`edge.tail.otlp`
for the line format: raw → the line as body; json/logfmt/regex → parsed time, severity,
body, trace context and attributes), and its records accumulate into batches of at most
`batch_lines` (or `batch_interval_ms` after a batch's first record). Urgent records
(errors and worse, `edge.tail.priority`) go into batches of their own. Each sealed batch
is encoded (protobuf or JSON), gzipped and POSTed by one aiohttp session running in a
background thread, one at a time: the oldest urgent batch first, else the oldest other
one, so when the target falls behind the errors of the backlog reach it first. A batch is
retried until the target answers 2xx: exponential backoff with jitter from
`--retry-backoff-ms`, or the target's `Retry-After` when it gives one, each attempt bounded
by `--http-timeout-s`; after a failed attempt an urgent batch sealed meanwhile goes before
the retry. A batch the target refuses for good (a 4xx other than 408 and 429), or one
still failing after `--max-retries` retries, is written to the dead-letter directory in the
state dir and logged once: it is set aside, not dropped, and reading goes on. On SIGTERM,
batches still failing are given up after `DRAIN_S` (their checkpoints stay behind them, so
they are sent again on the next start); at the end of stdin, which has no checkpoint,
after `EOF_DRAIN_S`.

While `max_queued` batches (`--max-buffer-records` in whole batches) wait, `ready()` is
false and the tailer stops reading (backpressure). Positions are reported delivered only
when every record before them is acknowledged (or set aside), whatever order the batches
went in (`edge.tail.ledger`), so checkpoints never pass unsent lines; urgent records
acknowledged beyond a checkpoint are counted there and not sent again after a restart.

Every record carries the attribute `log.file.path`; the resource carries `--resource` pairs
and the Kubernetes downward-API variables (`POD_NAME`, `NAMESPACE`, `SERVICE_NAME`).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import enum
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

from edge.formats.lines.records import Record
from edge.logs import redact
from edge.tail.ledger import AheadDelivered, Ledger, Ticket
from edge.tail.otlp import Parser, encoder, record_parser
from edge.tail.output import Position
from edge.tail.priority import is_urgent
from edge.tail.reader import FileKey, display

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
    """Records of one request, grouped by source file, and the tickets whose records they are."""

    urgent: bool = False
    groups: list[tuple[str, list[Record]]] = field(default_factory=list)
    count: int = 0
    parts: dict[Ticket, tuple[int, int]] = field(default_factory=dict)  # ticket → its (records, urgent) here
    started: float = 0.0
    attempts: int = 0  # failed sends so far
    body: bytes = b""  # encoded and gzipped at the first attempt

    def add(self, source: str, records: list[Record], ticket: Ticket, urgent: int) -> None:
        if self.groups and self.groups[-1][0] == source:
            self.groups[-1][1].extend(records)
        else:
            self.groups.append((source, records))
        self.count += len(records)
        count, urgent_before = self.parts.get(ticket, (0, 0))
        self.parts[ticket] = (count + len(records), urgent_before + urgent)


class Outcome(enum.Enum):
    """How one turn of sending a batch ended."""

    DONE = "acknowledged or set aside"
    PREEMPTED = "failed, and an urgent batch waits: it goes first"
    GIVE_UP = "shutdown's drain time ran out"


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
                 resource: Mapping[str, str], on_delivered: AheadDelivered, wakeup: threading.Event,
                 parse: Parser | None = None, delivery: Delivery | None = None,
                 stop: threading.Event | None = None, max_queued: int = MAX_QUEUED) -> None:
        self.url = url
        self.max_queued = max_queued
        self.stop = stop or threading.Event()
        self.delivery = delivery or Delivery()
        self.encode, self.content_type = encoder(fmt)
        self.parse = parse or record_parser("raw")
        self.batch_lines = batch_lines
        self.interval = batch_interval_ms / 1000
        self.resource = {display(k): display(v) for k, v in resource.items()}  # environment values may not be UTF-8
        self.ledger = Ledger(on_delivered)
        self.skips: dict[FileKey, int] = {}  # urgent records to skip per file: acknowledged before a restart
        self.wakeup = wakeup
        self.current = (Batch(urgent=False), Batch(urgent=True))  # indexed by urgency
        self.sealed: tuple[collections.deque[Batch], ...] = (collections.deque(), collections.deque())
        self.lock = threading.Lock()
        self.more = threading.Event()
        self.stopping = threading.Event()
        self.give_up_at: float | None = None
        self.thread = threading.Thread(target=self._thread_main, name="edge-tail-forward", daemon=True)
        self.thread.start()

    # ── the tailer's side ──

    def resume(self, position: Position, ahead: int) -> None:
        """A file is read from `position`, and its first `ahead` urgent records were acknowledged before."""
        self.ledger.start(position)
        key = position[0].key
        if ahead:
            self.skips[key] = ahead
        else:
            self.skips.pop(key, None)

    def write(self, data: bytes, lines: int, source: str, position: Position | None,
              records: list[bytes] | None = None) -> None:
        if records is None:
            records = data.split(b"\n") if data else []
            if records and not records[-1]:
                records.pop()
        parsed = self.parse(records) if records else []
        urgent = list(map(is_urgent, parsed))
        skipped = self._skip(parsed, urgent, position) if position is not None and self.skips else 0
        urgent_count = sum(urgent)
        ticket = self.ledger.open(position, len(parsed), urgent_count, skipped)
        if urgent_count and self._backlogged():
            self._add(source, [r for r, u in zip(parsed, urgent, strict=True) if u], None, ticket, True)
            self._add(source, [r for r, u in zip(parsed, urgent, strict=True) if not u], None, ticket, False)
        elif parsed:
            self._add(source, parsed, urgent if urgent_count else None, ticket, False)

    def _backlogged(self) -> bool:
        """Whether the target is behind: a sealed batch is still waiting or in flight. Only then do
        urgent records take their own batches; otherwise every record keeps its place."""
        with self.lock:
            return bool(self.sealed[False] or self.sealed[True])

    def _skip(self, parsed: list[Record], urgent: list[bool], position: Position) -> int:
        """Drop the urgent records a restart must not send again (see `resume`); how many were dropped."""
        key = position[0].key
        left = self.skips.get(key, 0)
        if not left or not any(urgent):
            return 0
        keep = []
        for i, flag in enumerate(urgent):
            if flag and left:
                left -= 1
            else:
                keep.append(i)
        skipped = self.skips[key] - left
        self.skips[key] = left
        parsed[:] = [parsed[i] for i in keep]
        urgent[:] = [urgent[i] for i in keep]
        return skipped

    def _add(self, source: str, records: list[Record], flags: list[bool] | None, ticket: Ticket,
             lane: bool) -> None:
        """Append to the open batch of the urgent `lane` or the other, sealing each one that fills up.

        `flags`: which of `records` are urgent when they share the other lane (None: all of the urgent
        lane are, none of the other lane's)."""
        start = 0
        while start < len(records):
            batch = self.current[lane]
            if not batch.count:
                batch.started = time.monotonic()
            end = start + self.batch_lines - batch.count
            urgent = sum(flags[start:end]) if flags is not None else len(records[start:end]) if lane else 0
            batch.add(source, records[start:end], ticket, urgent)
            start = end
            if batch.count >= self.batch_lines:
                self._seal(lane)

    def deadline(self) -> float | None:
        started = [b.started for b in self.current if b.started]
        return min(started) + self.interval if started else None

    def flush(self) -> None:
        """Seal the open batches now (they are sent in the background)."""
        self._seal(True)
        self._seal(False)

    def ready(self) -> bool:
        with self.lock:
            return len(self.sealed[False]) + len(self.sealed[True]) < self.max_queued

    def close(self, drain_s: float | None = None) -> None:
        """Seal what is open and wait up to `drain_s` (by default as the module doc says) for every batch."""
        if drain_s is None:
            drain_s = DRAIN_S if self.stop.is_set() else EOF_DRAIN_S
        self.flush()
        self.give_up_at = time.monotonic() + drain_s
        self.stopping.set()
        self.more.set()
        self.thread.join(drain_s + 5)
        left = sum(b.count for queue in self.sealed for b in queue)
        if left:
            log.warning("%d forwarded lines were not acknowledged before shutdown; their checkpoints were "
                        "not advanced, so they are sent again on the next start", left)

    def _seal(self, urgent: bool) -> None:
        """Seal the open batch of one urgency; a normal batch seals the open urgent one first, so that a
        normal record never goes out before an urgent record read ahead of it."""
        batch = self.current[urgent]
        if not urgent and self.current[True].count:
            self._seal(True)
        if not batch.count:
            return
        fresh = Batch(urgent=urgent)
        self.current = (self.current[0], fresh) if urgent else (fresh, self.current[1])
        with self.lock:
            self.sealed[urgent].append(batch)
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

    def _next(self) -> Batch | None:
        """The oldest urgent batch, else the oldest other one."""
        with self.lock:
            queue = self.sealed[True] or self.sealed[False]
            return queue[0] if queue else None

    async def _send_loop(self) -> None:
        await self.check_connectivity()
        timeout = aiohttp.ClientTimeout(total=self.delivery.http_timeout_s)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                batch = self._next()
                if batch is None:
                    if self.stopping.is_set():
                        return
                    await asyncio.to_thread(self.more.wait, 0.5)
                    self.more.clear()
                    continue
                outcome = await self._deliver(session, batch)
                if outcome is Outcome.GIVE_UP:
                    return  # shutting down with the target still failing
                if outcome is Outcome.DONE:
                    with self.lock:
                        self.sealed[batch.urgent].popleft()
                    self.ledger.acknowledged(batch.parts)
                    self.wakeup.set()

    async def _deliver(self, session: aiohttp.ClientSession, batch: Batch) -> Outcome:
        """Send until acknowledged or set aside, or until an urgent batch should overtake this one."""
        if not batch.body:
            encoded = self.encode(batch.groups, self.resource, time.time_ns())
            batch.body = gzip.compress(encoded, compresslevel=5)
        headers = {"Content-Type": self.content_type, "Content-Encoding": "gzip"}
        while True:
            outcome = await self._bounded(self._attempt(session, batch.body, headers, batch.count, batch.attempts))
            if outcome is None:
                return Outcome.GIVE_UP
            delay, reason, final = outcome
            if delay is None:
                return Outcome.DONE
            retries = self.delivery.max_retries
            exhausted = retries is not None and batch.attempts >= retries
            if (final or exhausted) and self._set_aside(batch.body, batch.count, reason, final):
                return Outcome.DONE
            batch.attempts += 1
            if self.give_up_at is not None and time.monotonic() + delay > self.give_up_at:
                return Outcome.GIVE_UP
            await asyncio.sleep(delay)
            if not batch.urgent and self._next() is not batch:
                return Outcome.PREEMPTED

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
