"""One way to assemble a control plane: providers, merger and snapshot manager, wired together.

Every process that runs policy providers (the supervisor, the Lambda extension, the tail
sampler) needs the same wiring, and only two things differ between them: where snapshots
go and where statistics come from. `build_control_plane` takes exactly those, so the
wiring itself exists once. Whether the providers run in their own threads (`start`) or
are driven from outside (the Lambda's events) is the caller's choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from edge.config import Config
from edge.control.http_provider import FINAL_SYNC_TIMEOUT_S, SYNC_TIMEOUT_S
from edge.control.interfaces import SnapshotSink, StatsSource
from edge.control.merger import PolicyMerger
from edge.control.providers import ProviderSet
from edge.control.publication import SnapshotManager


@dataclass(frozen=True)
class ControlPlane:
    """The assembled control plane of one process."""

    manager: SnapshotManager
    providers: ProviderSet

    def start(self) -> None:
        """Run every provider in its own thread."""
        self.providers.start()

    def stop(self, timeout: float = 1.0) -> None:
        self.providers.stop(timeout)

    def final_sync(self, timeout: float = FINAL_SYNC_TIMEOUT_S) -> bool:
        """The last statistics report to the policy servers (after `stop`); True when all accepted it."""
        return self.providers.final_sync(timeout)

    def tick(self) -> None:
        """Called about once a second by the owner's main loop."""
        self.manager.tick()

    def errors(self) -> dict[str, list[str]]:
        """Compile errors of the published snapshot by policy id."""
        return self.manager.errors()


def build_control_plane(config: Config, sink: SnapshotSink, stats_source: StatsSource, *,
                        extensions: Sequence[str] = (), http_timeout: float = SYNC_TIMEOUT_S) -> ControlPlane:
    """The providers of `config.policy_providers`, publishing into `sink`, reporting from `stats_source`.

    `extensions` are the extension types this process has handlers for (announced to the
    policy servers); `http_timeout` bounds one sync.
    """
    manager = SnapshotManager(sink, stats_source)
    merger = PolicyMerger(manager.on_change, config.policy_providers, on_load_errors=manager.on_load_errors)
    providers = ProviderSet(config.policy_providers, merger, service=config.service,
                            stats_source=manager.drain_stats, stats_return=manager.return_stats,
                            errors_source=manager.errors, extensions=extensions, http_timeout=http_timeout,
                            workspace_id=config.workspace_id)
    return ControlPlane(manager, providers)
