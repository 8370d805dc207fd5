"""`SpanMetricsRollup`: the spanmetrics series of what is not sampled, as delta OTLP metrics, cardinality-bounded."""

from __future__ import annotations

from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AggregationTemporality
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from edge.tailsampling.interfaces import SpanRollup
from edge.tailsampling.rollup import BOUNDS_MS, SpanMetricsRollup
from tests.tailsampling.traces import payloads, request, span
from tests.test_declared_interfaces import assert_implements

DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA


class NanoClock:
    def __init__(self) -> None:
        self.now = 1_000_000_000_000

    def __call__(self) -> int:
        return self.now


def attrs(point: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in point.attributes}


def collected(rollup: SpanMetricsRollup) -> ExportMetricsServiceRequest:
    data = rollup.collect()
    assert data is not None
    return ExportMetricsServiceRequest.FromString(data)


def points(message: ExportMetricsServiceRequest, metric: str) -> dict[tuple[Any, ...], Any]:
    """Data points of one metric, keyed by (resource service.name, their attributes sorted)."""
    out = {}
    for rm in message.resource_metrics:
        service = attrs(rm.resource).get("service.name")
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name == metric:
                    data = m.sum if m.HasField("sum") else m.histogram
                    for p in data.data_points:
                        out[(service, *sorted(attrs(p).items()))] = p
    return out


def key(service: str, name: str, kind: str = "SPAN_KIND_SERVER", status: str = "STATUS_CODE_UNSET") -> tuple:
    return (service, ("service.name", service), ("span.kind", kind), ("span.name", name), ("status.code", status))


def test_calls_and_durations_per_service_name_kind_and_status() -> None:
    clock = NanoClock()
    rollup = SpanMetricsRollup(100, clock)
    start = clock.now
    service_a = {"service.name": "a"}
    rollup.add(payloads(span(1, name="GET", end_ms=3), span(1, name="GET", end_ms=3000), resource=service_a))
    rollup.add(payloads(span(2, name="GET", status=2, end_ms=2),
                        span(2, name="q", kind=Span.SPAN_KIND_CLIENT, end_ms=20000), resource=service_a))
    rollup.add([request(({"service.name": "b"}, [span(3, name="GET")]), ({}, [span(3, name="x")])).SerializeToString()])
    clock.now += 60_000_000_000
    message = collected(rollup)
    calls = points(message, "traces.span.metrics.calls")
    assert {k: p.as_int for k, p in calls.items()} == {
        key("a", "GET"): 2, key("a", "GET", status="STATUS_CODE_ERROR"): 1,
        key("a", "q", kind="SPAN_KIND_CLIENT"): 1, key("b", "GET"): 1, key("", "x"): 1}
    assert all((p.start_time_unix_nano, p.time_unix_nano) == (start, clock.now) for p in calls.values())
    durations = points(message, "traces.span.metrics.duration")
    get = durations[key("a", "GET")]
    assert (get.count, get.sum, get.min, get.max) == (2, 3003.0, 3.0, 3000.0)
    assert list(get.explicit_bounds) == list(BOUNDS_MS) and len(get.bucket_counts) == 17
    assert get.bucket_counts[1] == 1 and get.bucket_counts[13] == 1 and sum(get.bucket_counts) == 2
    assert durations[key("a", "GET", status="STATUS_CODE_ERROR")].bucket_counts[0] == 1  # 2 ms: bounds are inclusive
    assert durations[key("a", "q", kind="SPAN_KIND_CLIENT")].bucket_counts[16] == 1  # over 15 s
    metrics = {m.name: m for rm in message.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert metrics["traces.span.metrics.calls"].sum.aggregation_temporality == DELTA
    assert metrics["traces.span.metrics.calls"].sum.is_monotonic
    assert metrics["traces.span.metrics.duration"].histogram.aggregation_temporality == DELTA
    assert metrics["traces.span.metrics.duration"].unit == "ms"


def test_each_collection_is_the_delta_since_the_last_and_empty_is_none() -> None:
    clock = NanoClock()
    rollup = SpanMetricsRollup(10, clock)
    assert rollup.collect() is None
    first = clock.now
    rollup.add(payloads(span(1)))
    clock.now += 5
    assert {p.as_int for p in points(collected(rollup), "traces.span.metrics.calls").values()} == {1}
    rollup.add(payloads(span(2), span(2)))
    clock.now += 7
    (point,) = points(collected(rollup), "traces.span.metrics.calls").values()
    assert (point.as_int, point.start_time_unix_nano, point.time_unix_nano) == (2, first + 5, first + 12)
    assert rollup.collect() is None and rollup.series == 0


def test_series_beyond_the_limit_fold_into_one_overflow_series() -> None:
    rollup = SpanMetricsRollup(2, NanoClock())
    rollup.add(payloads(*[span(1, name=f"op{i}") for i in range(5)], span(1, name="op0")))
    assert (rollup.series, rollup.overflowed) == (3, 3)
    rollup.add(payloads(span(2, name="op1"), span(2, name="op9")))
    assert (rollup.series, rollup.overflowed) == (3, 4)
    message = collected(rollup)
    calls = points(message, "traces.span.metrics.calls")
    assert {k: p.as_int for k, p in calls.items()} == {
        key("svc", "op0"): 2, key("svc", "op1"): 2, (None, ("otel.metric.overflow", True)): 4}
    overflow = points(message, "traces.span.metrics.duration")[(None, ("otel.metric.overflow", True))]
    assert overflow.count == 4
    rollup.add(payloads(span(3, name="op7")))  # a new interval: room again
    assert list(points(collected(rollup), "traces.span.metrics.calls")) == [key("svc", "op7")]
    assert rollup.overflowed == 4  # counted since start


def test_undecodable_payloads_are_not_counted() -> None:
    rollup = SpanMetricsRollup(10, NanoClock())
    rollup.add([b"\x0a\x02\xff\xff"])
    assert rollup.collect() is None


def test_the_rollup_is_a_span_rollup() -> None:
    assert_implements(SpanMetricsRollup(1), SpanRollup)
