"""POST /api/v2/logs and /api/v2/series: Datadog agents point at edge unchanged.

The request handling is the OTLP route's (413 over `max_body_size`, 502/504 from the
upstream, headers such as DD-API-KEY forwarded and never logged, records counted in the
proxy metrics). A logs batch whose every record is dropped goes upstream as `[]` (docs/configuration.md),
so the agent gets the intake's own answer; an all-dropped series payload is answered 200
here like OTLP (`{}`, or an empty body for protobuf). Only the codec differs: Datadog JSON,
and the agent's protobuf series (`MetricPayload`, its default since 7.x), through
`edge.formats.datadog.body`. Fail-open: an unknown Content-Encoding, a protobuf logs body,
a payload that does not parse as the expected shape or an internal error forwards the
original bytes untouched.
"""

from __future__ import annotations

from edge.engine.engine import Engine
from edge.formats.datadog.body import evaluate
from edge.formats.evaluated import Evaluated
from edge.formats.otlp.body import is_protobuf
from edge.policy.model import LOG, METRIC
from edge.protocols.otlp import OtlpRoute
from edge.protocols.self_metrics import Metrics
from edge.protocols.upstream import RequestHead, Upstream
from edge.runtime import Runtime

LOGS_PATH = "/api/v2/logs"
SERIES_PATH = "/api/v2/series"


class DatadogRoute(OtlpRoute):
    """One Datadog intake endpoint: the OTLP route's request handling with the Datadog codec."""

    def __init__(self, signal: str, route: str, base_url: str, runtime: Runtime, upstream: Upstream,
                 metrics: Metrics) -> None:
        super().__init__(signal, base_url, runtime, upstream, metrics)
        self.route = route
        if signal == LOG:
            self.all_dropped = b"[]"  # docs/configuration.md "Routes": an all-dropped logs batch goes upstream as []

    def filters(self, head: RequestHead) -> bool:
        return self.signal == METRIC or not is_protobuf(head.content_type)  # logs are JSON only

    def evaluate(self, engine: Engine, decoded: bytes, head: RequestHead) -> Evaluated:
        return evaluate(engine, self.signal, decoded, is_protobuf(head.content_type))


def datadog_routes(runtime: Runtime, upstream: Upstream, metrics: Metrics) -> dict[str, dict[str, DatadogRoute]]:
    """The Datadog routes of the app: logs go to `logs_url`, series to `metrics_url` (same path and query),
    or to `upstream_url` when that URL is a gRPC upstream (`Config.http_url`)."""
    config = runtime.config
    return {
        LOGS_PATH: {"POST": DatadogRoute(LOG, "datadog_logs", config.http_url(config.logs_url), runtime, upstream,
                                         metrics)},
        SERIES_PATH: {"POST": DatadogRoute(METRIC, "datadog_series", config.http_url(config.metrics_url), runtime,
                                           upstream, metrics)},
    }
