"""From merged policy sets to published snapshots, and match statistics back to providers.

Providers call `on_change` (through the merger) from their threads; compilation happens
once per distinct merged policy set and the result goes to a `SnapshotSink`. Statistics
flow the other way: `drain_stats` collects a `StatsSource` into a pending total that a
failed sync merges back, so no count is lost. Which sink and which source is the
caller's choice (shared memory and a spool in the supervisor, memory in the Lambda).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time

from edge.control.interfaces import SnapshotSink, StatsSource
from edge.engine.stats import MatchStats, PolicyCounters
from edge.memory import release_free_memory
from edge.policy.compiler import compile_policies
from edge.policy.snapshot import Snapshot
from edge.proto.tero.policy.v1.policy_pb2 import Policy

log = logging.getLogger("edge.control")


class SnapshotManager:
    """Compiles and publishes policy sets; keeps the statistics owed to the policy servers."""

    def __init__(self, sink: SnapshotSink, stats_source: StatsSource) -> None:
        self.sink = sink
        self.stats_source = stats_source
        self.pending = MatchStats()
        self.snapshot: Snapshot | None = None
        self.load_errors: list[str] = []  # every provider's, "provider <id>: <error>"
        self._lock = threading.Lock()

    def on_change(self, policies: list[Policy], version: str) -> None:
        """Compile and publish a merged policy set (called by the merger, any thread)."""
        started = time.perf_counter()
        with self._lock:
            load_errors = list(self.load_errors)
        snapshot = compile_policies(policies, version=version, load_errors=load_errors)
        with self._lock:
            generation = self.sink.publish(snapshot)
            self.snapshot = snapshot
        release_free_memory()  # compiling allocates far more than the snapshot keeps
        errors = snapshot.errors()
        for policy_id, messages in errors.items():
            for message in messages:
                log.warning("policy %s: %s", policy_id, message)
        log.info("published policy snapshot %s (generation %d): %d policies, %d with errors, compiled in %.0f ms",
                 version, generation, len(snapshot.policies), len(errors),
                 (time.perf_counter() - started) * 1000)

    def on_load_errors(self, load_errors: list[str], publish: bool = True) -> None:
        """Publish the providers' new load errors with the policies in force (called by the merger);
        publish=False only records them for the snapshot `on_change` compiles next.

        Only the error list changes, so the compiled snapshot is reused: a file that breaks and
        is fixed again never costs a recompile.
        """
        with self._lock:
            self.load_errors = list(load_errors)
            if not publish:
                return
            current = self.snapshot or compile_policies([])
            snapshot = dataclasses.replace(current, load_errors=list(load_errors), _runtime={})
            generation = self.sink.publish(snapshot)
            self.snapshot = snapshot
        log.info("published %d policy load errors (generation %d)", len(load_errors), generation)

    def errors(self) -> dict[str, list[str]]:
        """Compile errors of the published snapshot by policy id (reported to the policy servers)."""
        snapshot = self.snapshot
        return snapshot.errors() if snapshot is not None else {}

    def drain_stats(self) -> dict[str, PolicyCounters]:
        """Everything the source has gathered plus what earlier failed syncs handed back."""
        self.pending.merge(self.stats_source.collect())
        return self.pending.drain()

    def return_stats(self, counts: dict[str, PolicyCounters]) -> None:
        """Counts a sync could not deliver: they go out with the next one."""
        self.pending.merge(counts)

    def tick(self) -> None:
        """Called about once a second: lets the sink release what old snapshots hold."""
        with self._lock:
            self.sink.tick()
