"""The Falcon ASGI application one gunicorn worker serves.

Routing is a dict lookup on (path, method) inside a single Falcon sink: the OTLP routes
(`otlp.{logs,metrics,traces}_path`) and the admin routes are exact paths (plus the
`/metrics/` prefix of the scrape proxy), everything else (any path, any method) is passed
through to `upstream_url`. The ASGI lifespan (`edge.protocols.lifespan`) opens the worker's
upstream connection pool and a background task that hands match statistics to the spool
once a second.
"""

from __future__ import annotations

import logging
from time import perf_counter
from typing import Any, Protocol

import falcon.asgi

from edge import logs
from edge.distributions import PROTOCOLS
from edge.protocols.admin import Health, MetricsEndpoint, Policies
from edge.protocols.body import Admission, BodyState, BodyWatch, body_state, worker_share
from edge.protocols.datadog import datadog_routes
from edge.protocols.lifespan import Lifespan
from edge.protocols.otlp import OtlpRoute
from edge.protocols.otlp_upstream import otlp_client
from edge.protocols.passthrough import Passthrough
from edge.protocols.peer_forwards import peer_routes
from edge.protocols.prometheus import prometheus_routes
from edge.protocols.self_metrics import Metrics, get_metrics
from edge.protocols.tail_handoff import SamplerConnection, handoffs
from edge.protocols.upstream import Upstream, UpstreamError, busy_response, error_response, late_body_response
from edge.runtime import Runtime

log = logging.getLogger(__name__)


class Handler(Protocol):
    route: str

    async def __call__(self, req: Any, resp: Any) -> None: ...


# Answered locally and cheaply: never refused for capacity, so health checks see a busy proxy as alive.
LOCAL_ROUTES = frozenset({"health", "policies", "metrics"})


class Router:
    """The sink every request goes through: pick the handler, admit or refuse it, answer errors, count.

    Admission: the HTTP server limits no connections (idle keep-alive ones cost little), so each worker
    counts the requests it is working on and answers 503 with Retry-After beyond its share of
    `max_connections`. A request with a body is counted once the body is complete (see
    `edge.protocols.body`); one without, here. The local admin routes are always served.
    """

    def __init__(self, routes: dict[str, dict[str, Handler]], fallback: Handler, metrics: Metrics,
                 prefixes: dict[str, dict[str, Handler]] | None = None) -> None:
        self.routes = routes
        self.prefixes = prefixes or {}  # path prefix -> methods, for paths no exact route names
        self.fallback = fallback
        self.metrics = metrics

    def _handler(self, scope: dict[str, Any]) -> Handler:
        methods = self.routes.get(scope["path"])
        if methods is None and self.prefixes:
            methods = next((m for prefix, m in self.prefixes.items() if scope["path"].startswith(prefix)), None)
        return (methods.get(scope["method"]) if methods else None) or self.fallback

    async def __call__(self, req: Any, resp: Any, **_: Any) -> None:
        scope = req.scope
        handler = self._handler(scope)
        state = body_state(scope)
        state.routed = True
        if handler.route in LOCAL_ROUTES:
            state.exempt = True
        elif (state.complete or not expects_body(scope["headers"])) and not state.admit():
            busy_response(resp)
            self.metrics.request(handler.route, 503, 0.0)
            return
        start = perf_counter()
        try:
            await handler(req, resp)
        except Exception as exc:  # noqa: BLE001 - never a traceback to the client
            resp.stream = None
            self._failed(scope, state, exc, resp)
        finally:
            state.release()
        self.metrics.request(handler.route, resp.status_code, perf_counter() - start)

    @staticmethod
    def _failed(scope: dict[str, Any], state: BodyState, exc: Exception, resp: Any) -> None:
        """The answer to a request whose handler raised (the body's own failures first: an
        upstream error can wrap them when the body was being streamed)."""
        if state.timed_out:
            late_body_response(resp)
        elif state.refused:
            busy_response(resp)
        elif isinstance(exc, UpstreamError):
            error_response(resp, exc.status)
        else:
            log.exception("%s %s failed", scope["method"], scope["path"], exc_info=exc)
            error_response(resp, 502)


def expects_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request announces a body (a non-zero Content-Length or chunked transfer)."""
    for name, value in headers:
        lowered = name.lower()
        if lowered == b"content-length":
            return value.strip() not in (b"0", b"")
        if lowered == b"transfer-encoding":
            return True
    return False


def create_app(runtime: Runtime, distribution: str = "edge", sampler: SamplerConnection | None = None) -> BodyWatch:
    """The worker's ASGI app with the routes of one distribution (`edge` serves them all); with a
    `sampler`, the OTLP traces route (and the logs route under `logs.follow_traces`) hands what
    edge's policies leave to the tail sampler.

    The peers' internal routes (`peer_routes`: spans, and log records under `logs.follow_traces`) exist
    wherever OTLP is served, so a peer's forward is never passed through to the upstream: without a
    sampler it is answered 404 and the peer keeps what it sent."""
    protocols = PROTOCOLS[distribution]
    config = runtime.config
    logs.configure(config.log_level)
    metrics = get_metrics()
    upstream = Upstream(config, metrics)
    routes: dict[str, dict[str, Handler]] = {}
    if "otlp" in protocols:  # on the configured paths; forwarded to the signal's URL + the path received
        paths = config.otlp.paths()
        otlp_routes = {signal: OtlpRoute(signal, base, runtime, upstream, metrics,
                                         otlp_client(config, signal, base, upstream))
                       for signal, base in config.otlp_urls().items()}
        for signal, handoff in handoffs(config, sampler).items():
            otlp_routes[signal].handoff = handoff
        routes.update({paths[signal]: {"POST": route} for signal, route in otlp_routes.items()})
        for path, forwards in peer_routes(sampler, config.tail_sampling.logs.follow_traces,
                                          config.max_decoded_bytes).items():
            routes[path] = {"POST": forwards}
    if "datadog" in protocols:
        routes.update(datadog_routes(runtime, upstream, metrics))
    prefixes: dict[str, dict[str, Handler]] = {}
    if "prometheus" in protocols:
        exact, prefixes = prometheus_routes(runtime, upstream, metrics)
        routes.update(exact)
    health = Health()
    routes["/_health"] = {"GET": health, "HEAD": health}
    routes["/_edge/policies"] = {"GET": Policies(runtime)}
    routes["/_edge/metrics"] = {"GET": MetricsEndpoint(runtime, metrics)}
    router = Router(routes, Passthrough(config.upstream_url, upstream), metrics, prefixes)
    admission = Admission(worker_share(config.max_connections, config.workers))

    app = falcon.asgi.App(middleware=[Lifespan(runtime, upstream, metrics)])
    app.resp_options.default_media_type = None  # relay responses exactly: no invented Content-Type
    app.add_sink(router, "/")
    return BodyWatch(app, admission, config.client_body_timeout)
