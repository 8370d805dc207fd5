"""Hand-built OTLP traces for the tail sampling tests: spans with the fields policies read, as protobuf."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

MS = 1_000_000  # nanoseconds
T0 = 1_700_000_000_000 * MS


def trace_id(n: int) -> bytes:
    return n.to_bytes(16, "big")


def any_value(value: Any) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    if isinstance(value, bytes):
        return AnyValue(bytes_value=value)
    return AnyValue(string_value=value)


def attributes(values: Mapping[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in values.items()]


def span(trace: int, *, name: str = "op", start_ms: float = 0, end_ms: float = 1, status: int = 0,
         kind: int = Span.SPAN_KIND_SERVER, attrs: Mapping[str, Any] | None = None, trace_state: str = "",
         span_id: int = 1) -> Span:
    """A span of trace `trace`; times in ms from T0; status 0 UNSET, 1 OK, 2 ERROR."""
    return Span(trace_id=trace_id(trace), span_id=span_id.to_bytes(8, "big"), name=name, kind=kind,
                start_time_unix_nano=T0 + int(start_ms * MS), end_time_unix_nano=T0 + int(end_ms * MS),
                status=Status(code=status), attributes=attributes(attrs or {}), trace_state=trace_state)


def request(*groups: tuple[Mapping[str, Any], Iterable[Span]], scope: str = "lib") -> ExportTraceServiceRequest:
    """One ResourceSpans per (resource attributes, spans) group, its spans under one scope."""
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=Resource(attributes=attributes(res)),
                      scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=list(spans))])
        for res, spans in groups])


def payloads(*spans: Span, resource: Mapping[str, Any] | None = None) -> list[bytes]:
    """One trace's spans as a fragment payload each (several requests' worth of one trace)."""
    res = {"service.name": "svc"} if resource is None else resource
    return [request((res, [s])).SerializeToString() for s in spans]
