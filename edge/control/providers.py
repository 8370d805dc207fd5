"""The configured policy providers of one process, wired to one merger.

Every provider runs in its own daemon thread and hands its latest *good* policy list to
the `PolicyMerger`; the set starts and stops them together and makes the last statistics
report to the policy servers at shutdown. (The Lambda extension drives the same providers
from its events instead of their threads.)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from edge.config import ProviderConfig, ServiceConfig
from edge.control.file_provider import FileProvider
from edge.control.http_provider import (
    FINAL_SYNC_TIMEOUT_S,
    SYNC_TIMEOUT_S,
    ErrorsSource,
    HttpProvider,
    StatsDrain,
    StatsReturn,
)
from edge.control.merger import PolicyMerger
from edge.policy.sync import JSON

log = logging.getLogger("edge.providers")

Provider = FileProvider | HttpProvider


class ProviderSet:
    """The configured providers, wired to one merger; started and stopped together."""

    def __init__(self, configs: Sequence[ProviderConfig], merger: PolicyMerger, *,
                 service: ServiceConfig | None = None, stats_source: StatsDrain | None = None,
                 stats_return: StatsReturn | None = None, errors_source: ErrorsSource | None = None,
                 wire: str = JSON, extensions: Sequence[str] = (), http_timeout: float = SYNC_TIMEOUT_S,
                 workspace_id: str = "") -> None:
        self.merger = merger
        for config in configs:
            merger.register(config.id, config.type)
        http_options: Mapping[str, Any] = {
            "service": service, "stats_source": stats_source, "stats_return": stats_return,
            "errors_source": errors_source, "wire": wire, "extensions": extensions, "timeout": http_timeout,
            "workspace_id": workspace_id,
        }
        self.providers: list[Provider] = [
            HttpProvider(c, merger.update, on_errors=merger.report_errors, **http_options) if c.type == "http"
            else FileProvider(c, merger.update, merger.report_errors)
            for c in configs
        ]

    @property
    def http_providers(self) -> list[HttpProvider]:
        return [p for p in self.providers if isinstance(p, HttpProvider)]

    def start(self) -> None:
        for provider in self.providers:
            provider.start()

    def wait_ready(self, timeout: float) -> bool:
        """Wait until every provider finished its first attempt (useful before starting workers)."""
        deadline = time.monotonic() + timeout
        return all(p.wait_ready(max(deadline - time.monotonic(), 0.0)) for p in self.providers)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop all providers in parallel; a thread stuck in a network call is abandoned (daemon)."""
        for provider in self.providers:
            provider.request_stop()
        deadline = time.monotonic() + timeout
        for provider in self.providers:
            provider.join(deadline - time.monotonic())

    def final_sync(self, timeout: float = FINAL_SYNC_TIMEOUT_S) -> bool:
        """One last stats report to every policy server (call after `stop()`); True when all accepted it.

        A failure is logged once for the whole set: what it could not report is lost.
        """
        accepted = all([p.final_sync(timeout) for p in self.http_providers])
        if not accepted:
            log.warning("final policy sync failed; match statistics since the last sync are lost")
        return accepted
