"""A traces request split into one `TraceFragment` per trace id, the unit the sampler buffers and decides.

A logs request splits the same way (`split_logs_by_trace`, for `logs.follow_traces`): its
envelopes have the traces request's shape (field 1 of the request, 2 of the resource, 2 of
the scope), only a record's trace id is its field 9 where a span's is its field 1.

Protobuf bodies are regrouped at the wire level (`wire`): each span's bytes are copied as
they arrived under a copy of its resource's and scope's own fields, so a fragment is a
valid `ExportTraceServiceRequest` and the fragments of one request hold exactly its spans.
OTLP/JSON bodies are converted to protobuf first (their ids are hex where protobuf's JSON
mapping expects base64), so everything after the split speaks one encoding.

Spans without a usable trace id (missing, not 16 bytes, not 32 hex digits, or all zero,
which OTLP calls invalid) cannot be grouped with anything: they share one fragment keyed
by `UNTRACED`, which the sampler passes through instead of buffering.
"""

from __future__ import annotations

import base64
from typing import Any, NamedTuple

import orjson
from google.protobuf import json_format
from google.protobuf.message import Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import is_protobuf
from edge.formats.protobuf_wire import LENGTH, WireError, fields, length_field, tag
from edge.tailsampling.interfaces import TraceFragment, TraceId
from edge.tailsampling.spans import RESOURCE_SPANS, SCOPE_SPANS, SPANS

UNTRACED: TraceId = bytes(16)

_TRACE_ID = tag(1, LENGTH)  # Span.trace_id
_LOG_TRACE_ID = tag(9, LENGTH)  # LogRecord.trace_id
_TRACE_ID_LENGTH = 16

Groups = dict[TraceId, list[bytes]]


def split_by_trace(body: bytes, content_type: str) -> list[TraceFragment]:
    """One fragment per trace id, in order of first appearance; raises UndecodableBody when the body is not OTLP."""
    return split_protobuf(body if is_protobuf(content_type) else json_to_protobuf(body))


def split_logs_by_trace(body: bytes, content_type: str) -> list[TraceFragment]:
    """A logs request's records by trace id (`spans` counts records); raises UndecodableBody when it is not OTLP."""
    if not is_protobuf(content_type):
        body = json_to_protobuf(body, _LOGS_JSON)
    return split_protobuf(body, _LOG_TRACE_ID, "logs")


def split_protobuf(body: bytes, trace_id_tag: int = _TRACE_ID, what: str = "traces") -> list[TraceFragment]:
    """The wire-level split of a serialised `ExportTraceServiceRequest` (or, by `trace_id_tag`, of a logs request)."""
    groups: Groups = {}
    counts: dict[TraceId, int] = {}
    try:
        for key, _, start, end in fields(body):
            if key == RESOURCE_SPANS:
                _split_resource(body, start, end, groups, counts, trace_id_tag)
    except WireError as exc:
        raise UndecodableBody(f"not an OTLP {what} request: {exc}") from None
    return [TraceFragment(trace_id, b"".join(parts), counts[trace_id]) for trace_id, parts in groups.items()]


def _split_resource(data: bytes, start: int, end: int, groups: Groups, counts: dict[TraceId, int],
                    trace_id_tag: int) -> None:
    """Adds one ResourceSpans field per trace id it holds spans of, to that trace's group."""
    head: list[bytes] = []  # the resource, schema_url and any other field but scope_spans
    scopes: Groups = {}
    for key, at, value, stop in fields(data, start, end):
        if key == SCOPE_SPANS:
            _split_scope(data, value, stop, scopes, counts, trace_id_tag)
        else:
            head.append(data[at:stop])
    shared = b"".join(head)
    for trace_id, parts in scopes.items():
        groups.setdefault(trace_id, []).append(length_field(1, shared + b"".join(parts)))


def _split_scope(data: bytes, start: int, end: int, scopes: Groups, counts: dict[TraceId, int],
                 trace_id_tag: int) -> None:
    """Adds one ScopeSpans field per trace id it holds spans of, to that trace's scopes."""
    head: list[bytes] = []  # the scope, schema_url and any other field but spans
    spans: Groups = {}
    for key, at, value, stop in fields(data, start, end):
        if key == SPANS:
            trace_id = _trace_id(data, value, stop, trace_id_tag)
            spans.setdefault(trace_id, []).append(data[at:stop])
            counts[trace_id] = counts.get(trace_id, 0) + 1
        else:
            head.append(data[at:stop])
    shared = b"".join(head)
    for trace_id, parts in spans.items():
        scopes.setdefault(trace_id, []).append(length_field(2, shared + b"".join(parts)))


def _trace_id(data: bytes, start: int, end: int, trace_id_tag: int) -> TraceId:
    """A span's trace id: its first field as every SDK writes it, else found among its fields."""
    if start + 2 + _TRACE_ID_LENGTH <= end and data[start] == trace_id_tag and data[start + 1] == _TRACE_ID_LENGTH:
        return data[start + 2:start + 2 + _TRACE_ID_LENGTH]
    found = b""
    for key, _, value, stop in fields(data, start, end):
        if key == trace_id_tag:
            found = data[value:stop]  # the last one wins, as for any repeated scalar field
    return found if len(found) == _TRACE_ID_LENGTH else UNTRACED


# ── OTLP/JSON ──

_ID_KEYS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


class JsonShape(NamedTuple):
    """Where a signal's OTLP/JSON request keeps its records, and its message."""

    what: str
    message: type[Message]
    keys: tuple[tuple[str, str], tuple[str, str], tuple[str, str]]  # request → resource → scope → records


_TRACES_JSON = JsonShape("traces", ExportTraceServiceRequest,
                         (("resourceSpans", "resource_spans"), ("scopeSpans", "scope_spans"), ("spans", "spans")))
_LOGS_JSON = JsonShape("logs", ExportLogsServiceRequest,
                       (("resourceLogs", "resource_logs"), ("scopeLogs", "scope_logs"), ("logRecords", "log_records")))


def json_to_protobuf(body: bytes, shape: JsonShape = _TRACES_JSON) -> bytes:
    """An OTLP/JSON traces (or logs) request as protobuf; an id that is not hex is left out (the record becomes
    untraced)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UndecodableBody(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UndecodableBody(f"not an OTLP {shape.what} request: the body is not a JSON object")
    for record in _json_records(doc, shape):
        _ids_to_base64(record)
        for link in _member(record, "links", "links"):
            _ids_to_base64(link)
    try:
        return json_format.ParseDict(doc, shape.message(), ignore_unknown_fields=True).SerializeToString()
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise UndecodableBody(f"not an OTLP {shape.what} request: {exc}") from None


def _json_records(doc: dict[str, Any], shape: JsonShape) -> list[dict[str, Any]]:
    resources, scopes, records = shape.keys
    return [record for resource in _member(doc, *resources)
            for scope in _member(resource, *scopes)
            for record in _member(scope, *records)]


def _member(parent: Any, camel: str, snake: str) -> list[Any]:
    """A list member under either spelling the JSON mapping accepts; malformed shapes are left to ParseDict."""
    if not isinstance(parent, dict):
        return []
    items = parent.get(camel, parent.get(snake))
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def _ids_to_base64(record: dict[str, Any]) -> None:
    """OTLP/JSON writes ids in hex; protobuf's JSON mapping reads bytes as base64."""
    for spellings in _ID_KEYS:
        for name in spellings:
            if name in record:
                record[name] = _hex_to_base64(record[name])
                if not record[name]:
                    del record[name]


def _hex_to_base64(text: Any) -> str:
    try:
        return base64.b64encode(bytes.fromhex(text)).decode() if isinstance(text, str) else ""
    except ValueError:
        return ""
