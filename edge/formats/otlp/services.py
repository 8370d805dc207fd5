"""OTLP's names per signal: the gRPC service whose `Export` takes it and the OTLP/HTTP path it is posted to."""

from __future__ import annotations

SERVICES = {
    "log": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metric": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "trace": "opentelemetry.proto.collector.trace.v1.TraceService",
}
HTTP_PATHS = {"log": "/v1/logs", "metric": "/v1/metrics", "trace": "/v1/traces"}


def export_method(signal: str) -> str:
    """The gRPC method path of the signal's `Export`."""
    return f"/{SERVICES[signal]}/Export"
