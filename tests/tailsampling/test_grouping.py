"""`split_by_trace`: one fragment per trace id, protobuf and OTLP/JSON, every span kept with its resource and scope."""

from __future__ import annotations

import base64
from collections import Counter

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from edge.formats.errors import UndecodableBody
from edge.tailsampling.grouping import UNTRACED, split_by_trace
from tests.tailsampling.traces import attributes, request, span, trace_id

PROTOBUF = "application/x-protobuf"
Triple = tuple[bytes, bytes, bytes]  # resource, scope, span: each serialised


def triples(message: ExportTraceServiceRequest) -> Counter[Triple]:
    """Every span with its resource and scope (schema urls included), as a multiset."""
    return Counter((rs.resource.SerializeToString() + rs.schema_url.encode(),
                    ss.scope.SerializeToString() + ss.schema_url.encode(), sp.SerializeToString())
                   for rs in message.resource_spans for ss in rs.scope_spans for sp in ss.spans)


def parse(payload: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(payload)


def test_one_fragment_per_trace_with_only_its_spans_and_their_resource_and_scope() -> None:
    message = request(({"service.name": "a"}, [span(1, name="a1"), span(2, name="a2"), span(1, name="a3")]),
                      ({"service.name": "b"}, [span(2, name="b1")]))
    message.resource_spans[1].schema_url = "https://schema/1"
    message.resource_spans[1].scope_spans[0].schema_url = "https://schema/scope"
    fragments = split_by_trace(message.SerializeToString(), PROTOBUF)
    assert [(f.trace_id, f.spans) for f in fragments] == [(trace_id(1), 2), (trace_id(2), 2)]
    first, second = (parse(f.payload) for f in fragments)
    assert [[sp.name for ss in rs.scope_spans for sp in ss.spans] for rs in first.resource_spans] == [["a1", "a3"]]
    assert [[sp.name for ss in rs.scope_spans for sp in ss.spans] for rs in second.resource_spans] == [["a2"], ["b1"]]
    assert second.resource_spans[1].resource == message.resource_spans[1].resource
    assert second.resource_spans[1].schema_url == "https://schema/1"
    assert second.resource_spans[1].scope_spans[0].schema_url == "https://schema/scope"
    assert second.resource_spans[1].scope_spans[0].scope.name == "lib"


def test_the_span_bytes_are_copied_as_they_arrived() -> None:
    """No re-encoding: each span's serialised bytes appear verbatim in its fragment."""
    s = span(7, attrs={"k": "v", "n": 3})
    (fragment,) = split_by_trace(request(({}, [s])).SerializeToString(), PROTOBUF)
    assert s.SerializeToString() in fragment.payload


def test_spans_without_a_usable_trace_id_share_the_untraced_fragment() -> None:
    short = Span(trace_id=b"\x01" * 8, name="short")
    zero = Span(trace_id=bytes(16), name="zero")
    missing = Span(name="missing")
    fragments = split_by_trace(request(({}, [short, span(3), zero, missing])).SerializeToString(), PROTOBUF)
    assert [(f.trace_id, f.spans) for f in fragments] == [(UNTRACED, 3), (trace_id(3), 1)]


def test_a_trace_id_that_is_not_the_first_field_is_found() -> None:
    """Encoders write fields in number order, but the wire format allows any; the last trace_id wins."""
    body = Span(name="late").SerializeToString() + Span(trace_id=trace_id(9)).SerializeToString()
    raw = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans()])]).SerializeToString()
    message = parse(raw)
    message.resource_spans[0].scope_spans[0].spans.add().MergeFromString(body)
    (fragment,) = split_by_trace(message.SerializeToString(), PROTOBUF)
    assert fragment.trace_id == trace_id(9) and parse(fragment.payload).resource_spans[0].scope_spans[0].spans[0].name


def test_empty_bodies_and_empty_envelopes_give_no_fragment() -> None:
    assert split_by_trace(b"", PROTOBUF) == []
    empty = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans()])])
    assert split_by_trace(empty.SerializeToString(), PROTOBUF) == []
    assert split_by_trace(b"{}", "application/json") == []


@pytest.mark.parametrize(("body", "content_type"), [
    (b"\x0a\x05abc", PROTOBUF),  # a field running past the end
    (b"\x0b", PROTOBUF),  # a group
    (b"\x0a\x03\x12\x05a", PROTOBUF),  # a nested field running past its message
    (b"{not json", "application/json"),
    (b"[]", "application/json"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "application/json"),
])
def test_a_body_that_is_not_an_otlp_traces_request_is_undecodable(body: bytes, content_type: str) -> None:
    with pytest.raises(UndecodableBody):
        split_by_trace(body, content_type)


def _json(message: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as SDKs send it: camelCase, hex ids, enums as integers."""
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    for rs in doc.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for sp in ss.get("spans", []):
                for record in (sp, *sp.get("links", [])):
                    for name in ("traceId", "spanId", "parentSpanId"):
                        if name in record:
                            record[name] = base64.b64decode(record[name]).hex()
    return orjson.dumps(doc)


def test_otlp_json_is_split_into_protobuf_fragments() -> None:
    message = request(({"service.name": "a"}, [span(1, attrs={"n": 5}), span(2), span(1, trace_state="k=v")]))
    message.resource_spans[0].scope_spans[0].spans[0].links.add(trace_id=trace_id(4), span_id=b"\x02" * 8)
    fragments = split_by_trace(_json(message), "application/json")
    assert [(f.trace_id, f.spans) for f in fragments] == [(trace_id(1), 2), (trace_id(2), 1)]
    assert triples(parse(b"".join(f.payload for f in fragments))) == triples(message)


def test_otlp_json_snake_case_upper_case_hex_and_bad_ids() -> None:
    doc = {"resource_spans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]},
                               "scope_spans": [{"spans": [
                                   {"trace_id": "0000000000000000000000000000000A", "span_id": "0102030405060708",
                                    "name": "upper"},
                                   {"traceId": "not hex", "name": "bad"},
                                   {"traceId": "abcd", "name": "short"}]}]}]}
    fragments = split_by_trace(orjson.dumps(doc), "application/json; charset=utf-8")
    assert [(f.trace_id, f.spans) for f in fragments] == [(trace_id(10), 1), (UNTRACED, 2)]
    assert parse(fragments[0].payload).resource_spans[0].scope_spans[0].spans[0].span_id == bytes(range(1, 9))


# ── the property: the fragments together are the request ──

_values = st.one_of(st.text(max_size=5), st.integers(-5, 5), st.booleans())
_spans = st.builds(lambda t, name, attrs, short: Span(trace_id=b"\x07" * 4 if short else trace_id(t), name=name,
                                                     attributes=attributes(attrs)),
                   st.integers(0, 6), st.text(max_size=4), st.dictionaries(st.text(max_size=3), _values, max_size=2),
                   st.booleans())
_scopes = st.builds(lambda name, url, spans: ScopeSpans(scope=InstrumentationScope(name=name), schema_url=url,
                                                        spans=spans),
                    st.text(max_size=3), st.text(max_size=3), st.lists(_spans, max_size=5))
_resources = st.builds(lambda attrs, url, scopes: ResourceSpans(resource=Resource(attributes=attributes(attrs)),
                                                                schema_url=url, scope_spans=scopes),
                       st.dictionaries(st.text(max_size=3), _values, max_size=2), st.text(max_size=3),
                       st.lists(_scopes, max_size=3))
_requests = st.builds(lambda resources: ExportTraceServiceRequest(resource_spans=resources),
                      st.lists(_resources, max_size=4))


@settings(max_examples=300, deadline=None)
@given(_requests)
def test_the_fragments_concatenated_hold_the_same_spans(message: ExportTraceServiceRequest) -> None:
    fragments = split_by_trace(message.SerializeToString(), PROTOBUF)
    assert triples(parse(b"".join(f.payload for f in fragments))) == triples(message)
    assert len({f.trace_id for f in fragments}) == len(fragments)
    for fragment in fragments:
        spans = [sp for rs in parse(fragment.payload).resource_spans for ss in rs.scope_spans for sp in ss.spans]
        assert len(spans) == fragment.spans > 0
        assert {sp.trace_id if len(sp.trace_id) == 16 else UNTRACED for sp in spans} == {fragment.trace_id}
    from_json = split_by_trace(_json(message), "application/json")
    assert triples(parse(b"".join(f.payload for f in from_json))) == triples(message)
