"""Matchers (docs/policies.md §3) on logs, metrics and traces, and the batch scanner's record boundaries."""

from __future__ import annotations

import base64
import random

import orjson
import pytest
import re2

from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from tests.engine_helpers import clean_engine

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"


def S(text: str) -> dict:
    return {"stringValue": text}


def kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def _engine(policies: list[dict]) -> Engine:
    return clean_engine(policies)


def _drop(signal: str, matchers: list[dict]) -> dict:
    keep = {"log": "none", "metric": False, "trace": {"percentage": 0}}[signal]
    return {"id": "drop", "name": "drop", signal: {"match": matchers, "keep": keep}}


# ── logs ───────────────────────────────────────────────────────────────────


def _log_doc(records: list[dict], resources: list[tuple[dict, dict]] | None = None) -> dict:
    """Records are tagged with timeUnixNano = their index so they can be told apart afterwards."""
    tagged = [{**r, "timeUnixNano": str(i)} for i, r in enumerate(records)]
    if resources is None:
        return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": tagged}]}]}
    # resources: one (resource, scope) per record group, records split evenly
    size = len(tagged) // len(resources)
    return {
        "resourceLogs": [
            {**resource, "scopeLogs": [{**scope, "logRecords": tagged[j * size : (j + 1) * size]}]}
            for j, (resource, scope) in enumerate(resources)
        ]
    }


def _dropped(signal: str, matchers: list[dict], doc: dict) -> set[int]:
    engine = _engine([_drop(signal, matchers)])
    out = orjson.loads(otlp_body.evaluate(engine, signal, orjson.dumps(doc), "application/json").body)
    top, scopes, recs, tag = {
        "log": ("resourceLogs", "scopeLogs", "logRecords", "timeUnixNano"),
        "metric": ("resourceMetrics", "scopeMetrics", "metrics", "name"),
        "trace": ("resourceSpans", "scopeSpans", "spans", "startTimeUnixNano"),
    }[signal]

    def tags(d: dict) -> list:
        return [r[tag] for rl in d.get(top, []) for sl in rl.get(scopes, []) for r in sl.get(recs, [])]

    kept = set(tags(out))
    return {i for i, t in enumerate(tags(doc)) if t not in kept}


def _body_dropped(matcher: dict, bodies: list[str | None]) -> set[int]:
    records = [{"body": S(b)} if b is not None else {} for b in bodies]
    return _dropped("log", [{"log_field": "body", **matcher}], _log_doc(records))


BODIES = ["checkout ok", "Checkout OK", "payment failed", "", None, "ok", "xcheckout", "check", "checkout"]


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"exact": "checkout"}, {8}),
        ({"exact": "ok"}, {5}),
        ({"regex": "^check"}, {0, 7, 8}),
        ({"regex": "ok$"}, {0, 5}),
        ({"regex": "fail(ed)?"}, {2}),
        ({"regex": "c.e"}, {0, 6, 7, 8}),
        ({"starts_with": "check"}, {0, 7, 8}),
        ({"ends_with": "out"}, {6, 8}),
        ({"contains": "heck"}, {0, 1, 6, 7, 8}),
        ({"contains": "o"}, {0, 1, 5, 6, 8}),
    ],
)
def test_string_conditions_on_body(matcher, expected):
    """§3: exact equality, unanchored RE2 search, prefix, suffix, substring; case-sensitive by default."""
    assert _body_dropped(matcher, BODIES) == expected


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"exact": "CHECKOUT OK", "case_insensitive": True}, {0, 1}),
        ({"regex": "^checkout ok$", "case_insensitive": True}, {0, 1}),
        ({"starts_with": "CHECKOUT", "case_insensitive": True}, {0, 1, 8}),
        ({"ends_with": "Ok", "case_insensitive": True}, {0, 1, 5}),
        ({"contains": "HECK", "case_insensitive": True}, {0, 1, 6, 7, 8}),
        ({"equals": "checkout OK", "case_insensitive": True}, {0, 1}),
        ({"equals": "checkout OK"}, set()),
    ],
)
def test_case_insensitive(matcher, expected):
    """§3: case_insensitive affects exact, equals.string_value and the string pattern conditions."""
    assert _body_dropped(matcher, BODIES) == expected


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"exact": "checkout", "negate": True}, {0, 1, 2, 3, 4, 5, 6, 7}),
        ({"contains": "o", "negate": True}, {2, 3, 4, 7}),
        # An empty string body counts as absent (conformance case compound_empty_vs_missing).
        ({"exists": True, "negate": True}, {3, 4}),
        ({"regex": ".", "negate": True}, {3, 4}),
    ],
)
def test_negate_inverts_the_matcher(matcher, expected):
    """§3: negate inverts the result, including on records where the field is empty or absent."""
    assert _body_dropped(matcher, BODIES) == expected


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"contains": ""}, {1}),
        ({"starts_with": ""}, {1}),
        ({"ends_with": ""}, {1}),
        ({"regex": ".*"}, {1}),
        ({"regex": "^$"}, set()),
        ({"exact": ""}, set()),
        ({"regex": "x*"}, {1}),
        ({"equals": ""}, set()),
        ({"contains": "", "negate": True}, {0, 2}),
    ],
)
def test_empty_string_never_matches_string_conditions(matcher, expected):
    """§3: an empty string never matches a (non-negated) string condition, even one matching ""."""
    records = [{"attributes": [kv("a", S(""))]}, {"attributes": [kv("a", S("v"))]}, {}]
    assert _dropped("log", [{"log_attribute": "a", **matcher}], _log_doc(records)) == expected


def test_empty_string_attribute_exists():
    """§3: an attribute set to "" is present for `exists`."""
    records = [{"attributes": [kv("a", S(""))]}, {"attributes": []}, {}]
    assert _dropped("log", [{"log_attribute": "a", "exists": True}], _log_doc(records)) == {0}
    assert _dropped("log", [{"log_attribute": "a", "exists": False}], _log_doc(records)) == {1, 2}


TYPED = [
    {"intValue": "5"},  # 0
    {"doubleValue": 5.0},  # 1
    {"doubleValue": 5.5},  # 2
    S("5"),  # 3
    {"boolValue": True},  # 4
    {"boolValue": False},  # 5
    {"bytesValue": base64.b64encode(b"\x01\xab").decode()},  # 6
    {"arrayValue": {"values": [S("5")]}},  # 7
    None,  # 8 (absent)
    {"intValue": "-3"},  # 9
    S("true"),  # 10
]


def _typed_dropped(matcher: dict) -> set[int]:
    records = [{"attributes": [kv("a", v)]} if v is not None else {"attributes": []} for v in TYPED]
    return _dropped("log", [{"log_attribute": "a", **matcher}], _log_doc(records))


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"equals": 5}, {0, 1}),
        ({"equals": 5.0}, {0, 1}),
        ({"equals": {"int_value": 5}}, {0, 1}),
        ({"equals": 5.5}, {2}),
        ({"equals": -3}, {9}),
        ({"equals": "5"}, {3}),
        ({"equals": True}, {4}),
        ({"equals": False}, {5}),
        ({"equals": "true"}, {10}),
        ({"equals": {"hex_value": "01ab"}}, {6}),
        ({"equals": {"hex_value": "01AB"}}, {6}),
        ({"equals": {"bytes_value": base64.b64encode(b"\x01\xab").decode()}}, {6}),
        ({"equals": {"hex_value": "01"}}, set()),
    ],
)
def test_equals_is_typed(matcher, expected):
    """§3: equals needs the same type and value; int and double compare numerically; bools are not numbers."""
    assert _typed_dropped(matcher) == expected


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"gt": 4}, {0, 1, 2}),
        ({"gt": 5}, {2}),
        ({"gt": 5.0}, {2}),
        ({"gte": 5}, {0, 1, 2}),
        ({"gte": 5.5}, {2}),
        ({"lt": 5}, {9}),
        ({"lt": 5.5}, {0, 1, 9}),
        ({"lte": 5}, {0, 1, 9}),
        ({"lte": -3.0}, {9}),
        ({"gt": -10}, {0, 1, 2, 9}),
    ],
)
def test_numeric_comparisons(matcher, expected):
    """§3: gt/gte/lt/lte compare ints and doubles numerically; strings, bools, bytes never match."""
    assert _typed_dropped(matcher) == expected


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"exact": "5"}, {3}),
        ({"regex": "5"}, {3}),
        ({"contains": "5"}, {3}),
        ({"exact": "true"}, {10}),
        ({"regex": "^tr"}, {10}),
        ({"exact": "01ab"}, {6}),
        ({"exists": True}, {0, 1, 2, 3, 4, 5, 6, 7, 9, 10}),
        ({"exists": False}, {8}),
    ],
)
def test_string_conditions_only_see_strings(matcher, expected):
    """§3: string conditions apply to string values only (bytes are seen as lowercase hex)."""
    assert _typed_dropped(matcher) == expected


# ── bytes fields ───────────────────────────────────────────────────────────


def _ids_doc() -> dict:
    return _log_doc(
        [
            {"traceId": TRACE_ID, "spanId": "b7ad6b7169203331", "body": S("a")},
            {"traceId": TRACE_ID.upper(), "body": S("b")},
            {"traceId": "", "body": S("c")},
            {"body": S("d")},
            {"traceId": "1" * 32, "spanId": "B7AD6B7169203331", "body": S("e")},
        ]
    )


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"log_field": "trace_id", "exact": TRACE_ID}, {0, 1}),
        ({"log_field": "trace_id", "exact": TRACE_ID.upper()}, set()),
        ({"log_field": "trace_id", "exact": TRACE_ID.upper(), "case_insensitive": True}, {0, 1}),
        ({"log_field": "trace_id", "starts_with": "0af7"}, {0, 1}),
        ({"log_field": "trace_id", "regex": "^[0-9a-f]{32}$"}, {0, 1, 4}),
        ({"log_field": "trace_id", "regex": "[A-F]"}, set()),
        ({"log_field": "trace_id", "equals": {"hex_value": TRACE_ID}}, {0, 1}),
        ({"log_field": "trace_id", "equals": {"hex_value": TRACE_ID.upper()}}, {0, 1}),
        (
            {
                "log_field": "trace_id",
                "equals": {"bytes_value": base64.b64encode(bytes.fromhex(TRACE_ID)).decode()},
            },
            {0, 1},
        ),
        ({"log_field": "trace_id", "exists": True}, {0, 1, 4}),
        ({"log_field": "trace_id", "exists": False}, {2, 3}),
        ({"log_field": "span_id", "ends_with": "3331"}, {0, 4}),
        ({"log_field": "span_id", "equals": {"hex_value": "b7ad6b7169203331"}}, {0, 4}),
    ],
)
def test_bytes_fields(matcher, expected):
    """§3: ids compare as raw bytes for hex/bytes equals, and as lowercase hex for string conditions."""
    assert _dropped("log", [matcher], _ids_doc()) == expected


def test_bytes_attribute_seen_as_hex_by_string_conditions():
    """§3: a bytes attribute is lowercase hex to string conditions and raw bytes to equals.bytes_value."""
    raw = bytes.fromhex("deadBEEF")
    records = [
        {"attributes": [kv("k", {"bytesValue": base64.b64encode(raw).decode()})]},
        {"attributes": [kv("k", S("deadbeef"))]},
    ]
    doc = _log_doc(records)
    assert _dropped("log", [{"log_attribute": "k", "exact": "deadbeef"}], doc) == {0, 1}
    assert _dropped("log", [{"log_attribute": "k", "equals": {"hex_value": "DEADBEEF"}}], doc) == {0}


# ── scalar log fields, nesting, resource and scope ─────────────────────────


def test_severity_and_event_name_absent_when_empty():
    """§3: proto3 scalar fields (severity_text, event_name) are absent when empty."""
    doc = _log_doc([{"severityText": "WARN", "eventName": "e"}, {"severityText": "", "eventName": ""}, {}])
    assert _dropped("log", [{"log_field": "severity_text", "exists": True}], doc) == {0}
    assert _dropped("log", [{"log_field": "severity_text", "exists": False}], doc) == {1, 2}
    assert _dropped("log", [{"log_field": "event_name", "exact": "e"}], doc) == {0}
    assert _dropped("log", [{"log_field": "severity_text", "regex": "^W"}], doc) == {0}


def _nested() -> dict:
    inner = {
        "kvlistValue": {
            "values": [
                kv("method", S("GET")),
                kv("code", {"intValue": "404"}),
                kv("deep", {"kvlistValue": {"values": [kv("x", S("y"))]}}),
            ]
        }
    }
    return _log_doc(
        [
            {"attributes": [kv("http", inner)]},
            {"attributes": [kv("http", S("GET"))]},
            {"attributes": [kv("http.method", S("GET"))]},
            {"attributes": [kv("http", {"kvlistValue": {"values": [kv("method", S("POST"))]}})]},
        ]
    )


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"log_attribute": ["http", "method"], "exact": "GET"}, {0}),
        ({"log_attribute": {"path": ["http", "method"]}, "exists": True}, {0, 3}),
        ({"log_attribute": ["http", "code"], "gte": 400}, {0}),
        ({"log_attribute": ["http", "deep", "x"], "equals": "y"}, {0}),
        ({"log_attribute": ["http", "deep"], "exists": True}, {0}),
        ({"log_attribute": ["http", "method", "more"], "exists": True}, set()),
        ({"log_attribute": "http.method", "exact": "GET"}, {2}),
        ({"log_attribute": "http", "exact": "GET"}, {1}),
        ({"log_attribute": "http", "contains": "GET"}, {1}),
    ],
)
def test_nested_attribute_paths(matcher, expected):
    """§3: attribute paths walk nested kvlistValue maps, one segment per level; maps are not strings."""
    assert _dropped("log", [matcher], _nested()) == expected


def _grouped_doc() -> dict:
    records = [{"body": S(f"r{i}")} for i in range(6)]
    return _log_doc(
        records,
        resources=[
            (
                {"resource": {"attributes": [kv("service.name", S("api"))]}, "schemaUrl": "https://r/1"},
                {
                    "scope": {"name": "lib", "attributes": [kv("lib.tier", S("gold"))]},
                    "schemaUrl": "https://s/1",
                },
            ),
            (
                {"resource": {"attributes": [kv("service.name", S("web"))]}},
                {
                    "scope": {"name": "lib", "attributes": [kv("lib.tier", S("silver"))]},
                    "schemaUrl": "https://s/2",
                },
            ),
            (
                {"resource": {"attributes": [kv("service.name", S("api")), kv("region", S("eu"))]}},
                {"scope": {"name": "other"}},
            ),
        ],
    )


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"resource_attribute": "service.name", "exact": "api"}, {0, 1, 4, 5}),
        ({"resource_attribute": "service.name", "exact": "api", "negate": True}, {2, 3}),
        ({"resource_attribute": "region", "exists": True}, {4, 5}),
        ({"resource_attribute": "region", "exists": False}, {0, 1, 2, 3}),
        ({"scope_attribute": "lib.tier", "exact": "gold"}, {0, 1}),
        ({"scope_attribute": "lib.tier", "starts_with": "s"}, {2, 3}),
        ({"scope_attribute": "lib.tier", "exists": False}, {4, 5}),
        ({"log_field": "resource_schema_url", "exact": "https://r/1"}, {0, 1}),
        ({"log_field": "resource_schema_url", "exists": False}, {2, 3, 4, 5}),
        ({"log_field": "scope_schema_url", "ends_with": "/2"}, {2, 3}),
    ],
)
def test_resource_and_scope_fields(matcher, expected):
    """§3: resource/scope attributes and schema urls apply to every record below them."""
    assert _dropped("log", [matcher], _grouped_doc()) == expected


def test_matchers_are_anded():
    """§3: all matchers of a policy must hold."""
    matchers = [
        {"resource_attribute": "service.name", "exact": "api"},
        {"log_field": "body", "regex": "[024]$"},
    ]
    assert _dropped("log", matchers, _grouped_doc()) == {0, 4}


# ── metrics ────────────────────────────────────────────────────────────────


def _metrics_doc() -> dict:
    def point(**attrs) -> dict:
        return {"attributes": [kv(k, S(v)) for k, v in attrs.items()], "asInt": "1"}

    metrics = [
        {
            "name": "gauge",
            "unit": "ms",
            "description": "latency",
            "gauge": {"dataPoints": [point(host="h1"), point(host="h2", env="prod")]},
        },
        {
            "name": "sum_delta",
            "unit": "By",
            "sum": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_DELTA",
                "isMonotonic": True,
                "dataPoints": [point(host="h3")],
            },
        },
        {"name": "sum_cumulative", "sum": {"aggregationTemporality": 2, "dataPoints": [point()]}},
        {
            "name": "histogram",
            "histogram": {
                "aggregationTemporality": "AGGREGATION_TEMPORALITY_CUMULATIVE",
                "dataPoints": [point(host="h2")],
            },
        },
        {
            "name": "exp_histogram",
            "exponentialHistogram": {"aggregationTemporality": 1, "dataPoints": [point(env="dev")]},
        },
        {"name": "summary", "summary": {"dataPoints": [point(host="h9")]}},
    ]
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [kv("service.name", S("api"))]},
                "schemaUrl": "https://r",
                "scopeMetrics": [
                    {
                        "scope": {"name": "meter", "version": "1.2.0"},
                        "schemaUrl": "https://s",
                        "metrics": metrics[:3],
                    }
                ],
            },
            {
                "resource": {"attributes": [kv("service.name", S("db"))]},
                "scopeMetrics": [{"scope": {"name": "other", "version": "0.1"}, "metrics": metrics[3:]}],
            },
        ]
    }


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"metric_type": "gauge"}, {0}),
        ({"metric_type": "METRIC_TYPE_SUM"}, {1, 2}),
        ({"metric_type": "histogram"}, {3}),
        ({"metric_type": "exponential_histogram"}, {4}),
        ({"metric_type": "summary"}, {5}),
        ({"metric_type": "gauge", "negate": True}, {1, 2, 3, 4, 5}),
        ({"aggregation_temporality": "delta"}, {1, 4}),
        ({"aggregation_temporality": "cumulative"}, {2, 3}),
        ({"aggregation_temporality": "delta", "negate": True}, {0, 2, 3, 5}),
        ({"datapoint_attribute": "host", "exact": "h2"}, {0, 3}),
        ({"datapoint_attribute": "host", "starts_with": "h"}, {0, 1, 3, 5}),
        ({"datapoint_attribute": "env", "exists": True}, {0, 4}),
        ({"datapoint_attribute": "host", "exact": "h2", "negate": True}, {1, 2, 4, 5}),
        ({"metric_field": "name", "starts_with": "sum_"}, {1, 2}),
        ({"metric_field": "unit", "exact": "ms"}, {0}),
        ({"metric_field": "unit", "exists": False}, {2, 3, 4, 5}),
        ({"metric_field": "description", "contains": "lat"}, {0}),
        ({"metric_field": "scope_name", "exact": "meter"}, {0, 1, 2}),
        ({"metric_field": "scope_version", "regex": r"^1\."}, {0, 1, 2}),
        ({"metric_field": "resource_schema_url", "exists": True}, {0, 1, 2}),
        ({"metric_field": "scope_schema_url", "exact": "https://s"}, {0, 1, 2}),
        ({"resource_attribute": "service.name", "exact": "db"}, {3, 4, 5}),
    ],
)
def test_metric_matchers(matcher, expected):
    """§3: metric selectors; metric_type/aggregation_temporality are implicit equality; any data point."""
    assert _dropped("metric", [matcher], _metrics_doc()) == expected


def test_metric_keep_false_requires_all_matchers():
    """§2/§3: a metric policy drops only metrics matching every matcher."""
    matchers = [{"metric_type": "sum"}, {"datapoint_attribute": "host", "exists": True}]
    assert _dropped("metric", matchers, _metrics_doc()) == {1}


def test_datapoint_exists_false_matches_when_any_point_lacks_the_attribute():
    """§3: a datapoint_attribute matcher matches a metric when ANY of its data points matches.

    `gauge` has one point with `env` and one without: the point without it satisfies exists:false.
    """
    dropped = _dropped("metric", [{"datapoint_attribute": "env", "exists": False}], _metrics_doc())
    assert 0 in dropped


# ── traces ─────────────────────────────────────────────────────────────────


def _spans_doc() -> dict:
    spans = [
        {
            "name": "GET /users",
            "traceId": TRACE_ID,
            "spanId": "b7ad6b7169203331",
            "kind": "SPAN_KIND_SERVER",
            "status": {"code": "STATUS_CODE_ERROR"},
            "traceState": "vendor=a",
            "attributes": [kv("http.method", S("GET")), kv("http.status", {"intValue": "500"})],
            "events": [{"name": "exception", "attributes": [kv("retry", {"intValue": "3"})]}],
            "links": [{"traceId": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "spanId": "00f067aa0ba902b7"}],
        },
        {
            "name": "db.query",
            "traceId": "1" * 32,
            "spanId": "00f067aa0ba902b7",
            "parentSpanId": "b7ad6b7169203331",
            "kind": 3,
            "status": {"code": 1},
            "events": [
                {"name": "retry"},
                {"name": "exception", "attributes": [kv("retry", {"intValue": "1"})]},
            ],
        },
        {"name": "internal", "traceId": "2" * 32, "spanId": "1111111111111111", "kind": 1, "status": {}},
        {
            "name": "produce",
            "traceId": "3" * 32,
            "spanId": "2222222222222222",
            "kind": "SPAN_KIND_PRODUCER",
            "links": [{"traceId": "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}],
        },
        {"name": "consume", "traceId": "4" * 32, "spanId": "3333333333333333", "kind": 5},
    ]
    tagged = [{**s, "startTimeUnixNano": str(i)} for i, s in enumerate(spans)]
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": [kv("service.name", S("api"))]},
                "schemaUrl": "https://r",
                "scopeSpans": [
                    {
                        "scope": {"name": "tracer", "version": "2.0"},
                        "schemaUrl": "https://s",
                        "spans": tagged[:2],
                    }
                ],
            },
            {
                "resource": {"attributes": [kv("service.name", S("worker"))]},
                "scopeSpans": [{"scope": {"name": "kafka"}, "spans": tagged[2:]}],
            },
        ]
    }


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"span_kind": "server"}, {0}),
        ({"span_kind": "client"}, {1}),
        ({"span_kind": "internal"}, {2}),
        ({"span_kind": "producer"}, {3}),
        ({"span_kind": "consumer"}, {4}),
        ({"span_kind": "server", "negate": True}, {1, 2, 3, 4}),
        ({"span_status": "error"}, {0}),
        ({"span_status": "SPAN_STATUS_CODE_OK"}, {1}),
        ({"span_status": "error", "negate": True}, {1, 2, 3, 4}),
        ({"event_name": "exception"}, {0, 1}),
        ({"event_name": "retry"}, {1}),
        ({"event_name": "missing"}, set()),
        ({"event_name": "retry", "negate": True}, {0, 2, 3, 4}),
        ({"event_attribute": "retry", "gte": 2}, {0}),
        ({"event_attribute": "retry", "exists": True}, {0, 1}),
        ({"event_attribute": "retry", "equals": 1}, {1}),
        ({"link_trace_id": "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, {0}),
        ({"link_trace_id": "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB"}, {3}),
        ({"trace_field": "name", "starts_with": "GET"}, {0}),
        ({"trace_field": "name", "regex": "^(produce|consume)$"}, {3, 4}),
        ({"trace_field": "trace_id", "exact": TRACE_ID}, {0}),
        ({"trace_field": "trace_id", "equals": {"hex_value": TRACE_ID.upper()}}, {0}),
        ({"trace_field": "span_id", "equals": {"hex_value": "00f067aa0ba902b7"}}, {1}),
        ({"trace_field": "parent_span_id", "exists": True}, {1}),
        ({"trace_field": "parent_span_id", "exact": "b7ad6b7169203331"}, {1}),
        ({"trace_field": "trace_state", "contains": "vendor="}, {0}),
        ({"trace_field": "trace_state", "exists": False}, {1, 2, 3, 4}),
        ({"trace_field": "resource_schema_url", "exact": "https://r"}, {0, 1}),
        ({"trace_field": "scope_schema_url", "exists": True}, {0, 1}),
        ({"trace_field": "scope_name", "exact": "kafka"}, {2, 3, 4}),
        ({"trace_field": "scope_version", "exact": "2.0"}, {0, 1}),
        ({"span_attribute": "http.method", "exact": "get", "case_insensitive": True}, {0}),
        ({"span_attribute": "http.status", "gte": 500}, {0}),
        ({"resource_attribute": "service.name", "exact": "worker"}, {2, 3, 4}),
    ],
)
def test_trace_matchers(matcher, expected):
    """§3: trace selectors, incl. implicit-equality kind/status and event/link presence."""
    assert _dropped("trace", [matcher], _spans_doc()) == expected


# ── batch scanner boundaries (Hyperscan vs RE2) ─────────────────────────────


LAYOUTS = ["unique", "repeated"]


def _layout(values: list[str], layout: str) -> list[str]:
    """`repeated` makes the batch low-cardinality (many copies of few values)."""
    return values if layout == "unique" else values * 12


def _expect(values: list[str], predicate) -> set[int]:
    return {i for i, v in enumerate(values) if v and predicate(v)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dollar_does_not_match_before_trailing_newline(layout):
    """§3 (RE2 semantics): `foo$` matches "foo" but not "foo\\n" (Hyperscan's `$` would)."""
    values = _layout(["foo\n", "foo", "bar", "xfoo\n", "foo\nfoo\n", "x"], layout)
    assert _body_dropped({"regex": "foo$"}, values) == _expect(values, lambda v: re2.search("foo$", v))
    assert 0 not in _body_dropped({"regex": "foo$"}, values)
    assert 1 in _body_dropped({"regex": "foo$"}, values)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "matcher,predicate",
    [
        ({"exact": "foo"}, lambda v: v == "foo"),
        ({"starts_with": "foo"}, lambda v: v.startswith("foo")),
        ({"ends_with": "foo"}, lambda v: v.endswith("foo")),
        ({"contains": "o\nf"}, lambda v: "o\nf" in v),
        ({"exact": "x\nfoo"}, lambda v: v == "x\nfoo"),
        ({"regex": "^foo"}, lambda v: re2.search("^foo", v)),
        ({"regex": "^foo$"}, lambda v: re2.search("^foo$", v)),
        ({"regex": "(?m)^foo$"}, lambda v: re2.search("(?m)^foo$", v)),
    ],
)
def test_values_with_newlines_do_not_match_across_lines(layout, matcher, predicate):
    """§3: anchored conditions see the whole value: "x\\nfoo" is not exactly "foo" nor starts with it."""
    values = _layout(["x\nfoo", "foo\nx", "foo", "bar", "\nfoo", "foo\n", "x", "o", "f"], layout)
    assert _body_dropped(matcher, values) == _expect(values, predicate)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "pattern",
    [
        r"a\sb",
        r"[^z]+b",
        r"a[^z]b",
        r"a\n?b",
        r"(?s)a.b",
        r"a\W+b",
        r"a$\s^b",
        r"\n",
        r"a\s",
        r"\sb",
        r"(?s)a.*b",
    ],
)
def test_no_false_positive_across_adjacent_records(layout, pattern):
    """The join separator between records never lets a regex match span two records."""
    values = _layout(["xa", "b", "c", "a b", "a\nb", "zz", "ab"], layout)
    assert _body_dropped({"regex": pattern}, values) == _expect(values, lambda v: re2.search(pattern, v))


def test_adjacent_records_xa_and_b_do_not_match():
    """Records "xa" and "b" adjacent must not match `a\\sb` (the brief's canonical case)."""
    assert _body_dropped({"regex": r"a\sb"}, ["xa", "b"]) == set()
    assert _body_dropped({"regex": r"[^z]+b"}, ["xa", "b"]) == set()


@pytest.mark.parametrize("cardinality", ["high", "low"])
def test_many_records_map_back_to_the_right_records(cardinality):
    """500 records with matches in only some: every match maps back to its own record."""
    rng = random.Random(20240611 + len(cardinality))
    words = ["alpha", "beta", "gamma", "délta", "ε", "日本", "error", "warn", "x\ny", ""]
    if cardinality == "high":
        values = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 4))) + f" #{i}" for i in range(500)]
    else:
        values = [rng.choice(["error at db", "ok", "warn: slow", "délta error", "日本 ok\n", ""]) for _ in range(500)]
    conditions = [
        ({"regex": r"err(or)?\b"}, lambda v: re2.search(r"err(or)?\b", v)),
        ({"regex": "^(alpha|ok)"}, lambda v: re2.search("^(alpha|ok)", v)),
        ({"contains": "délta"}, lambda v: "délta" in v),
        ({"ends_with": "ok\n"}, lambda v: v.endswith("ok\n")),
        ({"starts_with": "日本"}, lambda v: v.startswith("日本")),
        ({"exact": "ok"}, lambda v: v == "ok"),
        ({"regex": r"#\d*7$"}, lambda v: re2.search(r"#\d*7$", v)),
        ({"regex": "y #"}, lambda v: "y #" in v),
    ]
    for matcher, predicate in conditions:
        expected = _expect(values, predicate)
        got = _body_dropped(matcher, values)
        assert got == expected, matcher


def test_several_policies_on_one_field_each_get_their_own_records():
    """One scan serves many policies: stats show each policy matched exactly its own records."""
    values = ["alpha", "beta", "alphabet", "gamma\nalpha", "beta gamma", "", "ALPHA"] * 20
    policies = [
        {
            "id": "p1",
            "log": {
                "match": [{"log_field": "body", "starts_with": "alpha"}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": "p1", "value": "1"}]},
            },
        },
        {
            "id": "p2",
            "log": {
                "match": [{"log_field": "body", "regex": "gamma$"}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": "p2", "value": "1"}]},
            },
        },
        {
            "id": "p3",
            "log": {
                "match": [{"log_field": "body", "exact": "alpha", "case_insensitive": True}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": "p3", "value": "1"}]},
            },
        },
    ]
    engine = _engine(policies)
    doc = _log_doc([{"body": S(v)} for v in values])
    out = orjson.loads(otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json").body)
    records = out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    tags = [{a["key"] for a in r.get("attributes", [])} for r in records]
    for i, v in enumerate(values):
        expected = set()
        if v.startswith("alpha"):
            expected.add("p1")
        if re2.search("gamma$", v):
            expected.add("p2")
        if v.lower() == "alpha":
            expected.add("p3")
        assert tags[i] == expected, (i, v)


def test_inline_flag_minus_m_keeps_per_record_anchors():
    """§3: `(?-m)b$` is plain RE2 (`$` = end of text) and must match a record "b" in the middle of a batch."""
    values = ["xa", "b", "c\nb", "zz"]
    assert _body_dropped({"regex": "(?-m)b$"}, values) == {1, 2}


def test_whitespace_class_excludes_vertical_tab():
    """§3: in RE2, `\\s` is [\\t\\n\\f\\r ]: "a\\x0bb" does not match `a\\sb` and does match `a\\Sb`."""
    values = ["a\x0bb", "a b", "a\tb", "zz"]
    assert _body_dropped({"regex": r"a\sb"}, values) == {1, 2}
    assert _body_dropped({"regex": r"a\Sb"}, values) == {0}


def test_backslash_v_is_only_vertical_tab():
    """§3: in RE2, `\\v` is the vertical tab character only."""
    values = ["a\x0bb", "a\x0cb", "a\rb", "a\u2028b", "a\x85b"]
    assert _body_dropped({"regex": r"a\vb"}, values) == {0}


def test_many_metrics_group_and_datapoint_values_map_back():
    """Scope-, resource- and data-point-level values in a large, low-cardinality batch map to the right metrics."""
    rng = random.Random(77)
    services, hosts, scopes = ["api", "web", "db\n1", ""], ["h1", "h2", "h\n3", "H2"], ["lib-a", "lib-b"]
    resources, expected_rows = [], []
    index = 0
    for _r in range(12):
        service = rng.choice(services)
        scope_metrics = []
        for _s in range(2):
            scope = rng.choice(scopes)
            metrics = []
            for _ in range(rng.randint(1, 5)):
                point_hosts = [rng.choice(hosts) for _ in range(rng.randint(0, 3))]
                metrics.append(
                    {
                        "name": f"m{index}",
                        "gauge": {"dataPoints": [{"attributes": [kv("host", S(h))]} for h in point_hosts]},
                    }
                )
                expected_rows.append((f"m{index}", service, scope, point_hosts))
                index += 1
            scope_metrics.append({"scope": {"name": scope}, "metrics": metrics})
        resources.append(
            {
                "resource": {"attributes": [kv("service.name", S(service))]} if service else {},
                "scopeMetrics": scope_metrics,
            }
        )
    doc = {"resourceMetrics": resources}
    cases = [
        ({"resource_attribute": "service.name", "regex": "^(api|db)$"}, lambda row: row[1] in ("api",)),
        ({"resource_attribute": "service.name", "starts_with": "db"}, lambda row: row[1] == "db\n1"),
        ({"metric_field": "scope_name", "ends_with": "-b"}, lambda row: row[2] == "lib-b"),
        ({"datapoint_attribute": "host", "exact": "h2"}, lambda row: "h2" in row[3]),
        (
            {"datapoint_attribute": "host", "exact": "h2", "case_insensitive": True},
            lambda row: "h2" in row[3] or "H2" in row[3],
        ),
        ({"datapoint_attribute": "host", "regex": "3$"}, lambda row: "h\n3" in row[3]),
        (
            {"datapoint_attribute": "host", "contains": "h", "negate": True},
            lambda row: not any("h" in h for h in row[3]),
        ),
    ]
    for matcher, predicate in cases:
        expected = {i for i, row in enumerate(expected_rows) if predicate(row)}
        assert _dropped("metric", [matcher], doc) == expected, matcher


@pytest.mark.parametrize("condition", [{"contains": "XY"}, {"ends_with": "XY"}])
def test_literal_match_ending_the_batch_with_another_anchored_literal(condition):
    """§3: `contains "XY"` / `ends_with "XY"` match the last record "AAAAxxxxxxXY" whatever other policies exist."""
    engine = _engine(
        [
            {"id": "a", "log": {"match": [{"log_field": "body", "ends_with": "A"}], "keep": "none"}},
            {"id": "b", "log": {"match": [{"log_field": "body", **condition}], "keep": "none"}},
        ]
    )
    doc = _log_doc([{"body": S("AAAB")}, {"body": S("AAAAxxxxxxXY")}])
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    assert evaluated.outcome.kept == 1
    assert {pid: c.hits for pid, c in engine.stats.snapshot().items()} == {"b": 1}


@pytest.mark.parametrize("condition", [{"ends_with": "x"}, {"regex": "x$"}])
def test_end_anchored_match_on_the_last_of_many_short_records(condition):
    """§3: libhs 5.4 also misses `x$` on the last of 14 short records when `^line` shares the database."""
    engine = _engine(
        [
            {"id": "a", "log": {"match": [{"log_field": "body", "starts_with": "line"}], "keep": "none"}},
            {"id": "b", "log": {"match": [{"log_field": "body", **condition}], "keep": "none"}},
        ]
    )
    doc = _log_doc([{"body": S(f"a{i}")} for i in range(13)] + [{"body": S("dev,x")}])
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    assert evaluated.outcome.kept == 13
    assert {pid: c.hits for pid, c in engine.stats.snapshot().items()} == {"b": 1}


def test_literal_match_ending_the_batch_alone():
    """The same last-record match is found when no end-anchored literal shares the field (control case)."""
    engine = _engine([{"id": "b", "log": {"match": [{"log_field": "body", "contains": "XY"}], "keep": "none"}}])
    doc = _log_doc([{"body": S("AAAB")}, {"body": S("AAAAxxxxxxXY")}])
    assert otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json").outcome.kept == 1


@pytest.mark.parametrize(
    "matcher",
    [
        {"regex": "[[:alpha:]]b", "case_insensitive": True},
        {"regex": "(?i)sb"},
        {"contains": "sB", "case_insensitive": True},
    ],
)
def test_caseless_follows_re2_unicode_folding(matcher):
    """§3 (RE2): under case folding U+017F (ſ) is an `s` and U+212A (K) a `k`; Hyperscan alone folds ASCII only."""
    bodies = ["ſB", "xx", "\u212aelvin sb", "plain"]
    assert _body_dropped(matcher, bodies) == {0, 2}


@pytest.mark.parametrize("op", ["exact", "equals"])
def test_caseless_exact_values_fold_long_s_as_re2_does(op):
    """§3 (RE2): a case-insensitive exact value matches with ſ (U+017F) read as s, in any position."""
    bodies = ["ſun", "SUN", "sun", "Sun ", "ſuſ", "\u212aun", "xun"]
    assert _body_dropped({op: "sun", "case_insensitive": True}, bodies) == {0, 1, 2}
    assert _body_dropped({op: "SUS", "case_insensitive": True}, bodies) == {4}


def test_regex_match_in_the_first_record_counts_when_another_spans_two_records():
    """A regex that can cross the separator (here `\\s`) sends the batch to per-match mapping; record 0 is a record."""
    assert _body_dropped({"regex": r"x\s+y"}, ["x y", "x", "y", "a x  y"]) == {0, 3}


@pytest.mark.parametrize(
    "matcher",
    [
        {"regex": "[[:alpha:]]b", "case_insensitive": True},
        {"regex": "(?i)sb"},
        {"contains": "sB", "case_insensitive": True},
        {"regex": "s[b]", "case_insensitive": True},
    ],
)
def test_caseless_folds_long_s_in_a_batch_without_kelvin(matcher):
    """§3 (RE2): ſ folds to s also when no record of the batch holds K (U+212A)."""
    assert _body_dropped(matcher, ["xx", "ſB", "plain", "sb"]) == {1, 3}


@pytest.mark.parametrize("matcher", [{"regex": "(?i)kb"}, {"contains": "Kb", "case_insensitive": True},
                                     {"regex": "k[b]", "case_insensitive": True}])
def test_caseless_folds_kelvin_in_a_batch_without_long_s(matcher):
    """§3 (RE2): K (U+212A) folds to k also when no record of the batch holds ſ."""
    assert _body_dropped(matcher, ["xx", "\u212ab", "plain", "kB"]) == {1, 3}


@pytest.mark.parametrize(
    "matcher,expected",
    [
        ({"datapoint_attribute": "n", "gt": 3}, {1}),
        ({"datapoint_attribute": "n", "equals": 2}, {0}),
        ({"datapoint_attribute": "n", "lte": 2}, {0}),
    ],
)
def test_numeric_datapoint_conditions_fold_to_their_metric(matcher, expected):
    """§3: a metric matches when any of its data points does; values are per data point, records per metric."""
    def point(n: int) -> dict:
        return {"attributes": [kv("n", {"intValue": str(n)})], "asInt": "1"}

    metrics = [{"name": "two_points", "gauge": {"dataPoints": [point(1), point(2)]}},
               {"name": "one_point", "gauge": {"dataPoints": [point(5)]}}]
    doc = {"resourceMetrics": [{"resource": {}, "scopeMetrics": [{"scope": {}, "metrics": metrics}]}]}
    assert _dropped("metric", [matcher], doc) == expected
