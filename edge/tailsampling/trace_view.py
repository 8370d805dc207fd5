"""A whole trace summarised once from its payloads: what every policy type reads, and nothing more.

The decider parses a trace's fragments a single time and every policy reads the summary,
instead of each policy walking the spans again. Attribute values are gathered only for the
keys some policy names, because reading every attribute of every span is the one cost that
grows with what senders put in their spans rather than with the policies.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from edge.tailsampling.interfaces import TraceId

AttributeValue = str | bool | int | float  # the AnyValue kinds a policy can compare; arrays, maps and bytes are not


@dataclass(slots=True)
class TraceView:
    """One trace as the policies see it (times in Unix nanoseconds)."""

    trace_id: TraceId
    span_count: int = 0
    byte_size: int = 0  # the fragments' protobuf bytes, resource and scope included
    earliest_start: int = 0
    latest_end: int = 0
    status_codes: set[int] = field(default_factory=set)  # Status.code: 0 UNSET, 1 OK, 2 ERROR
    trace_states: set[str] = field(default_factory=set)  # the W3C tracestate headers, as written
    attributes: dict[str, list[AttributeValue]] = field(default_factory=dict)  # span and resource values per key

    @property
    def duration_ns(self) -> int:
        """Latest span end minus earliest span start (the Collector's trace duration)."""
        return max(0, self.latest_end - self.earliest_start)

    def values(self, key: str) -> list[AttributeValue]:
        """Every value attribute `key` has on a span or a resource of the trace."""
        return self.attributes.get(key, [])


def summarise(trace_id: TraceId, payloads: Sequence[bytes], keys: frozenset[str]) -> TraceView:
    """The view of a trace from its fragments; raises google.protobuf's DecodeError when a payload is not protobuf."""
    body = b"".join(payloads)  # serialised messages concatenate into their merge
    view = TraceView(trace_id, byte_size=len(body))
    starts: list[int] = []
    ends: list[int] = []
    for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
        if keys:
            _collect(view.attributes, resource_spans.resource.attributes, keys)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                starts.append(span.start_time_unix_nano)
                ends.append(span.end_time_unix_nano)
                view.status_codes.add(span.status.code)
                if span.trace_state:
                    view.trace_states.add(span.trace_state)
                if keys:
                    _collect(view.attributes, span.attributes, keys)
    view.span_count = len(starts)
    if starts:
        view.earliest_start, view.latest_end = min(starts), max(ends)
    return view


def _collect(into: dict[str, list[AttributeValue]], attributes: Iterable[KeyValue], keys: frozenset[str]) -> None:
    for kv in attributes:
        if kv.key in keys:
            kind = kv.value.WhichOneof("value")
            if kind in _SCALARS:
                into.setdefault(kv.key, []).append(getattr(kv.value, kind))


_SCALARS = frozenset({"string_value", "bool_value", "int_value", "double_value"})
