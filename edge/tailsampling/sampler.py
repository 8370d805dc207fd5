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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from edge.tailsampling.buffer import Arrival, BufferedTrace, TraceBuffer
from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import (
    Ack,
    Replayed,
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


# Spans without a trace id share the id UNTRACED; each such fragment is logged under an id of its own
# (this prefix and a counter), so the log lets go of each one when its own export is acknowledged.
UNTRACED_PREFIX = b"untraced"


class UntracedKeys:
    """Ids of their own for fragments of spans without a trace id (random trace ids never start so)."""

    def __init__(self) -> None:
        self.counter = itertools.count(time.time_ns())  # not reused by a restarted sampler

    def key(self, fragment: TraceFragment) -> TraceFragment:
        if fragment.trace_id != UNTRACED:
            return fragment
        return TraceFragment(UNTRACED_PREFIX + (next(self.counter) % (1 << 64)).to_bytes(8, "big"),
                             fragment.payload, fragment.spans)


def is_untraced(trace_id: TraceId) -> bool:
    return trace_id.startswith(UNTRACED_PREFIX)


class Decided(NamedTuple):
    """A trace decided sampled, waiting for the exporter's queue to take it."""

    trace_id: TraceId
    payloads: Sequence[bytes]
    spans: int


class Outbox:
    """Sampled traces in order, each handed to the exporter (which batches them) as one payload.

    The exporter's queue is bounded and refuses when full: what it refused stays here and is
    offered again at the next tick, still in the log until the upstream has it."""

    def __init__(self) -> None:
        self.traces: deque[Decided] = deque()

    def add(self, trace_id: TraceId, payloads: Sequence[bytes], spans: int) -> None:
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
                 rollup_exporter: TraceExporter, buffer: TraceBuffer, decision_wait: float, stats: SamplerStats,
                 routing: Routing | None = None, clock: Callable[[], float] = time.time) -> None:
        self.wal = wal
        self.decider = decider
        self.rollup = rollup
        self.exporter = exporter
        self.rollup_exporter = rollup_exporter
        self.buffer = buffer
        self.decision_wait = decision_wait
        self.stats = stats
        self.routing = routing
        self.clock = clock
        self.outbox = Outbox()
        self.rollups = PendingRollup()
        self.untraced = UntracedKeys()
        self.accepting = True

    # ── submissions ──

    async def submit(self, fragments: list[TraceFragment], forwarded: bool) -> Ack:
        """Route, log, buffer; ACCEPTED once the fragments kept here are in the log."""
        if not self.accepting:
            return Ack.UNAVAILABLE
        if self.routing is not None:
            fragments = await self.routing.keep_here(fragments, forwarded, self.buffer)
        if not fragments:
            return Ack.ACCEPTED
        fragments = [self.untraced.key(f) for f in fragments]
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
        """Decide every due trace and hand what is decided to the exporters (about ten times a second)."""
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
        self._decided(trace_id, trace.payloads, trace.spans, sampled, policy)

    def _decided(self, trace_id: TraceId, payloads: list[bytes], spans: int, sampled: bool, policy: str) -> None:
        self.wal.decided(trace_id, sampled)
        if not is_untraced(trace_id):  # its id is its own: no span can arrive late for it
            self.buffer.cache.record(trace_id, sampled)
        self.stats.decision(policy, sampled, spans)
        if sampled:
            self.outbox.add(trace_id, payloads, spans)
        else:
            self._roll_up(trace_id, payloads)

    def _roll_up(self, trace_id: TraceId, payloads: Sequence[bytes]) -> None:
        self.rollup.add(payloads)
        self.rollups.trace_ids.append(trace_id)

    # ── exports ──

    def flush(self) -> None:
        """Hand the sampled traces to the traces exporter, as much as its queue takes."""
        self.outbox.flush(self.exporter)

    def exported(self, trace_ids: Sequence[TraceId]) -> None:
        """The traces exporter's acknowledgement: the upstream has these traces."""
        self.wal.done(trace_ids)

    def send_rollup(self) -> None:
        """Collect the rollup's delta and hand it to the metrics exporter (every `rollup_interval`)."""
        pending = self.rollups
        if pending.collected is None:
            pending.collected = self.rollup.collect()
            pending.collected_ids, pending.trace_ids = pending.trace_ids, []
            if pending.collected is None:  # traces without a span to count: nothing to wait for
                self.wal.done(pending.collected_ids)
                pending.collected_ids = []
                return
        if self.rollup_exporter.submit(pending.collected_ids, pending.collected):
            pending.collected, pending.collected_ids = None, []

    def rolled_up(self, trace_ids: Sequence[TraceId]) -> None:
        """The metrics exporter's acknowledgement: the span metrics of these traces went out."""
        self.wal.done(trace_ids)

    # ── start and stop ──

    def restore(self, replayed: Replayed) -> None:
        """What the log kept from a previous run: undecided traces back in the buffer (their wait
        counted from their first arrival), decided ones exported or rolled up."""
        for trace in replayed.undecided:
            spans = span_count(trace.payloads)
            if is_untraced(trace.trace_id):
                self._decide(trace.trace_id, BufferedTrace(trace.arrived, trace.payloads, spans))
            else:
                self.buffer.restore(trace.trace_id, trace.arrived, trace.payloads, spans)
        for trace in replayed.to_export:
            self.outbox.add(trace.trace_id, trace.payloads, span_count(trace.payloads))
        for trace in replayed.to_rollup:
            self._roll_up(trace.trace_id, trace.payloads)
        self.stats.replayed(len(replayed.undecided), len(replayed.to_export), len(replayed.to_rollup))
        self._decide_early()
