"""Policy providers driven by Lambda events instead of their own threads.

A provider thread could be frozen in the middle of a sync, which then fails on thaw and
backs off. Here every exchange happens while the extension is handling an event, so the
environment is awake for all of it: a file is read at start and re-read on INVOKE (a
hash of a small file), a policy server is synced at start, on an INVOKE once its
interval (the server's recommendation, or the back-off after a failure) has passed, and
one last time on SHUTDOWN with the statistics gathered since.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from edge.control.file_provider import FileProvider
from edge.control.http_provider import HttpProvider
from edge.control.providers import ProviderSet

log = logging.getLogger(__name__)


class EventDrivenPolicies:
    def __init__(self, providers: ProviderSet, clock: Callable[[], float] = time.monotonic) -> None:
        self.providers = providers
        self.clock = clock
        self._due: dict[str, float] = {}  # http provider id -> when its next sync is due

    def refresh(self, force: bool = False) -> None:
        """Re-read files; sync the policy servers that are due (all of them with `force`)."""
        now = self.clock()
        for provider in self.providers.providers:
            try:
                if isinstance(provider, FileProvider):
                    provider.check()
                elif force or now >= self._due.get(provider.id, 0.0):
                    self._sync(provider)
            except Exception:  # noqa: BLE001 - a broken provider keeps the last good policies
                log.exception("policy provider %s: refresh failed", provider.id)

    def _sync(self, provider: HttpProvider) -> None:
        provider.sync_once()
        self._due[provider.id] = self.clock() + provider.next_delay

    def final_sync(self, timeout: float) -> bool:
        """Report the last statistics to every policy server (on SHUTDOWN); True when all accepted them."""
        return self.providers.final_sync(timeout)
