"""The tail sampler's core: submissions in, whole-trace decisions out, nothing acknowledged ever lost.

A submission is routed first (fragments another instance owns go to it, unless they came
from a peer or their trace is already buffered here), then written to the write-ahead log,
and only then acknowledged; the buffer holds it until its trace is due. `tick` decides the
due traces: sampled ones are queued for the traces exporter, the others are added to the
span rollup. A trace leaves the log (`done`) only once the upstream acknowledged its
export, or once the rollup holding its spans went out.

Everything here runs on the sampler process's one event loop. The log's appends are plain
writes to the page cache whose fsyncs run in the log's own thread (`wal_fsync: interval`,
`never`); only under `always` does each submission wait for its fsync.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from edge.tailsampling.buffer import Arrival, BufferedTrace, HeldLogs, TraceBuffer
from edge.tailsampling.channel import Submission
from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import (
    Ack,
    Replayed,
    Signal,
    SpanRollup,
    TraceDecider,
    TraceExporter,
    TraceFragment,
    TraceId,
    WalFull,
    WriteAheadLog,
)
from edge.tailsampling.routing import Routing
from edge.tailsampling.spans import span_count
from edge.tailsampling.stats import SamplerStats

log = logging.getLogger(__name__)


# Spans without a trace id share the id UNTRACED; each such fragment is logged under a key of its own
# (this prefix and a counter), so the log lets go of each one when its own export is acknowledged.
UNTRACED_PREFIX = b"untraced"
# Log records following a trace (`logs.follow_traces`) are logged under keys of their own too, their
# trace id leading their records in the log, so that they leave the log apart from their trace's spans.
LOGS_PREFIX = b"heldlogs"


class OwnKeys:
    """Keys of the log no random trace id starts with: a prefix and a counter not reused by a restart."""

    def __init__(self, prefix: bytes) -> None:
        self.prefix = prefix
        self.counter = itertools.count(time.time_ns())

    def next(self) -> TraceId:
        return self.prefix + (next(self.counter) % (1 << 64)).to_bytes(8, "big")


def is_untraced(trace_id: TraceId) -> bool:
    return trace_id.startswith(UNTRACED_PREFIX)


def is_logs(key: TraceId) -> bool:
    return key.startswith(LOGS_PREFIX)


class Decided(NamedTuple):
    """A trace decided sampled, waiting for the exporter's queue to take it."""

    trace_id: TraceId
    payloads: Sequence[bytes]
    spans: int


class Unsettled:
    """How many parts of each trace were handed to an exporter (or the rollup) and not acknowledged yet.

    A `done` mark lets the log drop everything it holds for a trace, so it is written only when the
    last part is acknowledged: a late span can follow its trace while the first export is in flight,
    and that export's acknowledgement must not let the late span go before it is sent."""

    def __init__(self) -> None:
        self.parts: Counter[TraceId] = Counter()

    def add(self, trace_id: TraceId) -> None:
        self.parts[trace_id] += 1

    def settle(self, trace_ids: Sequence[TraceId]) -> list[TraceId]:
        """The ids among `trace_ids` (one per acknowledged part) with nothing left unacknowledged."""
        settled = []
        for trace_id in trace_ids:
            left = self.parts[trace_id] - 1
            if left > 0:
                self.parts[trace_id] = left
            else:
                del self.parts[trace_id]
                settled.append(trace_id)
        return settled


class Outbox:
    """Sampled traces in order, each handed to the exporter (which batches them) as one payload.

    The exporter's queue is bounded and refuses when full: what it refused stays here and is
    offered again at the next tick, still in the log until the upstream has it."""

    def __init__(self, unsettled: Unsettled) -> None:
        self.traces: deque[Decided] = deque()
        self.unsettled = unsettled

    def add(self, trace_id: TraceId, payloads: Sequence[bytes], spans: int) -> None:
        self.unsettled.add(trace_id)
        self.traces.append(Decided(trace_id, payloads, spans))

    def __len__(self) -> int:
        return len(self.traces)

    def flush(self, exporter: TraceExporter) -> None:
        while self.traces:
            trace = self.traces[0]
            if not exporter.submit([trace.trace_id], b"".join(trace.payloads), trace.spans):
                return
            self.traces.popleft()


@dataclass
class PendingRollup:
    """Not-sampled traces whose spans are in the rollup, and a collected rollup the exporter has not taken yet."""

    trace_ids: list[TraceId] = field(default_factory=list)
    collected: bytes | None = None
    collected_ids: list[TraceId] = field(default_factory=list)


class TailSampler:
    """Buffer, decide, export and roll up, with the write-ahead log behind every acknowledgement."""

    def __init__(self, *, wal: WriteAheadLog, decider: TraceDecider, rollup: SpanRollup, exporter: TraceExporter,
                 rollup_exporter: TraceExporter, logs_exporter: TraceExporter, buffer: TraceBuffer,
                 decision_wait: float, stats: SamplerStats, routing: Routing | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.wal = wal
        self.decider = decider
        self.rollup = rollup
        self.exporter = exporter
        self.rollup_exporter = rollup_exporter
        self.logs_exporter = logs_exporter
        self.buffer = buffer
        self.decision_wait = decision_wait
        self.stats = stats
        self.routing = routing
        self.clock = clock
        self.unsettled = Unsettled()
        self.outbox = Outbox(self.unsettled)
        self.logs_outbox = Outbox(self.unsettled)
        self.rollups = PendingRollup()
        self.untraced_keys = OwnKeys(UNTRACED_PREFIX)
        self.logs_keys = OwnKeys(LOGS_PREFIX)
        self.accepting = True

    # ── submissions ──

    async def handle(self, fragments: list[TraceFragment], kind: Submission) -> Ack:
        """A worker's submission, as the channel hands it over."""
        if kind in (Submission.LOGS, Submission.FORWARDED_LOGS):
            return await self.route_logs(fragments, kind is Submission.FORWARDED_LOGS)
        return await self.submit(fragments, kind is Submission.FORWARDED)

    async def submit(self, fragments: list[TraceFragment], forwarded: bool) -> Ack:
        """Route, log, buffer; ACCEPTED once the fragments kept here are in the log."""
        if not self.accepting:
            return Ack.UNAVAILABLE
        if self.routing is not None:
            fragments = await self.routing.keep_here(fragments, forwarded, self.buffer)
        if not fragments:
            return Ack.ACCEPTED
        fragments = [self._own_key(f) for f in fragments]
        now = self.clock()
        try:
            self.wal.append(fragments, now)
        except WalFull:
            self.stats.wal_full()
            return Ack.WAL_FULL
        for fragment in fragments:
            self._take(fragment, now)
        self._decide_early()
        return Ack.ACCEPTED

    def _own_key(self, fragment: TraceFragment) -> TraceFragment:
        if fragment.trace_id != UNTRACED:
            return fragment
        return TraceFragment(self.untraced_keys.next(), fragment.payload, fragment.spans)

    async def route_logs(self, fragments: list[TraceFragment], forwarded: bool) -> Ack:
        """Log records by trace id, routed as spans are (those of a trace another instance owns and this one
        does not buffer go to the owner, which holds them with the trace), then `submit_logs` for the rest."""
        if not self.accepting:
            return Ack.UNAVAILABLE
        if self.routing is not None:
            fragments = await self.routing.keep_here(fragments, forwarded, self.buffer, Signal.LOGS)
        return self.submit_logs(fragments) if fragments else Ack.ACCEPTED

    def submit_logs(self, fragments: list[TraceFragment]) -> Ack:
        """Log records by trace id: held with their trace while it is buffered, dropped when it was decided
        not sampled (and a cache remembers it), else passed on at once; ACCEPTED once logged."""
        if not self.accepting:
            return Ack.UNAVAILABLE
        kept: list[tuple[TraceFragment, TraceId, bool]] = []  # records, their key, held with their trace
        for fragment in fragments:
            traced = fragment.trace_id != UNTRACED
            if traced and fragment.trace_id not in self.buffer and self.buffer.cache.follow(fragment.trace_id) is False:
                self.stats.logs("dropped", fragment.spans)
                continue
            kept.append((fragment, self.logs_keys.next(), traced and fragment.trace_id in self.buffer))
        if not kept:
            return Ack.ACCEPTED
        try:
            self.wal.append([TraceFragment(key, f.trace_id + f.payload, f.spans) for f, key, _ in kept], self.clock())
        except WalFull:
            self.stats.wal_full()
            return Ack.WAL_FULL
        for fragment, key, held in kept:
            if held:
                self.buffer.hold(fragment.trace_id, HeldLogs(key, fragment.payload, fragment.spans))
                self.stats.logs("held", fragment.spans)
            else:
                self._pass_logs(HeldLogs(key, fragment.payload, fragment.spans))
                self.stats.logs("passed", fragment.spans)
        self._decide_early()
        return Ack.ACCEPTED

    def _pass_logs(self, logs: HeldLogs) -> None:
        self.wal.decided(logs.key, True)
        self.logs_outbox.add(logs.key, [logs.payload], logs.records)

    def _release_logs(self, held: list[HeldLogs], sampled: bool) -> None:
        """A decided trace's log records: on with it, or dropped with it."""
        records = sum(logs.records for logs in held)
        if sampled:
            for logs in held:
                self._pass_logs(logs)
        else:
            self.wal.done([logs.key for logs in held])
        self.stats.logs("sampled" if sampled else "dropped", records)

    def _take(self, fragment: TraceFragment, now: float) -> None:
        if is_untraced(fragment.trace_id):  # nothing to group it with: decided (passed through) at once
            self._decide(fragment.trace_id, BufferedTrace(now, [fragment.payload], fragment.spans,
                                                          len(fragment.payload)))
            return
        arrival = self.buffer.add(fragment, now)
        if arrival is Arrival.BUFFERED:
            return
        self.stats.late(arrival, fragment.spans)
        if arrival is Arrival.FOLLOWS_SAMPLED:
            self.wal.decided(fragment.trace_id, True)
            self.outbox.add(fragment.trace_id, [fragment.payload], fragment.spans)
        elif arrival is Arrival.FOLLOWS_NOT_SAMPLED:
            self.wal.decided(fragment.trace_id, False)
            self._roll_up(fragment.trace_id, [fragment.payload])

    # ── decisions ──

    def tick(self) -> None:
        """Decide every due trace and hand what is decided to the exporters (about twenty times a second)."""
        for trace_id, trace in self.buffer.due(self.clock() - self.decision_wait):
            self._decide(trace_id, trace)
        self._decide_early()
        self.flush()

    def _decide_early(self) -> None:
        for trace_id, trace, bound in self.buffer.over_bounds():
            self.stats.early_decision(bound)
            self._decide(trace_id, trace)

    def _decide(self, trace_id: TraceId, trace: BufferedTrace) -> None:
        try:
            sampled, policy = self.decider.decide(UNTRACED if is_untraced(trace_id) else trace_id, trace.payloads)
        except Exception:  # noqa: BLE001 - one trace the decider cannot read must not stop the others
            log.exception("deciding a trace failed; it is sampled")
            sampled, policy = True, "(error)"
        self._decided(trace_id, trace, sampled, policy)

    def _decided(self, trace_id: TraceId, trace: BufferedTrace, sampled: bool, policy: str) -> None:
        self.wal.decided(trace_id, sampled)
        if not is_untraced(trace_id):  # its id is its own: no span can arrive late for it
            self.buffer.cache.record(trace_id, sampled)
        self.stats.decision(policy, sampled, trace.spans)
        if sampled:
            self.outbox.add(trace_id, trace.payloads, trace.spans)
        else:
            self._roll_up(trace_id, trace.payloads)
        if trace.logs:
            self._release_logs(trace.logs, sampled)

    def _roll_up(self, trace_id: TraceId, payloads: Sequence[bytes]) -> None:
        self.unsettled.add(trace_id)
        self.rollup.add(payloads)
        self.rollups.trace_ids.append(trace_id)

    # ── exports ──

    def flush(self) -> None:
        """Hand the sampled traces (and the log records following them) to their exporters, as much as
        their queues take."""
        self.outbox.flush(self.exporter)
        self.logs_outbox.flush(self.logs_exporter)

    def exported(self, trace_ids: Sequence[TraceId]) -> None:
        """The traces exporter's acknowledgement: the upstream has these traces."""
        self.wal.done(self.unsettled.settle(trace_ids))

    def send_rollup(self) -> None:
        """Collect the rollup's delta and hand it to the metrics exporter (every `rollup_interval`)."""
        pending = self.rollups
        if pending.collected is None:
            pending.collected = self.rollup.collect()
            pending.collected_ids, pending.trace_ids = pending.trace_ids, []
            if pending.collected is None:  # traces without a span to count: nothing to wait for
                self.wal.done(self.unsettled.settle(pending.collected_ids))
                pending.collected_ids = []
                return
        if self.rollup_exporter.submit(pending.collected_ids, pending.collected):
            pending.collected, pending.collected_ids = None, []

    def logs_exported(self, keys: Sequence[TraceId]) -> None:
        """The logs exporter's acknowledgement: the logs upstream has these records."""
        self.wal.done(self.unsettled.settle(keys))

    def rolled_up(self, trace_ids: Sequence[TraceId]) -> None:
        """The metrics exporter's acknowledgement: the span metrics of these traces went out."""
        self.wal.done(self.unsettled.settle(trace_ids))

    # ── start and stop ──

    def restore(self, replayed: Replayed) -> None:
        """What the log kept from a previous run: undecided traces back in the buffer (their wait
        counted from their first arrival), decided ones exported or rolled up, held log records
        back with their trace (or passed on, when it is no longer buffered)."""
        held_logs = [trace for trace in replayed.undecided if is_logs(trace.trace_id)]
        for trace in replayed.undecided:
            spans = span_count(trace.payloads)
            if is_logs(trace.trace_id):
                continue
            if is_untraced(trace.trace_id):
                self._decide(trace.trace_id, BufferedTrace(trace.arrived, trace.payloads, spans))
            else:
                self.buffer.restore(trace.trace_id, trace.arrived, trace.payloads, spans)
        for trace in replayed.to_export:
            if is_logs(trace.trace_id):
                self.logs_outbox.add(trace.trace_id, [p[len(UNTRACED):] for p in trace.payloads],
                                     span_count(p[len(UNTRACED):] for p in trace.payloads))
            else:
                self.outbox.add(trace.trace_id, trace.payloads, span_count(trace.payloads))
        for trace in replayed.to_rollup:
            self._roll_up(trace.trace_id, trace.payloads)
        for entry in held_logs:
            self._restore_logs(entry.trace_id, entry.payloads)
        self.stats.replayed(*(sum(1 for t in traces if not is_logs(t.trace_id)) for traces in replayed))
        self._decide_early()

    def _restore_logs(self, key: TraceId, payloads: list[bytes]) -> None:
        """Undecided log records read back: each payload is their trace id, then the records."""
        trace_id = payloads[0][:len(UNTRACED)]
        records = [p[len(UNTRACED):] for p in payloads]
        logs = HeldLogs(key, b"".join(records), span_count(records))  # logs requests have the envelopes' shape
        if trace_id in self.buffer:
            self.buffer.hold(trace_id, logs)
        else:
            self._pass_logs(logs)
