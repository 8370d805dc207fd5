"""The sampler's counters and gauges, shown by every worker's `/_edge/metrics`.

The sampler process runs with the instance's `PROMETHEUS_MULTIPROC_DIR`, like the workers:
its values go to memory-mapped files there, and `/_edge/metrics` (any worker) merges them
with the workers' own. Gauges keep the most recent value written, so a restarted sampler's
gauges replace those of the process it replaces; counters add up over both.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge

from edge.tailsampling.buffer import Arrival, Bound, TraceBuffer

LATE_OUTCOMES = {Arrival.FOLLOWS_SAMPLED: "sampled", Arrival.FOLLOWS_NOT_SAMPLED: "not_sampled",
                 Arrival.LATE_NEW: "new_trace"}
GAUGE_MODE = "mostrecent"


class ExportCounts(Protocol):
    """An exporter's cumulative counts, as `edge.tailsampling.export.ExportCounters` has them."""

    @property
    def exported_traces(self) -> int: ...

    @property
    def exported_items(self) -> int: ...

    @property
    def retries(self) -> int: ...

    @property
    def rejected_traces(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Exported:
    """A copy of an exporter's counts at one moment."""

    exported_traces: int
    exported_items: int
    retries: int
    rejected_traces: int


@dataclass(frozen=True, slots=True)
class PeerCounts:
    """The peer router's cumulative counts, as `edge.tailsampling.peers.PeerStats` has them."""

    members: int
    routed_spans: int
    received_spans: int
    kept_spans: int
    routed_records: int = 0  # log records under logs.follow_traces, likewise
    received_records: int = 0
    kept_records: int = 0


class SamplerStats:
    """One per sampler process (prometheus-client refuses duplicate names in one registry)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        def counter(name: str, doc: str, labels: tuple[str, ...] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, registry=registry, multiprocess_mode=GAUGE_MODE)

        self.traces = gauge("edge_tail_buffered_traces", "Traces waiting for their decision")
        self.spans = gauge("edge_tail_buffered_spans", "Spans of the traces waiting for their decision")
        self.bytes = gauge("edge_tail_buffered_bytes", "Protobuf bytes of the spans waiting for their decision")
        self.wal_bytes = gauge("edge_tail_wal_bytes", "Bytes of the write-ahead log on disk")
        self.peers = gauge("edge_tail_peers", "Members of the tail-sampling cluster (0: this instance alone)")
        self.rollup_series = gauge("edge_tail_rollup_series", "Span metric series of the current rollup interval")
        self.decisions = counter("edge_tail_decisions", "Traces decided, by the policy that decided and outcome",
                                 ("policy", "outcome"))
        self.decided_spans = counter("edge_tail_decided_spans", "Spans of decided traces, by outcome", ("outcome",))
        self.late_spans = counter("edge_tail_late_spans", "Spans arriving after their trace's decision, by what "
                                  "became of them (sampled, not_sampled: followed a cached decision; new_trace: no "
                                  "cache held it)", ("outcome",))
        self.early = counter("edge_tail_early_decisions", "Traces decided before decision_wait, by the bound "
                             "reached", ("bound",))
        self.wal_full_total = counter("edge_tail_wal_full", "Submissions refused because the write-ahead log was full")
        self.replayed_traces = counter("edge_tail_replayed_traces", "Traces read back from the write-ahead log at "
                                       "start, by state", ("state",))
        self.peer_spans = counter("edge_tail_peer_spans", "Spans routed to their owner, received from a peer, or "
                                  "kept here because their owner was unreachable", ("direction",))
        self.peer_log_records = counter("edge_tail_peer_log_records", "Log records (logs.follow_traces) routed to "
                                        "their trace's owner, received from a peer, or kept here because their "
                                        "owner was unreachable", ("direction",))
        self.rollup_overflow = counter("edge_tail_rollup_overflow_spans", "Spans rolled up into the overflow series "
                                       "(otel.metric.overflow=true) beyond rollup_cardinality_limit")
        self.exported = counter("edge_tail_exported", "What the sampler's exporters delivered (traces: sampled "
                                "traces and their spans; rollup: rollup requests and their data points)",
                                ("exporter", "unit"))
        self.export_retries = counter("edge_tail_export_retries", "Export requests sent again after a failure",
                                      ("exporter",))
        self.export_rejected = counter("edge_tail_export_rejected", "Traces whose export the upstream refused for "
                                       "good (a 4xx other than 408 and 429)", ("exporter",))
        self.export_queue = Gauge("edge_tail_export_queue_bytes", "Payload bytes waiting for the upstream's "
                                  "acknowledgement", ("exporter",), registry=registry, multiprocess_mode=GAUGE_MODE)
        self._exports_seen: dict[str, Exported] = {}
        self.logs_records = counter("edge_tail_logs", "Log records with a trace id under logs.follow_traces, by "
                                    "what became of them: held with their buffered trace, then sampled or dropped "
                                    "with it; passed on at once (no buffered trace); dropped at once (their "
                                    "trace was decided not sampled)", ("outcome",))
        self._late = {arrival: self.late_spans.labels(outcome) for arrival, outcome in LATE_OUTCOMES.items()}
        self._decisions: dict[tuple[str, bool], Counter] = {}
        self._decided = {True: self.decided_spans.labels("sampled"), False: self.decided_spans.labels("not_sampled")}
        self._early = {bound: self.early.labels(bound.value) for bound in Bound}
        self._peer_spans = {d: self.peer_spans.labels(d) for d in ("routed", "received", "kept")}
        self._peer_records = {d: self.peer_log_records.labels(d) for d in ("routed", "received", "kept")}
        self._peers_seen = PeerCounts(0, 0, 0, 0)
        self._overflowed_seen = 0

    # ── events ──

    def decision(self, policy: str, sampled: bool, spans: int) -> None:
        child = self._decisions.get((policy, sampled))
        if child is None:
            child = self._decisions[(policy, sampled)] = self.decisions.labels(
                policy or "(none)", "sampled" if sampled else "not_sampled")
        child.inc()
        self._decided[sampled].inc(spans)

    def late(self, arrival: Arrival, spans: int) -> None:
        self._late[arrival].inc(spans)

    def early_decision(self, bound: Bound) -> None:
        self._early[bound].inc()

    def logs(self, outcome: str, records: int) -> None:
        self.logs_records.labels(outcome).inc(records)

    def wal_full(self) -> None:
        self.wal_full_total.inc()

    def replayed(self, undecided: int, to_export: int, to_rollup: int) -> None:
        for state, count in (("undecided", undecided), ("to_export", to_export), ("to_rollup", to_rollup)):
            self.replayed_traces.labels(state).inc(count)


    # ── state, about once a second ──

    def observe(self, buffer: TraceBuffer, wal_bytes: int, peers: PeerCounts | None) -> None:
        self.traces.set(len(buffer))
        self.spans.set(buffer.spans)
        self.bytes.set(buffer.bytes)
        self.wal_bytes.set(wal_bytes)
        if peers is not None:
            seen, self._peers_seen = self._peers_seen, peers
            self.peers.set(peers.members)
            for child, now, before in (
                    (self._peer_spans["routed"], peers.routed_spans, seen.routed_spans),
                    (self._peer_spans["received"], peers.received_spans, seen.received_spans),
                    (self._peer_spans["kept"], peers.kept_spans, seen.kept_spans),
                    (self._peer_records["routed"], peers.routed_records, seen.routed_records),
                    (self._peer_records["received"], peers.received_records, seen.received_records),
                    (self._peer_records["kept"], peers.kept_records, seen.kept_records)):
                if now > before:
                    child.inc(now - before)

    def observe_rollup(self, series: int, overflowed: int) -> None:
        """The rollup's series now, and the spans it has folded into the overflow series since start."""
        self.rollup_series.set(series)
        if overflowed > self._overflowed_seen:
            self.rollup_overflow.inc(overflowed - self._overflowed_seen)
        self._overflowed_seen = overflowed

    def observe_exports(self, exporter: str, counters: ExportCounts, queued_bytes: int) -> None:
        """An exporter's cumulative counters (their growth since the last call is added) and its queue."""
        seen = self._exports_seen.get(exporter)
        self._exports_seen[exporter] = Exported(counters.exported_traces, counters.exported_items,
                                                counters.retries, counters.rejected_traces)
        before = seen or Exported(0, 0, 0, 0)
        for child, now, then in ((self.exported.labels(exporter, "traces"), counters.exported_traces,
                                  before.exported_traces),
                                 (self.exported.labels(exporter, "items"), counters.exported_items,
                                  before.exported_items),
                                 (self.export_retries.labels(exporter), counters.retries, before.retries),
                                 (self.export_rejected.labels(exporter), counters.rejected_traces,
                                  before.rejected_traces)):
            if now > then:
                child.inc(now - then)
        self.export_queue.labels(exporter).set(queued_bytes)
