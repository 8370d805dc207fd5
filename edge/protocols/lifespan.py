"""A serving worker's start-up and shutdown, shared by the HTTP app and the gRPC workers.

Start-up opens the worker's upstream connections, starts the extensions and a background task
that hands match statistics to the spool (and gives freed memory back) once a second; shutdown
stops the task, flushes once more, closes the connections and stops the extensions. It lives
apart from the HTTP app so that a gRPC worker runs it without importing Falcon and the HTTP routes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from edge.memory import release_free_memory, tune_gc
from edge.protocols.admin import update_snapshot_gauges
from edge.protocols.self_metrics import Metrics
from edge.protocols.upstream import Upstream
from edge.runtime import Runtime

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0


class Lifespan:
    """Per-worker start-up and shutdown: Falcon calls these for the ASGI lifespan scope, a gRPC worker
    around its server."""

    def __init__(self, runtime: Runtime, upstream: Upstream, metrics: Metrics) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def process_startup(self, scope: Any, event: Any) -> None:
        tune_gc()
        await self.upstream.start()
        update_snapshot_gauges(self.runtime, self.metrics)
        self.runtime.start_extensions()
        self._task = asyncio.create_task(self._tick())

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._flush()
        await self.upstream.close()
        try:
            await asyncio.to_thread(self.runtime.stop_extensions)
        except Exception:  # noqa: BLE001 - shutting down must go on
            log.exception("stopping extensions failed")
        with contextlib.suppress(Exception):
            self.runtime.close()

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self._flush()
            release_free_memory()

    def _flush(self) -> None:
        try:
            self.runtime.flush_stats()
            update_snapshot_gauges(self.runtime, self.metrics)
        except Exception:  # noqa: BLE001 - counts stay in memory and go with the next flush
            log.exception("flushing match statistics failed")
