"""The two ends of the control plane that differ between the processes that run one.

The supervisor publishes snapshots through shared memory and collects statistics from
the workers' spool directory; the Lambda extension keeps both in its one process. The
control plane only needs what these Protocols declare, so it never names either.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge.engine.stats import PolicyCounters
from edge.policy.snapshot import Snapshot


@runtime_checkable
class SnapshotSink(Protocol):
    """Where compiled snapshots go (implemented by `edge.channels.snapshots.SnapshotPublisher`)."""

    def publish(self, snapshot: Snapshot) -> int:
        """Make `snapshot` the current one; returns its generation (1 for the first)."""
        ...

    def tick(self) -> None:
        """Called about once a second: release what earlier snapshots still hold."""
        ...


@runtime_checkable
class StatsSource(Protocol):
    """Where match statistics come from (implemented by `edge.channels.stats_spool.StatsSpool`)."""

    def collect(self) -> dict[str, PolicyCounters]:
        """Everything counted since the last call; what is returned is no longer held here."""
        ...
