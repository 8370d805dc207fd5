"""Span metrics of the traces that are not sampled, so dashboards stay right while their spans are dropped.

The series are the Collector `spanmetrics` connector's: `traces.span.metrics.calls` (a
monotonic delta sum) and `traces.span.metrics.duration` (a delta histogram in ms with its
default buckets), per `service.name`, `span.name`, `span.kind` and `status.code`, the enum
values spelled as it spells them (`SPAN_KIND_SERVER`, `STATUS_CODE_ERROR`). Each collection
covers the time since the previous one. Series are grouped by service under a resource
holding that `service.name` (empty when the spans' resource has none), which is how
backends attribute metrics to services.

Past `cardinality_limit` distinct series in one interval, further series are folded into a
single series whose only attribute is `otel.metric.overflow=true` (under an empty resource):
memory and the metrics backend's bill stay bounded whatever the span names look like.
"""

from __future__ import annotations

import logging
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

log = logging.getLogger(__name__)

CALLS = "traces.span.metrics.calls"
DURATION = "traces.span.metrics.duration"
SCOPE = "edge.tailsampling"
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
# The spanmetrics connector's default histogram buckets (ms); the last bucket is everything above 15 s.
BOUNDS_MS = (2.0, 4.0, 6.0, 8.0, 10.0, 50.0, 100.0, 200.0, 400.0, 800.0, 1000.0, 1400.0, 2000.0, 5000.0, 10000.0,
             15000.0)
DELTA = AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
_KIND_NAMES = {value: name for name, value in Span.SpanKind.items()}
_STATUS_NAMES = {value: name for name, value in Status.StatusCode.items()}


class SeriesKey(NamedTuple):
    """The attributes of one series; None everywhere for the overflow series."""

    service: str | None
    name: str | None
    kind: int | None
    status: int | None


OVERFLOW = SeriesKey(None, None, None, None)


@dataclass(slots=True)
class Series:
    """Calls and the duration histogram of one series during the interval."""

    calls: int = 0
    total_ms: float = 0.0
    min_ms: float = float("inf")
    max_ms: float = 0.0
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS_MS) + 1))

    def add(self, duration_ms: float) -> None:
        self.calls += 1
        self.total_ms += duration_ms
        self.min_ms = min(self.min_ms, duration_ms)
        self.max_ms = max(self.max_ms, duration_ms)
        self.buckets[bisect_left(BOUNDS_MS, duration_ms)] += 1  # buckets include their upper bound


class SpanMetricsRollup:
    """The `SpanRollup` of the sampler (not thread-safe: the sampler adds and collects from one thread).

    `series` is the number of series held for the current interval (the overflow series
    included); `overflowed` counts every span folded into the overflow series since start."""

    def __init__(self, cardinality_limit: int, clock: Callable[[], int] = time.time_ns) -> None:
        self._limit = cardinality_limit
        self._clock = clock
        self._series: dict[SeriesKey, Series] = {}
        self._since = clock()
        self.overflowed = 0

    @property
    def series(self) -> int:
        return len(self._series)

    def add(self, payloads: Sequence[bytes]) -> None:
        try:
            request = ExportTraceServiceRequest.FromString(b"".join(payloads))
        except DecodeError:  # the decider samples what it cannot read, so this is not reached in practice
            log.warning("span metrics: a trace's fragments are not OTLP protobuf; not counted")
            return
        for resource_spans in request.resource_spans:
            service = _service_name(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    duration_ms = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e6
                    self._series_of(SeriesKey(service, span.name, span.kind, span.status.code)).add(duration_ms)

    def collect(self) -> bytes | None:
        now = self._clock()
        series, self._series, since, self._since = self._series, {}, self._since, now
        if not series:
            return None
        by_service: dict[str | None, list[tuple[SeriesKey, Series]]] = {}
        for key, values in series.items():
            by_service.setdefault(key.service, []).append((key, values))
        return ExportMetricsServiceRequest(resource_metrics=[
            _resource_metrics(service, members, since, now) for service, members in by_service.items()
        ]).SerializeToString()

    def _series_of(self, key: SeriesKey) -> Series:
        found = self._series.get(key)
        if found is not None:
            return found
        if len(self._series) - (OVERFLOW in self._series) >= self._limit:
            self.overflowed += 1
            key = OVERFLOW
        return self._series.setdefault(key, Series())


def _service_name(attributes: Iterable[KeyValue]) -> str:
    for kv in attributes:
        if kv.key == "service.name":
            return kv.value.string_value
    return ""


# ── the OTLP metrics request ──


def _resource_metrics(service: str | None, members: list[tuple[SeriesKey, Series]], since: int,
                      now: int) -> ResourceMetrics:
    resource = Resource() if service is None else Resource(attributes=[_attribute("service.name", service)])
    calls = [NumberDataPoint(attributes=_attributes(key), start_time_unix_nano=since, time_unix_nano=now,
                             as_int=values.calls) for key, values in members]
    durations = [HistogramDataPoint(attributes=_attributes(key), start_time_unix_nano=since, time_unix_nano=now,
                                    count=values.calls, sum=values.total_ms, bucket_counts=values.buckets,
                                    explicit_bounds=BOUNDS_MS, min=values.min_ms, max=values.max_ms)
                 for key, values in members]
    metrics = [Metric(name=CALLS, sum=Sum(data_points=calls, aggregation_temporality=DELTA, is_monotonic=True)),
               Metric(name=DURATION, unit="ms", histogram=Histogram(data_points=durations,
                                                                    aggregation_temporality=DELTA))]
    return ResourceMetrics(resource=resource,
                           scope_metrics=[ScopeMetrics(scope=InstrumentationScope(name=SCOPE), metrics=metrics)])


def _attributes(key: SeriesKey) -> list[KeyValue]:
    if key == OVERFLOW:
        return [KeyValue(key=OVERFLOW_ATTRIBUTE, value=AnyValue(bool_value=True))]
    return [_attribute("service.name", key.service or ""), _attribute("span.name", key.name or ""),
            _attribute("span.kind", _KIND_NAMES.get(key.kind, str(key.kind))),
            _attribute("status.code", _STATUS_NAMES.get(key.status, str(key.status)))]


def _attribute(name: str, value: str) -> KeyValue:
    return KeyValue(key=name, value=AnyValue(string_value=value))
