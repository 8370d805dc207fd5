"""The protobuf batch views agree with the JSON ones, end to end through `otlp_body.evaluate`.

Every document is written once as OTLP/JSON; the protobuf body is the same document
converted with `json_format.ParseDict` (hex ids rewritten to base64 first, as proto3
JSON wants). Both encodings are evaluated with fresh engines over the same policies,
and outcomes, match statistics and the forwarded documents must agree.
"""

from __future__ import annotations

import base64
import copy
import random
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from edge.engine import bits
from edge.engine.engine import Engine
from edge.engine.values import MISSING, OTHER
from edge.formats.errors import BatchShapeError, UndecodableBody
from edge.formats.otlp import proto_batch
from edge.formats.otlp.body import evaluate
from edge.formats.otlp.json_batch import JsonLogs, JsonMetrics, JsonTraces
from edge.formats.otlp.proto_batch import PROTO_BATCHES, REQUESTS, ProtoLogs, ProtoTraces, parse_request
from edge.policy.compiler import compile_policies
from edge.policy.fields import (
    AGGREGATION_TEMPORALITY,
    LOG_BODY,
    LOG_EVENT_NAME,
    LOG_RESOURCE_SCHEMA_URL,
    LOG_SCOPE_SCHEMA_URL,
    LOG_SEVERITY_TEXT,
    LOG_SPAN_ID,
    LOG_TRACE_ID,
    METRIC_DESCRIPTION,
    METRIC_NAME,
    METRIC_RESOURCE_SCHEMA_URL,
    METRIC_SCOPE_NAME,
    METRIC_SCOPE_SCHEMA_URL,
    METRIC_SCOPE_VERSION,
    METRIC_TYPE,
    METRIC_UNIT,
    TRACE_NAME,
    TRACE_PARENT_SPAN_ID,
    TRACE_RESOURCE_SCHEMA_URL,
    TRACE_SCOPE_NAME,
    TRACE_SCOPE_SCHEMA_URL,
    TRACE_SCOPE_VERSION,
    TRACE_SPAN_ID,
    TRACE_TRACE_ID,
    TRACE_TRACE_STATE,
)
from edge.policy.loader import load_document

JSON_TYPE = "application/json"
PROTO_TYPE = "application/x-protobuf"
JSON_BATCHES = {"log": JsonLogs, "metric": JsonMetrics, "trace": JsonTraces}

# ── helpers ────────────────────────────────────────────────────────────────

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def to_proto_json(doc: Any) -> Any:
    """OTLP/JSON -> proto3 JSON: ids are hex in OTLP/JSON and base64 in proto3 JSON."""
    if isinstance(doc, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _ID_KEYS and isinstance(v, str)
                    else to_proto_json(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [to_proto_json(v) for v in doc]
    return doc


def to_message(signal: str, doc: dict) -> Any:
    return json_format.ParseDict(to_proto_json(doc), REQUESTS[signal]())


def proto_body(signal: str, doc: dict) -> bytes:
    return to_message(signal, doc).SerializeToString()


def normal_json(signal: str, body: bytes) -> dict:
    return json_format.MessageToDict(to_message(signal, orjson.loads(body)))


def normal_proto(signal: str, body: bytes) -> dict:
    return json_format.MessageToDict(REQUESTS[signal].FromString(body))


def normal_part(doc: dict, message: Any) -> dict:
    return json_format.MessageToDict(json_format.ParseDict(to_proto_json(doc), message()))


def snapshot_of(policies: list[dict]):
    loaded = load_document({"policies": policies})
    assert not loaded.errors, loaded.errors
    snapshot = compile_policies(loaded.policies)
    assert not snapshot.errors(), snapshot.errors()
    return snapshot


def run_both(signal: str, doc: dict, policies: list[dict]):
    """Evaluate the document in both encodings; assert they agree and return the results."""
    snapshot = snapshot_of(policies)
    json_in = orjson.dumps(doc)
    proto_in = proto_body(signal, doc)
    json_engine = Engine(snapshot, rng=random.Random(1))
    proto_engine = Engine(snapshot, rng=random.Random(1))
    json_out = evaluate(json_engine, signal, json_in, JSON_TYPE)
    proto_out = evaluate(proto_engine, signal, proto_in, PROTO_TYPE)
    j, p = json_out.outcome, proto_out.outcome
    assert (p.total, p.kept, p.changed) == (j.total, j.kept, j.changed)
    stats = json_engine.stats.snapshot()
    assert proto_engine.stats.snapshot() == stats
    assert normal_proto(signal, proto_out.body) == normal_json(signal, json_out.body)
    if not p.changed:
        assert proto_out.body is proto_in
    return proto_out, stats


def hits(stats: dict) -> dict[str, int]:
    return {pid: c.hits for pid, c in stats.items() if c.hits}


def kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def s(text: str) -> dict:
    return {"stringValue": text}


def kvlist(*items: dict) -> dict:
    return {"kvlistValue": {"values": list(items)}}


TID1 = "5b8efff798038103d2f9b633813fc60c"  # randomness 0xf9b6... (> 50%)
TID2 = "4bf92f3577b34da6a3ce929d0e0e4736"  # randomness 0xce92... (> 50%)
TID3 = "0af7651916cd43dd8448eb211c00319c"  # randomness 0x48eb... (< 50%)
SID1, SID2, SID3 = "eee19b7ec3c1b174", "b7ad6b7169203331", "00f067aa0ba902b7"


# ── logs ───────────────────────────────────────────────────────────────────

LOGS = {"resourceLogs": [
    {"resource": {"attributes": [
        kv("service.name", s("checkout")), kv("env", s("prod")), kv("replicas", {"intValue": "3"}),
        kv("k8s", kvlist(kv("pod", kvlist(kv("name", s("checkout-7d9f")))), kv("ns", s("shop"))))]},
     "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
     "scopeLogs": [
         {"scope": {"name": "http", "version": "1.2.0", "attributes": [kv("lib.lang", s("python"))]},
          "schemaUrl": "https://example.com/scope/1",
          "logRecords": [
              {"timeUnixNano": "1700000000000000001", "severityNumber": 9, "severityText": "INFO",
               "body": s("GET /api/users 200 user=jane.doe@example.com"), "traceId": TID1, "spanId": SID1,
               "attributes": [
                   kv("http.method", s("GET")), kv("http.status", {"intValue": "200"}),
                   kv("latency", {"doubleValue": 0.25}), kv("sampled", {"boolValue": True}),
                   kv("blob", {"bytesValue": "3q2+7w=="}),
                   kv("http", kvlist(kv("route", s("/api/users")), kv("req", kvlist(kv("id", s("abc-1")))))),
                   kv("tags", {"arrayValue": {"values": [s("a"), s("b")]}}),
                   kv("user.email", s("jane.doe@example.com"))]},
              {"timeUnixNano": "1700000000000000002", "severityNumber": 17, "severityText": "ERROR",
               "body": s("POST /api/orders 500 upstream TIMEOUT"), "eventName": "order.failed",
               "traceId": TID2, "spanId": SID2,
               "attributes": [
                   kv("http.method", s("POST")), kv("http.status", {"intValue": "500"}),
                   kv("latency", {"doubleValue": 1.5}), kv("sampled", {"boolValue": False}),
                   kv("http", kvlist(kv("route", s("/api/orders")))), kv("password", s("hunter2"))]},
              {"timeUnixNano": "3", "severityText": "", "body": s(""),
               "attributes": [kv("empty", s("")), kv("http.method", s("get")), kv("novalue", {})]},
              {"timeUnixNano": "4", "traceId": TID3},
          ]},
         {"scope": {"name": "idle"}, "logRecords": []},
     ]},
    {"resource": {"attributes": [kv("service.name", s("payments")), kv("replicas", {"intValue": "12"})]},
     "scopeLogs": [
         {"scope": {"name": "app", "version": "0.1"},
          "logRecords": [
              {"severityText": "WARN", "body": kvlist(kv("msg", s("card declined"))),
               "attributes": [kv("http.status", {"intValue": "402"}), kv("latency", {"doubleValue": 0.75})]},
              {"severityText": "INFO", "body": {"intValue": "42"}},
              {"severityText": "DEBUG", "body": {"bytesValue": "AAEC"},
               "attributes": [kv("blob", {"bytesValue": "AAEC"})]},
              {"severityText": "INFO", "body": {"doubleValue": 2.5}},
              {"severityText": "info", "body": {"boolValue": True}},
          ]}]},
    {"scopeLogs": [
        {"logRecords": [
            {"severityText": "DEBUG", "body": s("healthcheck ok"),
             "attributes": [kv("http.method", s("GET")), kv("http", s("not-a-map"))]},
            {"severityText": "DEBUG", "body": s("multi\nline body with secret=abc123")},
        ]}]},
]}

LOG_KEYS = [
    LOG_BODY, LOG_SEVERITY_TEXT, LOG_TRACE_ID, LOG_SPAN_ID, LOG_EVENT_NAME,
    LOG_RESOURCE_SCHEMA_URL, LOG_SCOPE_SCHEMA_URL,
    ("log_attribute", ("http.method",)), ("log_attribute", ("http.status",)), ("log_attribute", ("latency",)),
    ("log_attribute", ("sampled",)), ("log_attribute", ("blob",)), ("log_attribute", ("tags",)),
    ("log_attribute", ("http",)), ("log_attribute", ("http", "route")),
    ("log_attribute", ("http", "req", "id")),
    ("log_attribute", ("empty",)), ("log_attribute", ("novalue",)), ("log_attribute", ("nope",)),
    ("resource_attribute", ("service.name",)), ("resource_attribute", ("k8s", "pod", "name")),
    ("resource_attribute", ("replicas",)), ("scope_attribute", ("lib.lang",)),
]


def log_policy(pid: str, *match: dict, keep: str = "all", **extra: Any) -> dict:
    return {"id": pid, "name": pid, "log": {"match": list(match), "keep": keep, **extra}}


# (policy, records it matches): one policy per selector / condition combination
LOG_MATCHES = [
    (log_policy("body-regex", {"log_field": "body", "regex": "^(GET|POST) /api/"}), 2),
    (log_policy("body-contains-ci",
                {"log_field": "body", "contains": "timeout", "case_insensitive": True}), 1),
    (log_policy("body-exists", {"log_field": "body", "exists": True}), 9),
    (log_policy("body-missing", {"log_field": "body", "exists": False}), 2),
    (log_policy("body-equals-int", {"log_field": "body", "equals": 42}), 1),
    (log_policy("body-gt", {"log_field": "body", "gt": 2}), 2),
    (log_policy("body-equals-hex", {"log_field": "body", "equals": {"hex_value": "000102"}}), 1),
    (log_policy("body-hex-view", {"log_field": "body", "starts_with": "0001"}), 1),
    (log_policy("body-multiline", {"log_field": "body", "regex": r"secret=\w+"}), 1),
    (log_policy("body-line-anchor", {"log_field": "body", "regex": "^line"}), 0),
    (log_policy("sev-exact", {"log_field": "severity_text", "exact": "INFO"}), 3),
    (log_policy("sev-ci", {"log_field": "severity_text", "exact": "info", "case_insensitive": True}), 4),
    (log_policy("sev-missing", {"log_field": "severity_text", "exists": False}), 2),
    (log_policy("sev-ends", {"log_field": "severity_text", "ends_with": "G"}), 3),
    (log_policy("trace-exact", {"log_field": "trace_id", "exact": TID1}), 1),
    (log_policy("trace-equals", {"log_field": "trace_id", "equals": {"hex_value": TID2}}), 1),
    (log_policy("trace-missing", {"log_field": "trace_id", "exists": False}), 8),
    (log_policy("span-starts", {"log_field": "span_id", "starts_with": "eee1"}), 1),
    (log_policy("event-name", {"log_field": "event_name", "exact": "order.failed"}), 1),
    (log_policy("res-schema", {"log_field": "resource_schema_url", "contains": "schemas/1.21"}), 4),
    (log_policy("scope-schema-missing", {"log_field": "scope_schema_url", "exists": False}), 7),
    (log_policy("attr-get", {"log_attribute": "http.method", "exact": "GET"}), 2),
    (log_policy("attr-not-get", {"log_attribute": "http.method", "exact": "GET", "negate": True}), 9),
    (log_policy("attr-status-gte", {"log_attribute": "http.status", "gte": 400}), 2),
    (log_policy("attr-status-lt", {"log_attribute": "http.status", "lt": 300}), 1),
    (log_policy("attr-latency-lte", {"log_attribute": "latency", "lte": 0.75}), 2),
    (log_policy("attr-latency-gt", {"log_attribute": "latency", "gt": 1}), 1),
    (log_policy("attr-sampled", {"log_attribute": "sampled", "equals": True}), 1),
    (log_policy("attr-unsampled", {"log_attribute": "sampled", "equals": False}), 1),
    (log_policy("attr-bytes", {"log_attribute": "blob", "equals": {"bytes_value": "3q2+7w=="}}), 1),
    (log_policy("attr-bytes-view", {"log_attribute": "blob", "exact": "000102"}), 1),
    (log_policy("attr-nested", {"log_attribute": ["http", "route"], "starts_with": "/api/"}), 2),
    (log_policy("attr-deep", {"log_attribute": ["http", "req", "id"], "exact": "abc-1"}), 1),
    (log_policy("attr-array", {"log_attribute": "tags", "exists": True}), 1),
    (log_policy("attr-array-string", {"log_attribute": "tags", "contains": "a"}), 0),
    (log_policy("attr-empty", {"log_attribute": "empty", "exists": True}), 1),
    (log_policy("attr-empty-exact", {"log_attribute": "empty", "exact": ""}), 0),
    (log_policy("attr-nonempty", {"log_attribute": "http.method", "contains": ""}), 4),
    (log_policy("attr-novalue", {"log_attribute": "novalue", "exists": True}), 0),
    (log_policy("attr-novalue-absent", {"log_attribute": "novalue", "exists": False}), 11),
    (log_policy("res-service", {"resource_attribute": "service.name", "exact": "checkout"}), 4),
    (log_policy("res-nested", {"resource_attribute": ["k8s", "pod", "name"], "regex": "^checkout-"}), 4),
    (log_policy("res-replicas", {"resource_attribute": "replicas", "gt": 5}), 5),
    (log_policy("res-no-service", {"resource_attribute": "service.name", "exists": False}), 2),
    (log_policy("scope-lang", {"scope_attribute": "lib.lang", "exact": "python"}), 4),
    (log_policy("and", {"log_field": "severity_text", "exact": "INFO"},
                {"resource_attribute": "service.name", "exact": "payments"}), 2),
]


def fresh(doc: dict) -> dict:
    return copy.deepcopy(doc)


@pytest.mark.parametrize("key", LOG_KEYS, ids=str)
def test_log_columns_match_json(key):
    json_batch, proto_batch = JsonLogs(fresh(LOGS)), ProtoLogs(to_message("log", LOGS))
    assert proto_batch.n == json_batch.n == 11
    for view in ("column", "strings"):
        expected, got = getattr(json_batch, view)(key), getattr(proto_batch, view)(key)
        assert got.values == expected.values, view
        assert got.owners == expected.owners, view


_UNIFORM_VALUES = {
    "ints-with-zero": [{"intValue": "0"}, {"intValue": "5"}, {"intValue": "0"}],
    "strings-with-empty": [{"stringValue": ""}, {"stringValue": "x"}],
    "strings-then-bytes": [{"stringValue": "x"}, {"bytesValue": "AQI="}],
    "ints-then-unset": [{"intValue": "3"}, {}],
    "unset-then-strings": [{}, {"stringValue": "x"}],
    "doubles-then-int-zero": [{"doubleValue": 0.0}, {"doubleValue": 1.5}, {"intValue": "0"}],
    "bools-then-empty-string": [{"boolValue": False}, {"boolValue": True}, {"stringValue": ""}],
    "ints-then-string": [{"intValue": "7"}, {"stringValue": "7"}],
}


@pytest.mark.parametrize("values", _UNIFORM_VALUES.values(), ids=_UNIFORM_VALUES.keys())
def test_uniform_columns_read_default_values_right(values):
    """The C-level column passes read oneof members directly: a default-valued read
    (0, "", False) must still tell a set member from another kind or an unset value."""
    records = [{"body": value, "attributes": [{"key": "a", "value": value}, {"key": "b", "value": value}]}
               for value in values]
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    for key in (("log_attribute", ("a",)), ("log_attribute", ("b",)), LOG_BODY):
        json_batch, proto_batch = JsonLogs(fresh(doc)), ProtoLogs(to_message("log", doc))
        for view in ("column", "strings"):
            assert getattr(proto_batch, view)(key).values == getattr(json_batch, view)(key).values, (key, view)


def test_log_typed_values():
    batch = ProtoLogs(to_message("log", LOGS))
    assert batch.column(LOG_BODY).values == [
        "GET /api/users 200 user=jane.doe@example.com", "POST /api/orders 500 upstream TIMEOUT",
        MISSING, MISSING,
        OTHER, 42, b"\x00\x01\x02", 2.5, True, "healthcheck ok", "multi\nline body with secret=abc123"]
    assert batch.strings(LOG_BODY).values[4:7] == ["", "", "000102"]
    assert batch.column(LOG_TRACE_ID).values[:3] == [bytes.fromhex(TID1), bytes.fromhex(TID2), MISSING]
    assert batch.strings(LOG_TRACE_ID).values[:3] == [TID1, TID2, ""]
    attrs = batch.column(("resource_attribute", ("service.name",)))
    assert attrs.values == ["checkout", "payments", MISSING]
    assert attrs.owners == [0b1111, 0b11111 << 4, 0b11 << 9]


def test_log_matching_every_selector_and_condition():
    policies = [p for p, _ in LOG_MATCHES]
    out, stats = run_both("log", LOGS, policies)
    assert not out.outcome.changed and out.outcome.kept == 11
    assert hits(stats) == {p["id"]: n for p, n in LOG_MATCHES if n}


LOG_TRANSFORMS = [
    log_policy("a-drop-debug", {"log_field": "severity_text", "exact": "DEBUG"}, keep="none"),
    log_policy("b-rate", {"resource_attribute": "service.name", "exact": "payments"}, keep="2/m"),
    log_policy("c-sample", {"log_field": "trace_id", "exists": True}, keep="50%",
               sample_key={"log_field": "trace_id"}),
    log_policy("d-keyed", {"log_field": "severity_text", "exists": False}, keep="50%",
               sample_key={"log_attribute": "http.method"}),
    log_policy("t-main", {"log_attribute": "http.method", "exists": True}, transform={
        "remove": [{"log_attribute": "password"}, {"resource_attribute": "env"}, {"log_attribute": "nope"}],
        "redact": [
            {"log_field": "body", "regex": r"(\w+(?:\.\w+)*)@example\.com", "replacement": "${1}@redacted"},
            {"log_attribute": "user.email"},
            {"log_field": "severity_text", "regex": "^ERR(OR)$", "replacement": "E$1 $$"},
            {"log_attribute": ["http", "route"], "regex": "/api", "replacement": ""},
            {"log_attribute": "latency", "regex": "."},
        ],
        "rename": [
            {"from_log_attribute": "http.method", "to": "http.request.method"},
            {"from_log_field": "severity_text", "to": "sev"},
            {"from_log_attribute": ["http", "route"], "to": "path"},
            {"from_log_attribute": "sampled", "to": "http.status"},
        ],
        "add": [
            {"log_attribute": "processed", "value": "yes"},
            {"log_attribute": ["meta", "pipeline"], "value": "edge"},
            {"log_field": "severity_text", "value": "UNSET"},
            {"resource_attribute": "edge.processed", "value": "true"},
            {"log_field": "body", "value": "<empty>"},
            {"log_attribute": "http.status", "value": "kept", "upsert": False},
        ],
    }),
    log_policy("u-event", {"log_field": "event_name", "exists": True}, transform={
        "remove": [{"log_field": "span_id"}, {"log_field": "event_name"}],
        "rename": [{"from_log_field": "body", "to": "message", "upsert": True}],
        "add": [{"log_field": "body", "value": "moved"}, {"scope_attribute": "touched", "value": "1"},
                {"log_attribute": "trace", "value": "x", "upsert": True}],
    }),
    log_policy("v-payments", {"resource_attribute": "service.name", "exact": "payments"}, transform={
        "redact": [{"resource_attribute": "service.name", "regex": "pay", "replacement": "PAY"},
                   {"log_field": "body", "replacement": "***"}],
        "add": [{"log_field": "resource_schema_url", "value": "https://example.com/r", "upsert": True},
                {"log_field": "scope_schema_url", "value": "https://example.com/s"},
                {"scope_attribute": ["owner", "team"], "value": "payments"}],
        "rename": [{"from_resource_attribute": "replicas", "to": "replica.count"},
                   {"from_log_field": "trace_id", "to": "tid"}],
    }),
]


def test_log_drops_and_transforms():
    out, stats = run_both("log", LOGS, LOG_TRANSFORMS)
    assert out.outcome.changed and 0 < out.outcome.kept < 11
    assert any(c.stages["redact"][0] for c in stats.values())
    doc = normal_proto("log", out.body)
    records = [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl.get("logRecords", [])]
    assert not any(r.get("severityText") == "DEBUG" for r in records)
    assert any("jane.doe@redacted" in str(r.get("body")) for r in records)


def test_log_everything_dropped():
    policies = [log_policy("all", {"log_attribute": "nope", "exists": True, "negate": True}, keep="none")]
    out, stats = run_both("log", LOGS, policies)
    assert out.outcome.kept == 0 and out.outcome.changed
    # only the scope that was empty to begin with (and its resource) is left
    assert [[sl["scope"]["name"] for sl in rl["scopeLogs"]]
            for rl in normal_proto("log", out.body)["resourceLogs"]] == [["idle"]]
    assert hits(stats) == {"all": 11}  # records a policy drops count as its hits
    doc = fresh(LOGS)
    del doc["resourceLogs"][0]["scopeLogs"][1]
    out, _ = run_both("log", doc, policies)
    assert out.outcome.kept == 0 and out.body == b""


def test_log_nothing_changes():
    policies = [log_policy("keep", {"log_field": "body", "exists": True}),
                log_policy("never", {"log_field": "severity_text", "exact": "FATAL"}, keep="none")]
    out, _ = run_both("log", LOGS, policies)
    assert out.outcome.kept == 11 and not out.outcome.changed


def test_log_get_set_delete():
    batch = ProtoLogs(to_message("log", LOGS))
    assert batch.get(0, LOG_TRACE_ID).string_value == TID1
    assert batch.get(2, LOG_BODY) is not None  # an empty string body is still a body
    assert batch.get(3, LOG_BODY) is None
    assert batch.get(2, ("log_attribute", ("novalue",))) is not None
    assert batch.get(9, ("log_attribute", ("http", "route"))) is None  # "http" is not a map there
    assert not batch.changed
    batch.set(0, LOG_TRACE_ID, batch.string_value("not hex"))
    assert batch.records[0].trace_id == b""
    batch.set(1, LOG_TRACE_ID, batch.string_value(TID1.upper()))
    assert batch.records[1].trace_id == bytes.fromhex(TID1)
    batch.set(9, ("log_attribute", ("a", "b", "c")), batch.string_value("deep"))
    assert batch.column(("log_attribute", ("a", "b", "c"))).values[9] == "deep"
    batch.set(10, ("resource_attribute", ("service.name",)), batch.string_value("batch"))
    assert batch.column(("resource_attribute", ("service.name",))).values[2] == "batch"
    assert batch.delete(4, LOG_SCOPE_SCHEMA_URL) is False
    assert batch.delete(4, ("log_attribute", ("latency",))) is True
    assert batch.delete(4, ("log_attribute", ("latency",))) is False
    assert batch.string_of(batch.get(5, LOG_BODY)) is None
    assert batch.changed


def test_log_export_matches_json():
    json_batch, proto_batch = JsonLogs(fresh(LOGS)), ProtoLogs(to_message("log", LOGS))
    for i in (0, 1, 4, 10):
        got, expected = proto_batch.export(i), json_batch.export(i)
        assert got["record"].get("traceId") == expected["record"].get("traceId")
        for part, message in (("resource", Resource), ("scope", InstrumentationScope), ("record", LogRecord)):
            assert normal_part(got[part], message) == normal_part(expected[part], message)


def test_keep_only_prunes_what_drops_emptied():
    doc = fresh(LOGS)
    doc["resourceLogs"].append({"resource": {"attributes": [kv("service.name", s("quiet"))]}})
    batch = ProtoLogs(to_message("log", doc))
    keep = (1 << 0) | (1 << 5)  # one record of resource 1 and one of resource 2; resource 3 emptied
    batch.keep_only(keep)
    assert batch.changed
    out = json_format.MessageToDict(batch.message)
    resources = out["resourceLogs"]
    # the emptied resource goes; the one that never had scopes stays (the JSON view drops it too)
    assert [r["resource"]["attributes"][0]["value"]["stringValue"] for r in resources] == [
        "checkout", "payments", "quiet"]
    first = resources[0]["scopeLogs"]
    assert [sl["scope"]["name"] for sl in first] == ["http", "idle"]  # originally empty scope kept
    assert len(first[0]["logRecords"]) == 1
    assert resources[1]["scopeLogs"][0]["logRecords"][0]["body"] == {"intValue": "42"}


@pytest.mark.parametrize("budget", [proto_batch._MEMMOVE_BUDGET, 0])  # run deletion, then sort
def test_keep_only_scattered_runs(budget, monkeypatch):
    monkeypatch.setattr(proto_batch, "_MEMMOVE_BUDGET", budget)
    doc = {"resourceLogs": [{"scopeLogs": [
        {"logRecords": [{"body": s(str(i))} for i in range(200)]},
        {"logRecords": [{"body": s(str(i))} for i in range(200, 230)]}]}]}
    batch = ProtoLogs(to_message("log", doc))
    rng = random.Random(3)
    kept = [i for i in range(230) if rng.random() < 0.4]
    batch.records[kept[0]].severity_text = "FIRST"  # the kept records are moved, not copied
    batch.keep_only(bits.from_indices(kept, 230))
    records = [r for sl in batch.message.resource_logs[0].scope_logs for r in sl.log_records]
    assert [r.body.string_value for r in records] == [str(i) for i in kept]
    assert records[0].severity_text == "FIRST" and records[0] is batch.records[kept[0]]


# ── metrics ────────────────────────────────────────────────────────────────

METRICS = {"resourceMetrics": [
    {"resource": {"attributes": [kv("service.name", s("checkout")),
                                 kv("host", kvlist(kv("arch", s("amd64"))))]},
     "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
     "scopeMetrics": [
         {"scope": {"name": "otel.http", "version": "1.0.0", "attributes": [kv("lib", s("otel"))]},
          "schemaUrl": "https://example.com/s",
          "metrics": [
              {"name": "http.server.duration", "unit": "ms", "description": "request latency",
               "histogram": {"aggregationTemporality": 2, "dataPoints": [
                   {"attributes": [kv("http.method", s("GET")), kv("http.status", {"intValue": "200"})],
                    "count": "3", "sum": 1.5, "bucketCounts": ["1", "2"], "explicitBounds": [1.0]},
                   {"attributes": [kv("http.method", s("POST")), kv("http.status", {"intValue": "500"})],
                    "count": "1"}]}},
              {"name": "http.server.requests", "unit": "1", "sum": {
                  "aggregationTemporality": 1, "isMonotonic": True,
                  "dataPoints": [{"attributes": [kv("http.method", s("GET"))], "asInt": "10"}]}},
              {"name": "process.cpu", "gauge": {"dataPoints": [
                  {"asDouble": 0.5, "attributes": [kv("cpu", {"intValue": "0"})]},
                  {"asDouble": 0.7, "attributes": [kv("cpu", {"intValue": "1"})]}]}},
          ]},
         {"scope": {"name": "runtime"}, "metrics": [
             {"name": "runtime.gc", "exponentialHistogram": {"aggregationTemporality": 2, "dataPoints": [
                 {"scale": 1, "count": "2", "attributes": [kv("gen", s("young"))]}]}},
             {"name": "rpc.latency", "summary": {"dataPoints": [
                 {"count": "4", "sum": 2.0, "attributes": [kv("rpc", kvlist(kv("method", s("Get"))))]}]}},
             {"name": "empty.metric", "description": ""},
         ]}]},
    {"resource": {"attributes": [kv("service.name", s("batch"))]},
     "scopeMetrics": [{"metrics": [
         {"name": "jobs.done", "unit": "{job}", "sum": {"dataPoints": [{"asInt": "5"}]}}]}]},
]}

METRIC_KEYS = [
    METRIC_NAME, METRIC_DESCRIPTION, METRIC_UNIT, METRIC_RESOURCE_SCHEMA_URL, METRIC_SCOPE_SCHEMA_URL,
    METRIC_SCOPE_NAME, METRIC_SCOPE_VERSION, METRIC_TYPE, AGGREGATION_TEMPORALITY,
    ("datapoint_attribute", ("http.method",)), ("datapoint_attribute", ("cpu",)),
    ("datapoint_attribute", ("rpc", "method")), ("resource_attribute", ("host", "arch")),
    ("scope_attribute", ("lib",)),
]


def metric_policy(pid: str, *match: dict, keep: bool = True) -> dict:
    return {"id": pid, "name": pid, "metric": {"match": list(match), "keep": keep}}


METRIC_MATCHES = [
    (metric_policy("name-regex", {"metric_field": "name", "regex": r"^http\."}), 2),
    (metric_policy("name-exact", {"metric_field": "name", "exact": "empty.metric"}), 1),
    (metric_policy("desc-missing", {"metric_field": "description", "exists": False}), 6),
    (metric_policy("desc-contains", {"metric_field": "description", "contains": "latency"}), 1),
    (metric_policy("unit-ms", {"metric_field": "unit", "exact": "ms"}), 1),
    (metric_policy("unit-exists", {"metric_field": "unit", "exists": True}), 3),
    (metric_policy("type-histogram", {"metric_type": "histogram"}), 1),
    (metric_policy("type-sum", {"metric_type": "sum"}), 2),
    (metric_policy("type-gauge", {"metric_type": "gauge"}), 1),
    (metric_policy("type-exp", {"metric_type": "exponential_histogram"}), 1),
    (metric_policy("type-summary", {"metric_type": "summary"}), 1),
    (metric_policy("temporality-cumulative", {"aggregation_temporality": "cumulative"}), 2),
    (metric_policy("temporality-delta", {"aggregation_temporality": "delta"}), 1),
    (metric_policy("dp-post", {"datapoint_attribute": "http.method", "exact": "POST"}), 1),
    (metric_policy("dp-status", {"datapoint_attribute": "http.status", "gte": 500}), 1),
    (metric_policy("dp-cpu", {"datapoint_attribute": "cpu", "equals": 1}), 1),
    (metric_policy("dp-nested", {"datapoint_attribute": ["rpc", "method"], "exact": "Get"}), 1),
    # any data point lacking `gen` matches; the metric with no data points has none that does
    (metric_policy("dp-gen-absent", {"datapoint_attribute": "gen", "exists": False}), 5),
    (metric_policy("res-schema", {"metric_field": "resource_schema_url", "exists": True}), 6),
    (metric_policy("scope-schema", {"metric_field": "scope_schema_url", "ends_with": "/s"}), 3),
    (metric_policy("scope-name", {"metric_field": "scope_name", "exact": "runtime"}), 3),
    (metric_policy("scope-version", {"metric_field": "scope_version", "starts_with": "1."}), 3),
    (metric_policy("scope-name-absent", {"metric_field": "scope_name", "exists": False}), 1),
    (metric_policy("res-arch", {"resource_attribute": ["host", "arch"], "exact": "amd64"}), 6),
    (metric_policy("res-batch", {"resource_attribute": "service.name", "exact": "batch"}), 1),
    (metric_policy("scope-lib", {"scope_attribute": "lib", "exact": "otel"}), 3),
]


@pytest.mark.parametrize("key", METRIC_KEYS, ids=str)
def test_metric_columns_match_json(key):
    json_batch = JsonMetrics(fresh(METRICS))
    proto_batch = PROTO_BATCHES["metric"](to_message("metric", METRICS))
    for view in ("column", "strings"):
        expected, got = getattr(json_batch, view)(key), getattr(proto_batch, view)(key)
        assert (got.values, got.owners) == (expected.values, expected.owners), view


def test_metric_matching_every_selector():
    out, stats = run_both("metric", METRICS, [p for p, _ in METRIC_MATCHES])
    assert not out.outcome.changed
    assert hits(stats) == {p["id"]: n for p, n in METRIC_MATCHES if n}


def test_metric_drops():
    policies = [metric_policy("gauge", {"metric_type": "gauge"}, keep=False),
                metric_policy("empty", {"metric_field": "name", "exact": "empty.metric"}, keep=False),
                metric_policy("summary", {"metric_type": "summary"}, keep=False)]
    out, _ = run_both("metric", METRICS, policies)
    assert out.outcome.kept == 4


def test_metric_drops_emptying_scopes_and_resources():
    policies = [metric_policy("runtime", {"metric_field": "scope_name", "exact": "runtime"}, keep=False),
                metric_policy("batch", {"resource_attribute": "service.name", "exact": "batch"}, keep=False)]
    out, _ = run_both("metric", METRICS, policies)
    doc = normal_proto("metric", out.body)
    assert len(doc["resourceMetrics"]) == 1
    assert [sm["scope"]["name"] for sm in doc["resourceMetrics"][0]["scopeMetrics"]] == ["otel.http"]


# ── traces ─────────────────────────────────────────────────────────────────

TRACES = {"resourceSpans": [
    {"resource": {"attributes": [kv("service.name", s("frontend"))]},
     "schemaUrl": "https://opentelemetry.io/schemas/1.21.0",
     "scopeSpans": [
         {"scope": {"name": "tracer", "version": "2.0", "attributes": [kv("lib", s("otel-go"))]},
          "schemaUrl": "https://example.com/scope",
          "spans": [
              {"traceId": TID1, "spanId": SID1, "name": "GET /", "kind": 2, "status": {"code": 0},
               "startTimeUnixNano": "1", "endTimeUnixNano": "2",
               "attributes": [kv("http.method", s("GET")), kv("http.status", {"intValue": "200"})],
               "events": [{"name": "exception", "attributes": [kv("exception.type", s("IOError"))]},
                          {"name": "retry", "attributes": [kv("attempt", {"intValue": "2"})]}],
               "links": [{"traceId": TID2.upper(), "spanId": SID2}]},
              {"traceId": TID1, "spanId": SID2, "parentSpanId": SID1, "name": "db.query", "kind": 3,
               "status": {"code": 2, "message": "boom"}, "traceState": "ot=rv:ffffffffffffff",
               "attributes": [kv("db", kvlist(kv("system", s("postgres"))))]},
              {"traceId": TID2, "spanId": SID3, "name": "cache", "kind": 1, "traceState": "vendor=x"},
          ]}]},
    {"resource": {"attributes": [kv("service.name", s("worker"))]},
     "scopeSpans": [
         {"scope": {"name": "jobs"}, "spans": [
             {"traceId": TID3, "spanId": SID1, "name": "job.run", "kind": 5, "traceState": "ot=th:8",
              "events": [{"name": "done"}]},
             {"spanId": SID3, "name": "orphan", "kind": 4, "status": {"code": 1}},
         ]},
         {"scope": {"name": "idle"}, "spans": []}]},
]}

TRACE_KEYS = [
    TRACE_NAME, TRACE_TRACE_ID, TRACE_SPAN_ID, TRACE_PARENT_SPAN_ID, TRACE_TRACE_STATE,
    TRACE_RESOURCE_SCHEMA_URL, TRACE_SCOPE_SCHEMA_URL, TRACE_SCOPE_NAME, TRACE_SCOPE_VERSION,
    ("span_attribute", ("http.method",)), ("span_attribute", ("db", "system")), ("span_kind",),
    ("span_status",), ("event_name", "retry"), ("event_attribute", ("attempt",)),
    ("event_attribute", ("exception.type",)), ("link_trace_id", TID2),
    ("resource_attribute", ("service.name",)),
    ("scope_attribute", ("lib",)),
]


def trace_policy(pid: str, *match: dict, percentage: float = 100, **keep: Any) -> dict:
    keep["percentage"] = percentage
    return {"id": pid, "name": pid, "trace": {"match": list(match), "keep": keep}}


TRACE_MATCHES = [
    (trace_policy("name", {"trace_field": "name", "regex": "^(GET|db)"}), 2),
    (trace_policy("trace-id", {"trace_field": "trace_id", "exact": TID1}), 2),
    (trace_policy("trace-id-missing", {"trace_field": "trace_id", "exists": False}), 1),
    (trace_policy("span-id", {"trace_field": "span_id", "equals": {"hex_value": SID3}}), 2),
    (trace_policy("parent", {"trace_field": "parent_span_id", "exists": True}), 1),
    (trace_policy("state", {"trace_field": "trace_state", "starts_with": "ot="}), 2),
    (trace_policy("res-schema", {"trace_field": "resource_schema_url", "exists": True}), 3),
    (trace_policy("scope-schema", {"trace_field": "scope_schema_url", "contains": "scope"}), 3),
    (trace_policy("scope-name", {"trace_field": "scope_name", "exact": "jobs"}), 2),
    (trace_policy("scope-version", {"trace_field": "scope_version", "exists": False}), 2),
    (trace_policy("attr", {"span_attribute": "http.status", "lt": 300}), 1),
    (trace_policy("attr-nested", {"span_attribute": ["db", "system"], "exact": "postgres"}), 1),
    (trace_policy("kind", {"span_kind": "server"}), 1),
    (trace_policy("kind-consumer", {"span_kind": "consumer"}), 1),
    (trace_policy("status", {"span_status": "error"}), 1),
    (trace_policy("status-ok", {"span_status": "ok"}), 1),
    (trace_policy("event", {"event_name": "retry"}), 1),
    (trace_policy("no-event", {"event_name": "retry", "exists": False}), 4),
    (trace_policy("event-attr", {"event_attribute": "attempt", "gte": 2}), 1),
    (trace_policy("event-attr-string", {"event_attribute": "exception.type", "regex": "Error$"}), 1),
    (trace_policy("link", {"link_trace_id": TID2.upper()}), 1),
    (trace_policy("res", {"resource_attribute": "service.name", "exact": "worker"}), 2),
    (trace_policy("scope-attr", {"scope_attribute": "lib", "starts_with": "otel"}), 3),
]


@pytest.mark.parametrize("key", TRACE_KEYS, ids=str)
def test_trace_columns_match_json(key):
    json_batch, proto_batch = JsonTraces(fresh(TRACES)), ProtoTraces(to_message("trace", TRACES))
    for view in ("column", "strings"):
        expected, got = getattr(json_batch, view)(key), getattr(proto_batch, view)(key)
        assert (got.values, got.owners) == (expected.values, expected.owners), view


def test_trace_matching_every_selector():
    out, stats = run_both("trace", TRACES, [p for p, _ in TRACE_MATCHES])
    assert out.outcome.changed and out.outcome.kept == 5  # 100% writes th:0 into tracestate
    assert hits(stats) == {p["id"]: n for p, n in TRACE_MATCHES if n}


def test_trace_sampling_writes_tracestate():
    policies = [
        trace_policy("a-orphan", {"trace_field": "name", "exact": "orphan"}, percentage=0),
        trace_policy("b-hash", {"span_kind": "server"}, percentage=50, mode="hash_seed", hash_seed=42),
        trace_policy("c-prop", {"trace_field": "trace_state", "contains": "ot="}, percentage=50,
                     mode="proportional"),
        trace_policy("d-equalizing", {"event_name": "done"}, percentage=25, mode="equalizing"),
        trace_policy("e-all", {"resource_attribute": "service.name", "exists": True}, percentage=100,
                     sampling_precision=2),
    ]
    out, _ = run_both("trace", TRACES, policies)
    assert out.outcome.changed and out.outcome.kept < 5
    doc = normal_proto("trace", out.body)
    states = [sp.get("traceState", "") for rs in doc["resourceSpans"] for ss in rs["scopeSpans"]
              for sp in ss.get("spans", [])]
    assert all("th:" in st for st in states)


def test_trace_accessors():
    batch = ProtoTraces(to_message("trace", TRACES))
    assert batch.trace_id(0) == bytes.fromhex(TID1) and batch.trace_id(4) is None
    assert batch.trace_state(1) == "ot=rv:ffffffffffffff" and batch.trace_state(0) == ""
    batch.set_trace_state(2, "vendor=x")
    assert not batch.changed
    batch.set_trace_state(2, "ot=th:0,vendor=x")
    assert batch.changed and batch.records[2].trace_state == "ot=th:0,vendor=x"
    exported = batch.export(0)
    assert exported["record"]["traceId"] == TID1 and exported["record"]["links"][0]["traceId"] == TID2
    assert exported["resource"]["attributes"][0]["key"] == "service.name"


def test_trace_everything_dropped():
    out, _ = run_both("trace", TRACES, [trace_policy("none", {"span_kind": "server", "negate": True},
                                                     percentage=0),
                                        trace_policy("server", {"span_kind": "server"}, percentage=0)])
    assert out.outcome.kept == 0
    assert [[ss["scope"]["name"] for ss in rs["scopeSpans"]]
            for rs in normal_proto("trace", out.body)["resourceSpans"]] == [["idle"]]
    doc = fresh(TRACES)
    del doc["resourceSpans"][1]["scopeSpans"][1]
    policies = [trace_policy("none", {"trace_field": "name", "exists": True}, percentage=0)]
    out, _ = run_both("trace", doc, policies)
    assert out.outcome.kept == 0 and out.body == b""


# ── undecodable bodies ─────────────────────────────────────────────────────


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
@pytest.mark.parametrize("garbage", [b"\xff\xff\xff\xff", b"not protobuf at all {json}",
                                     b"\x0a\xff\xff\xff\xff\x0f"])
def test_garbage_is_undecodable(signal, garbage):
    snapshot = snapshot_of([log_policy("p", {"log_field": "body", "exists": True})])
    with pytest.raises(UndecodableBody):
        evaluate(Engine(snapshot, rng=random.Random(1)), signal, garbage, PROTO_TYPE)
    with pytest.raises(BatchShapeError):
        parse_request(signal, garbage)


def test_empty_body_is_an_empty_request():
    snapshot = snapshot_of([log_policy("p", {"log_field": "body", "exists": True}, keep="none")])
    out = evaluate(Engine(snapshot, rng=random.Random(1)), "log", b"", PROTO_TYPE)
    assert out.outcome.total == 0 and out.body == b""
