"""A traces request split into one `TraceFragment` per trace id, the unit the sampler buffers and decides.

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
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import is_protobuf
from edge.tailsampling.interfaces import TraceFragment, TraceId
from edge.tailsampling.wire import LENGTH, WireError, fields, length_field, tag

UNTRACED: TraceId = bytes(16)

_RESOURCE_SPANS = tag(1, LENGTH)  # ExportTraceServiceRequest.resource_spans
_SCOPE_SPANS = tag(2, LENGTH)  # ResourceSpans.scope_spans
_SPANS = tag(2, LENGTH)  # ScopeSpans.spans
_TRACE_ID = tag(1, LENGTH)  # Span.trace_id
_TRACE_ID_LENGTH = 16

Groups = dict[TraceId, list[bytes]]


def split_by_trace(body: bytes, content_type: str) -> list[TraceFragment]:
    """One fragment per trace id, in order of first appearance; raises UndecodableBody when the body is not OTLP."""
    return split_protobuf(body if is_protobuf(content_type) else json_to_protobuf(body))


def split_protobuf(body: bytes) -> list[TraceFragment]:
    """The wire-level split of a serialised `ExportTraceServiceRequest`."""
    groups: Groups = {}
    counts: dict[TraceId, int] = {}
    try:
        for key, _, start, end in fields(body):
            if key == _RESOURCE_SPANS:
                _split_resource(body, start, end, groups, counts)
    except WireError as exc:
        raise UndecodableBody(f"not an OTLP traces request: {exc}") from None
    return [TraceFragment(trace_id, b"".join(parts), counts[trace_id]) for trace_id, parts in groups.items()]


def _split_resource(data: bytes, start: int, end: int, groups: Groups, counts: dict[TraceId, int]) -> None:
    """Adds one ResourceSpans field per trace id it holds spans of, to that trace's group."""
    head: list[bytes] = []  # the resource, schema_url and any other field but scope_spans
    scopes: Groups = {}
    for key, at, value, stop in fields(data, start, end):
        if key == _SCOPE_SPANS:
            _split_scope(data, value, stop, scopes, counts)
        else:
            head.append(data[at:stop])
    shared = b"".join(head)
    for trace_id, parts in scopes.items():
        groups.setdefault(trace_id, []).append(length_field(1, shared + b"".join(parts)))


def _split_scope(data: bytes, start: int, end: int, scopes: Groups, counts: dict[TraceId, int]) -> None:
    """Adds one ScopeSpans field per trace id it holds spans of, to that trace's scopes."""
    head: list[bytes] = []  # the scope, schema_url and any other field but spans
    spans: Groups = {}
    for key, at, value, stop in fields(data, start, end):
        if key == _SPANS:
            trace_id = _trace_id(data, value, stop)
            spans.setdefault(trace_id, []).append(data[at:stop])
            counts[trace_id] = counts.get(trace_id, 0) + 1
        else:
            head.append(data[at:stop])
    shared = b"".join(head)
    for trace_id, parts in spans.items():
        scopes.setdefault(trace_id, []).append(length_field(2, shared + b"".join(parts)))


def _trace_id(data: bytes, start: int, end: int) -> TraceId:
    """A span's trace id: its first field as every SDK writes it, else found among its fields."""
    if start + 2 + _TRACE_ID_LENGTH <= end and data[start] == _TRACE_ID and data[start + 1] == _TRACE_ID_LENGTH:
        return data[start + 2:start + 2 + _TRACE_ID_LENGTH]
    found = b""
    for key, _, value, stop in fields(data, start, end):
        if key == _TRACE_ID:
            found = data[value:stop]  # the last one wins, as for any repeated scalar field
    return found if len(found) == _TRACE_ID_LENGTH else UNTRACED


# ── OTLP/JSON ──

_ID_KEYS = (("traceId", "trace_id"), ("spanId", "span_id"), ("parentSpanId", "parent_span_id"))


def json_to_protobuf(body: bytes) -> bytes:
    """An OTLP/JSON traces request as protobuf; an id that is not hex is left out (the span becomes untraced)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise UndecodableBody(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise UndecodableBody("not an OTLP traces request: the body is not a JSON object")
    for span in _json_spans(doc):
        _ids_to_base64(span)
        for link in _member(span, "links", "links"):
            _ids_to_base64(link)
    try:
        return json_format.ParseDict(doc, ExportTraceServiceRequest(), ignore_unknown_fields=True).SerializeToString()
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise UndecodableBody(f"not an OTLP traces request: {exc}") from None


def _json_spans(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [span for resource in _member(doc, "resourceSpans", "resource_spans")
            for scope in _member(resource, "scopeSpans", "scope_spans")
            for span in _member(scope, "spans", "spans")]


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
