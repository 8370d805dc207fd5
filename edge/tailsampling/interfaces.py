"""The seams between the tail sampler's parts, declared once so each part can be built and tested alone.

Data flow: a worker's traces route filters a batch with edge's own policies, splits what is
left into one `TraceFragment` per trace id (`grouping`), and submits the fragments to the
sampler process (`SamplerClient`). The sampler appends them to its write-ahead log
(`WriteAheadLog`) before acknowledging, routes fragments it does not own to their owner
(`PeerRouter`), buffers the rest as bytes, and `decision_wait` after a trace's first span
asks the `TraceDecider`. Sampled traces go to the `TraceExporter`; the others are added to
the `SpanRollup`, whose delta metrics go out every `rollup_interval`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple, Protocol

TraceId = bytes  # the 16 raw bytes of an OTLP trace id


@dataclass(frozen=True, slots=True)
class TraceFragment:
    """One trace's spans out of one request, as a serialised `ExportTraceServiceRequest`.

    The payload holds only this trace's spans, with their resource and scope. Serialised
    protobuf messages concatenate into their merge, so `b"".join(payloads)` of any fragments
    is itself a valid `ExportTraceServiceRequest`: the buffer, the WAL and the exporter never
    re-encode spans."""

    trace_id: TraceId
    payload: bytes
    spans: int


class Decision(NamedTuple):
    """A trace's outcome and the policy that decided it ("" when no policy sampled it)."""

    sampled: bool
    policy: str


class TraceDecider(Protocol):
    """The `tail_sampling.policies`, compiled once, applied in the documented decision order."""

    def decide(self, trace_id: TraceId, payloads: Sequence[bytes]) -> Decision:
        """Decide on the whole trace (every fragment that arrived for it)."""
        ...


class SpanRollup(Protocol):
    """Span metrics of what is not sampled, so dashboards stay right."""

    def add(self, payloads: Sequence[bytes]) -> None:
        """Count one not-sampled (or early-decided and not-sampled) trace's spans."""
        ...

    def collect(self) -> bytes | None:
        """The delta since the last call as a serialised `ExportMetricsServiceRequest`; None when empty."""
        ...


class WalFull(Exception):
    """The write-ahead log reached `max_wal_bytes`: the sender gets 503 with Retry-After."""


class WriteAheadLog(Protocol):
    """Everything acknowledged to a sender, until the upstream acknowledged it (or its rollup went out)."""

    def append(self, fragments: Sequence[TraceFragment], arrived: float) -> None:
        """Write the fragments (`arrived`: wall-clock seconds); raises WalFull. Synced per the fsync policy."""
        ...

    def decided(self, trace_id: TraceId, sampled: bool) -> None:
        """Record a decision, so a replay does not decide the trace again."""
        ...

    def done(self, trace_ids: Sequence[TraceId]) -> None:
        """These traces need nothing more (exported and acknowledged, or rolled up and sent)."""
        ...

    def replay(self) -> Replayed:
        """What a previous run left: undecided traces, decided-sampled ones not yet exported, and
        decided-not-sampled ones whose rollup did not go out."""
        ...

    @property
    def bytes_used(self) -> int:
        """Bytes on disk, bounded by `max_wal_bytes`."""
        ...


class ReplayedTrace(NamedTuple):
    """A trace read back from the WAL."""

    trace_id: TraceId
    arrived: float  # wall-clock seconds of its first span: the remaining wait is computed from it
    payloads: list[bytes]


class Replayed(NamedTuple):
    """The WAL's state after a crash."""

    undecided: list[ReplayedTrace]
    to_export: list[ReplayedTrace]  # decided sampled, not acknowledged by the upstream
    to_rollup: list[ReplayedTrace]  # decided not sampled, their rollup not yet sent


class TraceExporter(Protocol):
    """Sampled traces to the traces upstream: batched, gzip, retried with backoff, bounded queue."""

    def submit(self, trace_ids: Sequence[TraceId], payload: bytes, items: int = 0) -> bool:
        """Queue a payload; False when the queue is full (the caller keeps the traces and tries later).

        `items`: the spans (or metric data points) in the payload, for the exported counters only:
        counting them here would mean decoding what is otherwise passed through as bytes."""
        ...


AckCallback = Callable[[Sequence[TraceId]], None]  # the exporter calls it once the upstream acknowledged


class Signal(Enum):
    """What goes to a trace's owner: spans, or log records following their trace (`logs.follow_traces`)."""

    TRACES = "traces"
    LOGS = "logs"


class PeerRouter(Protocol):
    """Which instance owns a trace (consistent hashing over the member list) and delivery to it."""

    def owner(self, trace_id: TraceId) -> str | None:
        """The owner's `host:port`, or None when this instance owns the trace."""
        ...

    async def forward(self, peer: str, payload: bytes, signal: Signal = Signal.TRACES) -> bool:
        """Deliver to the owner's internal route for `signal`, marked never to be forwarded again, with retries.

        False when the owner stayed unreachable: the caller keeps the spans (or records) locally and counts them."""
        ...


class Ack(Enum):
    """The sampler's answer to a worker's submission."""

    ACCEPTED = "accepted"  # in the WAL: the sender may be told 200
    WAL_FULL = "wal_full"  # 503 with Retry-After
    UNAVAILABLE = "unavailable"  # the sampler cannot be reached: 503 with Retry-After


class SamplerClient(Protocol):
    """A worker's connection to its instance's sampler process."""

    async def submit(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        """Hand fragments over; returns once they are in the WAL. `forwarded`: they came from a peer."""
        ...
