"""The Falcon ASGI application one gunicorn worker serves.

Routing is a dict lookup on (path, method) inside a single Falcon sink: the OTLP and admin
routes are exact paths, everything else (any path, any method) is passed through to
`upstream_url`. The ASGI lifespan opens the worker's upstream connection pool and a
background task that hands match statistics to the spool once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import perf_counter
from typing import Any, Protocol

import falcon.asgi

from edge import logs
from edge.protocols.admin import Health, MetricsEndpoint, Policies, update_snapshot_gauges
from edge.protocols.metrics import Metrics, get_metrics
from edge.protocols.otlp import OtlpRoute
from edge.protocols.passthrough import Passthrough
from edge.protocols.upstream import Upstream, UpstreamError, error_response
from edge.runtime import release_free_memory, tune_gc

log = logging.getLogger(__name__)

STATS_INTERVAL = 1.0


class Handler(Protocol):
    route: str

    async def __call__(self, req: Any, resp: Any) -> None: ...


class Router:
    """The sink every request goes through: pick the handler, answer errors, count."""

    def __init__(self, routes: dict[str, dict[str, Handler]], fallback: Handler, metrics: Metrics) -> None:
        self.routes = routes
        self.fallback = fallback
        self.metrics = metrics

    async def __call__(self, req: Any, resp: Any, **_: Any) -> None:
        scope = req.scope
        methods = self.routes.get(scope["path"])
        handler = (methods.get(scope["method"]) if methods else None) or self.fallback
        start = perf_counter()
        try:
            await handler(req, resp)
        except UpstreamError as exc:
            resp.stream = None
            error_response(resp, exc.status)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("%s %s failed", scope["method"], scope["path"])
            resp.stream = None
            error_response(resp, 502)
        self.metrics.request(handler.route, resp.status_code, perf_counter() - start)


class Lifespan:
    """Per-worker start-up and shutdown (Falcon calls these for the ASGI lifespan scope)."""

    def __init__(self, runtime: Any, upstream: Upstream, metrics: Metrics) -> None:
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self._task: asyncio.Task[None] | None = None

    async def process_startup(self, scope: Any, event: Any) -> None:
        tune_gc()
        await self.upstream.start()
        update_snapshot_gauges(self.runtime, self.metrics)
        self._task = asyncio.create_task(self._tick())

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._flush()
        await self.upstream.close()
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


# Which protocol routes each distribution serves; every distribution has the admin routes
# and passes everything else through. Datadog and Prometheus routes arrive with their modules.
DISTRIBUTIONS: dict[str, frozenset[str]] = {
    "edge": frozenset({"otlp"}),
    "otlp": frozenset({"otlp"}),
    "datadog": frozenset(),
    "prometheus": frozenset(),
}


def create_app(runtime: Any, distribution: str = "edge") -> falcon.asgi.App:
    """The worker's ASGI app with the routes of one distribution (`edge` serves them all)."""
    protocols = DISTRIBUTIONS[distribution]
    config = runtime.config
    logs.configure(config.log_level)
    metrics = get_metrics()
    upstream = Upstream(config, metrics)
    otlp = {"log": config.logs_url, "metric": config.metrics_url, "trace": config.upstream_url}
    routes: dict[str, dict[str, Handler]] = {}
    if "otlp" in protocols:
        routes.update({f"/v1/{signal}s": {"POST": OtlpRoute(signal, base, runtime, upstream, metrics)}
                       for signal, base in otlp.items()})
    health = Health()
    routes["/_health"] = {"GET": health, "HEAD": health}
    routes["/_edge/policies"] = {"GET": Policies(runtime)}
    routes["/_edge/metrics"] = {"GET": MetricsEndpoint(runtime, metrics)}
    router = Router(routes, Passthrough(config.upstream_url, upstream), metrics)

    app = falcon.asgi.App(middleware=[Lifespan(runtime, upstream, metrics)])
    app.resp_options.default_media_type = None  # relay responses exactly: no invented Content-Type
    app.add_sink(router, "/")
    return app
