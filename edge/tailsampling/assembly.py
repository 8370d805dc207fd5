"""The sampler process's parts, built from the config and wired together.

The parts are built by their own modules (the log `wal`, the decider, the rollup, the
exporters, the peers); here they meet: the exporters' acknowledgements go to the sampler,
which then drops the acknowledged traces from the log, and the gauges are read from all of
them once a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.config import Config, TailSamplingConfig
from edge.tailsampling.buffer import TraceBuffer
from edge.tailsampling.decider import compile_decider
from edge.tailsampling.decisions import DecisionCache
from edge.tailsampling.export import OtlpHttpExporter
from edge.tailsampling.interfaces import TraceId
from edge.tailsampling.peers import Peers, peers_from_config
from edge.tailsampling.rollup import SpanMetricsRollup
from edge.tailsampling.routing import Routing
from edge.tailsampling.sampler import TailSampler
from edge.tailsampling.stats import PeerCounts, SamplerStats
from edge.tailsampling.wal import FileWal

TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"


class AckRelay:
    """The exporters' acknowledgements, passed to the sampler (built after the exporters it uses)."""

    def __init__(self) -> None:
        self.sampler: TailSampler | None = None

    def exported(self, trace_ids: Sequence[TraceId]) -> None:
        if self.sampler is not None:
            self.sampler.exported(trace_ids)

    def rolled_up(self, trace_ids: Sequence[TraceId]) -> None:
        if self.sampler is not None:
            self.sampler.rolled_up(trace_ids)

    def logs_exported(self, keys: Sequence[TraceId]) -> None:
        if self.sampler is not None:
            self.sampler.logs_exported(keys)


@dataclass
class SamplerParts:
    """Everything one sampler process runs with."""

    config: TailSamplingConfig
    wal: FileWal
    rollup: SpanMetricsRollup
    exporter: OtlpHttpExporter
    rollup_exporter: OtlpHttpExporter
    logs_exporter: OtlpHttpExporter
    peers: Peers | None
    relay: AckRelay
    stats: SamplerStats

    def sampler(self, clock: Callable[[], float]) -> TailSampler:
        """The sampler over these parts; the exporters' acknowledgements reach it from now on."""
        c = self.config
        cache = DecisionCache(c.decision_cache.sampled_cache_size, c.decision_cache.non_sampled_cache_size,
                              c.num_traces)
        sampler = TailSampler(wal=self.wal, decider=compile_decider(c), rollup=self.rollup,
                              exporter=self.exporter, rollup_exporter=self.rollup_exporter,
                              logs_exporter=self.logs_exporter,
                              buffer=TraceBuffer(c.num_traces, c.max_buffer_bytes, cache),
                              decision_wait=c.decision_wait, stats=self.stats,
                              routing=None if self.peers is None else Routing(self.peers), clock=clock)
        self.relay.sampler = sampler
        return sampler

    def observe(self, sampler: TailSampler) -> None:
        """The gauges and the peers' counters, about once a second."""
        peers = None
        if self.peers is not None:
            p = self.peers.stats()
            peers = PeerCounts(p.members, p.routed_spans, p.received_spans, p.kept_spans,
                               p.routed_records, p.received_records, p.kept_records)
        self.stats.observe(sampler.buffer, self.wal.bytes_used, peers)
        self.stats.observe_rollup(self.rollup.series, self.rollup.overflowed)
        self.stats.observe_exports("traces", self.exporter.counters, self.exporter.queue_bytes)
        self.stats.observe_exports("rollup", self.rollup_exporter.counters, self.rollup_exporter.queue_bytes)
        self.stats.observe_exports("logs", self.logs_exporter.counters, self.logs_exporter.queue_bytes)

    async def close(self, flush_seconds: float, sampler: TailSampler) -> None:
        """Exports delivered within `flush_seconds`, then the peers and the log closed."""
        await asyncio.gather(*(exporter.close(flush_seconds)
                               for exporter in (self.exporter, self.rollup_exporter, self.logs_exporter)))
        if self.peers is not None:
            await self.peers.close()
        self.observe(sampler)
        self.wal.close()


def has_peers(config: TailSamplingConfig) -> bool:
    return bool(config.peers.static or config.peers.dns.strip())


async def assemble(config: Config) -> SamplerParts:
    """Open the log, start the exporters and the peers' membership; run on the sampler's loop."""
    tail = config.tail_sampling
    relay = AckRelay()
    wal = FileWal(tail.wal_dir, fsync=tail.wal_fsync, fsync_interval=tail.wal_fsync_interval,
                  max_bytes=tail.max_wal_bytes)
    headers = dict(tail.export_headers)
    exporter = OtlpHttpExporter(config.traces_url.rstrip("/") + TRACES_PATH, relay.exported,
                                queue_bytes=tail.export_queue_bytes, headers=headers)
    rollup_exporter = OtlpHttpExporter(tail.metrics_url, relay.rolled_up, what="rollup metrics",
                                       queue_bytes=tail.export_queue_bytes, headers=headers)
    logs_exporter = OtlpHttpExporter(config.logs_url.rstrip("/") + LOGS_PATH, relay.logs_exported, what="logs",
                                     queue_bytes=tail.export_queue_bytes, headers=headers)
    for started in (exporter, rollup_exporter, logs_exporter):
        await started.start()
    peers = None
    if has_peers(tail):
        peers = peers_from_config(tail.peers)
        await peers.start()
    return SamplerParts(tail, wal, SpanMetricsRollup(tail.rollup_cardinality_limit), exporter, rollup_exporter,
                        logs_exporter, peers, relay, SamplerStats())
