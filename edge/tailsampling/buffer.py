"""The sampler's buffer: each undecided trace's fragments, as bytes, in order of first arrival.

Spans stay serialised (`TraceFragment.payload`): a trace is decided and exported from its
payloads without ever building Python objects per span, so buffered memory stays close to
the spans' protobuf size. `decision_wait` is the same for every trace, so the order of
first arrival is also the order of deadlines: the deadline queue is the buffer's own order,
and the due traces are always at its front.

Bounds: beyond `num_traces` traces or `max_buffer_bytes` bytes the oldest traces leave the
buffer early and are decided at once (never discarded undecided).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from edge.tailsampling.decisions import DecisionCache
from edge.tailsampling.interfaces import TraceFragment, TraceId


class HeldLogs(NamedTuple):
    """Log records of a buffered trace (`logs.follow_traces`), held under their own key in the log."""

    key: TraceId
    payload: bytes  # a serialised ExportLogsServiceRequest
    records: int


@dataclass(slots=True)
class BufferedTrace:
    """One undecided trace."""

    arrived: float  # wall-clock seconds of its first span (a replayed trace keeps its original arrival)
    payloads: list[bytes] = field(default_factory=list)
    spans: int = 0
    size: int = 0
    logs: list[HeldLogs] | None = None  # None until a log record follows it: most traces have none

    def add(self, payload: bytes, spans: int) -> None:
        self.payloads.append(payload)
        self.spans += spans
        self.size += len(payload)

    def hold(self, logs: HeldLogs) -> None:
        if self.logs is None:
            self.logs = []
        self.logs.append(logs)
        self.size += len(logs.payload)


class Arrival(Enum):
    """What became of a fragment given to the buffer."""

    BUFFERED = "buffered"  # held with its trace (new or not)
    LATE_NEW = "late_new"  # its trace was decided recently but no cache holds the decision: a new entry
    FOLLOWS_SAMPLED = "follows_sampled"  # its trace's cached decision: sampled, export it now
    FOLLOWS_NOT_SAMPLED = "follows_not_sampled"  # its trace's cached decision: not sampled, roll it up


class Bound(Enum):
    """Why a trace was decided before its `decision_wait`."""

    NUM_TRACES = "num_traces"
    MAX_BUFFER_BYTES = "max_buffer_bytes"


Taken = tuple[TraceId, BufferedTrace]


class TraceBuffer:
    """Undecided traces by id, oldest first, within `num_traces` and `max_bytes`."""

    def __init__(self, num_traces: int, max_bytes: int, cache: DecisionCache) -> None:
        self.num_traces = num_traces
        self.max_bytes = max_bytes
        self.cache = cache
        self.traces: OrderedDict[TraceId, BufferedTrace] = OrderedDict()
        self.spans = 0
        self.bytes = 0

    def __contains__(self, trace_id: TraceId) -> bool:
        return trace_id in self.traces

    def __len__(self) -> int:
        return len(self.traces)

    def add(self, fragment: TraceFragment, now: float) -> Arrival:
        """Hold a fragment with its trace, unless a cached decision says where it goes."""
        trace = self.traces.get(fragment.trace_id)
        late = False
        if trace is None:
            follows = self.cache.follow(fragment.trace_id)
            if follows is not None:
                return Arrival.FOLLOWS_SAMPLED if follows else Arrival.FOLLOWS_NOT_SAMPLED
            late = self.cache.was_decided(fragment.trace_id)
            trace = self.traces[fragment.trace_id] = BufferedTrace(now)
        trace.add(fragment.payload, fragment.spans)
        self.spans += fragment.spans
        self.bytes += len(fragment.payload)
        return Arrival.LATE_NEW if late else Arrival.BUFFERED

    def hold(self, trace_id: TraceId, logs: HeldLogs) -> None:
        """Log records that leave, or are dropped, with this buffered trace."""
        self.traces[trace_id].hold(logs)
        self.bytes += len(logs.payload)

    def restore(self, trace_id: TraceId, arrived: float, payloads: list[bytes], spans: int) -> None:
        """A trace read back from the write-ahead log (restored oldest first, before new traffic)."""
        trace = BufferedTrace(arrived, list(payloads), spans, sum(map(len, payloads)))
        self.traces[trace_id] = trace
        self.spans += spans
        self.bytes += trace.size

    def over_bounds(self) -> list[tuple[TraceId, BufferedTrace, Bound]]:
        """The oldest traces taken out until the buffer is within both bounds again."""
        out = []
        while self.traces and (len(self.traces) > self.num_traces or self.bytes > self.max_bytes):
            bound = Bound.NUM_TRACES if len(self.traces) > self.num_traces else Bound.MAX_BUFFER_BYTES
            trace_id, trace = self._pop_oldest()
            out.append((trace_id, trace, bound))
        return out

    def due(self, deadline_arrival: float) -> list[Taken]:
        """Every trace whose first span arrived at or before `deadline_arrival` (now − decision_wait), taken out."""
        out = []
        while self.traces:
            oldest = next(iter(self.traces.values()))
            if oldest.arrived > deadline_arrival:
                break
            out.append(self._pop_oldest())
        return out

    def next_due(self, wait: float) -> float | None:
        """When the oldest trace is due (wall-clock seconds); None when the buffer is empty."""
        if not self.traces:
            return None
        return next(iter(self.traces.values())).arrived + wait

    def _pop_oldest(self) -> Taken:
        trace_id, trace = self.traces.popitem(last=False)
        self.spans -= trace.spans
        self.bytes -= trace.size
        return trace_id, trace
