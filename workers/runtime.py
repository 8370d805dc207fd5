"""What one HTTP worker process shares between requests: the current engine and its state.

The supervisor leaves `runtime.json` in the run directory (named by `EDGE_RUN_DIR`):
the resolved config, the shared-memory names and the spool paths. A worker keeps one
`Engine` per snapshot (`EngineHolder`); rate-limit windows are shared by all workers of the
instance and match statistics go to the spool about once a second.
"""

from __future__ import annotations

from pathlib import Path

from edge.channels.ratelimit import SharedRateLimiter
from edge.channels.run_dir import RuntimePaths
from edge.channels.snapshots import SnapshotReader
from edge.channels.stats_spool import StatsSpool
from edge.config import Config, from_json
from edge.engine.engine import Engine
from edge.engine.extensions import ExtensionRegistry
from edge.engine.holder import EngineHolder
from edge.engine.stats import MatchStats
from edge.extensions.s3_dump import register_s3_dump
from edge.protocols.self_metrics import get_metrics
from edge.tailsampling.client import SocketSamplerClient


class WorkerRuntime:
    """The `edge.runtime.Runtime` of a gunicorn worker: state shared with its siblings through the run directory."""

    def __init__(self, paths: RuntimePaths) -> None:
        self.paths = paths
        self.config: Config = from_json(Path(paths.config).read_bytes())
        self.snapshots = SnapshotReader(paths.snapshot_control)
        self.limiter = SharedRateLimiter(paths.rate_table, paths.rate_lock)
        self.stats = MatchStats()
        self.spool = StatsSpool(paths.stats_spool)
        self.extensions = ExtensionRegistry()
        self.s3_dump = register_s3_dump(self.config.s3_dump, self.extensions, get_metrics())
        self._engines = EngineHolder(self.snapshots.current, limiter=self.limiter, stats=self.stats,
                                     extensions=self.extensions)

    @classmethod
    def from_environment(cls) -> WorkerRuntime:
        return cls(RuntimePaths.from_environment())

    def sampler_client(self) -> SocketSamplerClient | None:
        """This worker's connection to the instance's tail sampler; None when tail sampling is off."""
        if not (self.config.tail_sampling.enabled and self.paths.sampler_socket):
            return None
        return SocketSamplerClient(self.paths.sampler_socket)

    def engine(self) -> Engine | None:
        """The engine for the newest snapshot; None until the first one (raw passthrough)."""
        return self._engines.engine()

    @property
    def generation(self) -> int:
        return self.snapshots.generation

    def flush_stats(self) -> None:
        self.spool.flush(self.stats)

    def start_extensions(self) -> None:
        """Start the extension handlers' background work (ASGI lifespan startup)."""
        if self.s3_dump is not None:
            self.s3_dump.start()

    def stop_extensions(self) -> None:
        """Upload what extensions still hold, bounded in time (ASGI lifespan shutdown; blocks)."""
        if self.s3_dump is not None:
            self.s3_dump.stop()

    def close(self) -> None:
        self.flush_stats()
        self.snapshots.close()
        self.limiter.close()
