"""What the app's routes need from a runtime, held in this one process (no shared memory).

`LocalRuntime` is an `edge.runtime.Runtime` like `workers.runtime.WorkerRuntime`, with
everything in memory: the control plane publishes into `LocalSnapshots` (its
`SnapshotSink`), the engine counts into a `MatchStats` that the policy providers drain
directly through `StatsHandOver` (its `StatsSource`), rate-limit windows are per process
(there is only one).
"""

from __future__ import annotations

from edge.config import Config
from edge.engine.engine import Engine
from edge.engine.extensions import ExtensionRegistry
from edge.engine.holder import EngineHolder
from edge.engine.ratelimit import LocalRateLimiter
from edge.engine.stats import MatchStats, PolicyCounters
from edge.extensions.s3_dump import STOP_TIMEOUT_S, register_s3_dump
from edge.policy.snapshot import Snapshot
from edge.protocols.self_metrics import get_metrics


class LocalSnapshots:
    """Sink (for the control plane) and source (for the routes) of one process's snapshots."""

    def __init__(self) -> None:
        self.generation = 0
        self._snapshot: Snapshot | None = None

    def publish(self, snapshot: Snapshot) -> int:
        self._snapshot = snapshot  # before the generation: a reader that sees it also sees the snapshot
        self.generation += 1
        return self.generation

    def current(self) -> Snapshot | None:
        return self._snapshot

    def tick(self) -> None:
        """Nothing to release: an old snapshot is freed when its last engine goes."""

    def close(self) -> None:
        self._snapshot = None


class StatsHandOver:
    """The control plane's `StatsSource` in one process: the engine's counters, drained directly."""

    def __init__(self, stats: MatchStats) -> None:
        self.stats = stats

    def collect(self) -> dict[str, PolicyCounters]:
        return self.stats.drain()


class LocalRuntime:
    """The `edge.runtime.Runtime` of the Lambda extension, plus what its event loop needs (flush on INVOKE)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.snapshots = LocalSnapshots()
        self.limiter = LocalRateLimiter()
        self.stats = MatchStats()
        self.extensions = ExtensionRegistry()
        self.s3_dump = register_s3_dump(config.s3_dump, self.extensions, get_metrics())
        self.stop_timeout = STOP_TIMEOUT_S  # lowered to fit Lambda's shutdown deadline
        self._engines = EngineHolder(self.snapshots.current, limiter=self.limiter, stats=self.stats,
                                     extensions=self.extensions)

    def engine(self) -> Engine | None:
        """The engine for the newest snapshot; None until the first one (raw passthrough)."""
        return self._engines.engine()

    @property
    def generation(self) -> int:
        return self.snapshots.generation

    def flush_stats(self) -> None:
        """Nothing to do: providers drain `stats` directly (see `StatsHandOver`)."""

    def start_extensions(self) -> None:
        if self.s3_dump is not None:
            self.s3_dump.start()

    def flush_extensions(self, timeout: float) -> bool:
        """Upload what extensions hold now (on INVOKE); False when `timeout` ran out first."""
        return self.s3_dump.flush(timeout) if self.s3_dump is not None else True

    def stop_extensions(self) -> None:
        if self.s3_dump is not None:
            self.s3_dump.stop(self.stop_timeout)

    def close(self) -> None:
        self.snapshots.close()
