"""From provider updates to published snapshots, and match statistics back to providers.

Providers call `on_change` from their threads; compilation happens once per distinct
merged policy set and the result is published to the workers through shared memory.
Statistics flow the other way: workers spool them, `drain_stats` collects the spool
into a pending total that a failed sync merges back, so no count is lost.
"""

from __future__ import annotations

import logging
import threading
import time

from edge.channels.snapshots import SnapshotPublisher
from edge.channels.stats_spool import StatsSpool
from edge.engine.stats import MatchStats, PolicyCounters
from edge.memory import release_free_memory
from edge.policy.compiler import compile_policies
from edge.policy.snapshot import Snapshot
from edge.proto.tero.policy.v1.policy_pb2 import Policy

log = logging.getLogger("edge.supervisor")


class SnapshotManager:
    def __init__(self, publisher: SnapshotPublisher, spool: StatsSpool) -> None:
        self.publisher = publisher
        self.spool = spool
        self.pending = MatchStats()
        self.snapshot: Snapshot | None = None
        self._lock = threading.Lock()

    def on_change(self, policies: list[Policy], version: str) -> None:
        """Compile and publish a merged policy set (called by the merger, any thread)."""
        started = time.perf_counter()
        snapshot = compile_policies(policies, version=version)
        with self._lock:
            generation = self.publisher.publish(snapshot)
            self.snapshot = snapshot
        release_free_memory()  # compiling allocates far more than the snapshot keeps
        errors = snapshot.errors()
        for policy_id, messages in errors.items():
            for message in messages:
                log.warning("policy %s: %s", policy_id, message)
        log.info("published policy snapshot %s (generation %d): %d policies, %d with errors, compiled in %.0f ms",
                 version, generation, len(snapshot.policies), len(errors),
                 (time.perf_counter() - started) * 1000)

    def errors(self) -> dict[str, list[str]]:
        snapshot = self.snapshot
        return snapshot.errors() if snapshot is not None else {}

    def drain_stats(self) -> dict[str, PolicyCounters]:
        """Everything workers have spooled plus what earlier failed syncs handed back."""
        self.pending.merge(self.spool.collect())
        return self.pending.drain()

    def return_stats(self, counts: dict[str, PolicyCounters]) -> None:
        self.pending.merge(counts)

    def tick(self) -> None:
        with self._lock:
            self.publisher.tick()
