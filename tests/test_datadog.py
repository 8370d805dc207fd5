"""Datadog payloads through the real engine: field mappings, byte-exact output, transforms, fail-open.

Every test compiles real policies and evaluates real JSON bodies through the batch views
(`edge.formats.datadog.batch`) or the bytes-in/bytes-out codec (`edge.formats.datadog.body`).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import orjson
import pytest

from edge.engine.engine import Engine
from edge.engine.extensions import ExtensionRegistry
from edge.formats.datadog.batch import DatadogLogs, DatadogSeries
from edge.formats.datadog.body import evaluate
from edge.formats.errors import UndecodableBody
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from tests.engine_helpers import clean_engine


def dropped(matchers: list[dict], records: list[dict], signal: str = "log") -> list[int]:
    """Indices of the records that a dropping policy with these matchers removes (= the ones it matches)."""
    if signal == "log":
        engine = clean_engine([{"id": "p", "log": {"match": matchers, "keep": "none"}}])
        batch: Any = DatadogLogs(copy.deepcopy(records))
    else:
        engine = clean_engine([{"id": "p", "metric": {"match": matchers, "keep": False}}])
        batch = DatadogSeries({"series": copy.deepcopy(records)})
    engine.evaluate(signal, batch)
    return [i for i in range(batch.n) if not batch.alive >> i & 1]


def gcp(payload: dict) -> str:
    """A JSON-object message as Google Cloud logs forwarded through Datadog carry them."""
    return json.dumps({"data": {"jsonPayload": payload}, "severity": "INFO"})


# ── logs: body ──────────────────────────────────────────────────────────────


BODIES = [
    {"message": "m-text", "msg": "msg-text"},
    {"msg": "msg-text", "log": "log-text"},
    {"log": "log-text"},
    {"message": "", "msg": "msg-text"},  # an empty message is no body: the next key is
    {"message": gcp({"message": "gcp-message", "body": "gcp-body"})},
    {"message": gcp({"body": "gcp-body", "log": "gcp-log"})},
    {"message": gcp({"log": "gcp-log"})},
    {"message": gcp({"other": "x"}), "msg": "msg-text"},  # no body inside: the whole message string
    {"message": "{not json at all"},
    {"status": "info"},
]


@pytest.mark.parametrize(("text", "expected"), [
    ("m-text", [0]),
    ("msg-text", [1, 3]),
    ("log-text", [2]),
    ("gcp-message", [4]),
    ("gcp-body", [5]),
    ("gcp-log", [6]),
    ("{not json at all", [8]),
])
def test_body_is_message_else_msg_else_log_or_the_json_payload(text: str, expected: list[int]) -> None:
    assert dropped([{"log_field": "body", "exact": text}], BODIES) == expected


def test_body_of_a_json_message_without_payload_body_is_the_whole_string() -> None:
    assert dropped([{"log_field": "body", "contains": '"other": "x"'}], BODIES) == [7]
    assert dropped([{"log_field": "body", "exists": False}], BODIES) == [9]


def test_non_string_bodies_are_typed() -> None:
    records = [{"message": 42}, {"message": "42"}, {"msg": 7.5}, {"log": True}]
    assert dropped([{"log_field": "body", "gte": 40}], records) == [0]
    assert dropped([{"log_field": "body", "exact": "42"}], records) == [1]
    assert dropped([{"log_field": "body", "equals": True}], records) == [3]


# ── logs: severity ──────────────────────────────────────────────────────────


def test_severity_is_status_else_level() -> None:
    records = [{"status": "error", "level": "info"}, {"level": "error"}, {"status": "", "level": "error"},
               {"status": "info"}, {"message": "no severity"}]
    assert dropped([{"log_field": "severity_text", "exact": "error"}], records) == [0, 1, 2]
    assert dropped([{"log_field": "severity_text", "exists": False}], records) == [4]


def test_fields_without_a_datadog_counterpart_are_absent() -> None:
    records = [{"message": "a", "trace_id": "abc", "dd": {"trace_id": "1"}}]
    for field in ("trace_id", "span_id", "event_name", "resource_schema_url", "scope_schema_url"):
        assert dropped([{"log_field": field, "exists": False}], records) == [0]
        assert dropped([{"log_field": field, "regex": "."}], records) == []


# ── logs: the attribute namespace ───────────────────────────────────────────


RECORD_ATTRS = [
    {"message": "a", "service": "checkout", "hostname": "web-1", "ddsource": "python",
     "ddtags": "env:prod,team:core", "http": {"method": "POST", "status_code": 503}, "usr.id": "u-7",
     "ok": True, "nothing": None, "list": [1, 2]},
    {"message": gcp({"message": "b", "user": "bob", "latency": 12}), "service": "payments",
     "http.method": "GET", "ddtags": "env:staging"},
    {"message": "c", "service": "auth", "http": "not-an-object"},
]


@pytest.mark.parametrize("selector", ["log_attribute", "resource_attribute", "scope_attribute"])
@pytest.mark.parametrize(("path", "condition", "expected"), [
    ("service", {"exact": "payments"}, [1]),
    ("hostname", {"starts_with": "web-"}, [0]),
    ("ddsource", {"exact": "python"}, [0]),
    ("ddtags", {"exact": "env:prod,team:core"}, [0]),  # the whole string
    ("ddtags", {"contains": "env:staging"}, [1]),
    ("http.method", {"exact": "POST"}, [0]),  # nested walk
    (["http", "method"], {"exact": "POST"}, [0]),
    ("http.method", {"exact": "GET"}, [1]),  # a top-level dotted key
    ("usr.id", {"exact": "u-7"}, [0]),
    ("http.status_code", {"gte": 500}, [0]),
    ("ok", {"equals": True}, [0]),
    ("nothing", {"exists": True}, []),  # null is absent
    ("list", {"exists": True}, [0]),  # present, but no string or number condition applies
    ("list", {"regex": "."}, []),
    ("http", {"exact": "not-an-object"}, [2]),
    ("data.jsonPayload.user", {"exact": "bob"}, [1]),  # leaves of a JSON-object message
    (["data", "jsonPayload", "latency"], {"lt": 20}, [1]),
    ("severity", {"exact": "INFO"}, [1]),
    ("missing", {"exists": False}, [0, 1, 2]),
])
def test_attributes_share_one_flat_namespace(selector: str, path: Any, condition: dict, expected: list[int]) -> None:
    assert dropped([{selector: path, **condition}], RECORD_ATTRS) == expected


def test_top_level_keys_win_over_the_json_message() -> None:
    records = [{"message": gcp({"m": 1}), "data": {"jsonPayload": {"user": "top"}}}]
    assert dropped([{"log_attribute": "data.jsonPayload.user", "exact": "top"}], records) == [0]


# ── series ──────────────────────────────────────────────────────────────────


SERIES = [
    {"metric": "system.cpu.user", "type": 3, "unit": "percent", "tags": ["env:prod", "env:other", "canary"],
     "resources": [{"name": "web-1", "type": "host"}], "source_type_name": "kubernetes",
     "points": [{"timestamp": 1, "value": 0.5}]},
    {"metric": "app.requests", "type": 1, "unit": "request", "tags": ["env:staging", "host:from-tag"],
     "resources": [{"name": "web-2", "type": "host"}, {"name": "web-3", "type": "host"}]},
    {"metric": "app.rate", "type": 2, "tags": "not-a-list"},
    {"metric": "app.unknown", "type": 0},
    {"metric": "app.untyped"},
    {"metric": "app.odd", "type": [3], "tags": [7, "env:odd"], "resources": [{"name": 1, "type": "host"}, "x"]},
]


@pytest.mark.parametrize(("matchers", "expected"), [
    ([{"metric_field": "name", "starts_with": "app."}], [1, 2, 3, 4, 5]),
    ([{"metric_field": "unit", "exact": "request"}], [1]),
    ([{"metric_field": "description", "exists": False}], [0, 1, 2, 3, 4, 5]),
    ([{"metric_type": "METRIC_TYPE_GAUGE"}], [0]),
    ([{"metric_type": "METRIC_TYPE_SUM"}], [1, 2]),  # count and rate
    ([{"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA"}], [1, 2]),
    ([{"datapoint_attribute": "env", "exact": "prod"}], [0]),
    ([{"datapoint_attribute": "env", "exact": "other"}], []),  # the first tag of a key wins
    ([{"resource_attribute": "env", "exact": "staging"}], [1]),
    ([{"datapoint_attribute": "canary", "exists": True}], [0]),  # a bare tag
    ([{"datapoint_attribute": "host", "exact": "web-1"}], [0]),  # resources as <type> = name
    ([{"datapoint_attribute": "host", "exact": "from-tag"}], [1]),  # tags before resources
    ([{"resource_attribute": "host", "exact": "web-3"}], []),
    ([{"datapoint_attribute": "source_type_name", "exact": "kubernetes"}], [0]),
    ([{"datapoint_attribute": "env", "exists": False}], [2, 3, 4]),
    ([{"datapoint_attribute": "env", "exact": "odd"}], [5]),  # malformed neighbours are skipped
    ([{"datapoint_attribute": "host", "exists": False}], [2, 3, 4, 5]),
    ([{"scope_attribute": "env", "exists": True}], []),
])
def test_series_mapping(matchers: list[dict], expected: list[int]) -> None:
    assert dropped(matchers, SERIES, signal="metric") == expected


# ── bytes in, bytes out ─────────────────────────────────────────────────────

# Records written the way no serialiser would: their bytes must survive exactly.
RAW_RECORDS = [
    b'{ "message" : "keep me",  "status":"info", "n": 1.50 }',
    b'{"message":"drop me","status":"debug"}',
    b'{"message":"caf\\u00e9 \xc3\xa9", "status" : "warn","big":123456789012345678901234567890}',
    b'{"message":"secret-abc123 leaked","status":"info"}',
    b'{"message":"team me","status":"info","service":"payments"}',
]
POLICIES = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"}},
    {"id": "redact", "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
                             "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+",
                                                       "replacement": "<redacted>"}]}}},
    {"id": "team", "log": {"match": [{"log_attribute": "service", "exact": "payments"}], "keep": "all",
                           "transform": {"add": [{"log_attribute": "team", "value": "money"}]}}},
]


def array(parts: list[bytes], sep: bytes = b" ,\n  ") -> bytes:
    return b"[\n  " + sep.join(parts) + b"\n]"


def test_nothing_dropped_or_changed_returns_the_original_body() -> None:
    body = array([RAW_RECORDS[0], RAW_RECORDS[2]])
    result = evaluate(clean_engine(POLICIES), "log", body)
    assert result.body is body
    assert (result.outcome.total, result.outcome.kept, result.outcome.changed) == (2, 2, False)


def test_kept_records_keep_their_bytes_and_only_changed_ones_are_reencoded() -> None:
    body = array(RAW_RECORDS)
    result = evaluate(clean_engine(POLICIES), "log", body)
    assert (result.outcome.total, result.outcome.kept) == (5, 4)
    out = result.body
    assert out.startswith(b"[" + RAW_RECORDS[0] + b"," + RAW_RECORDS[2] + b",")
    assert out.count(b"drop me") == 0
    tail = msgspec.json.decode(b"[" + out[len(b"[" + RAW_RECORDS[0] + b"," + RAW_RECORDS[2] + b","):])
    assert tail == [{"message": "<redacted> leaked", "status": "info"},
                    {"message": "team me", "status": "info", "service": "payments", "team": "money"}]
    assert msgspec.json.decode(out)[1]["big"] == 123456789012345678901234567890


def test_partially_dropped_records_are_their_input_spans() -> None:
    policies = POLICIES[:1]
    body = array(RAW_RECORDS)
    out = evaluate(clean_engine(policies), "log", body).body
    assert out == b"[" + b",".join(r for r in RAW_RECORDS if b"debug" not in r) + b"]"


def test_everything_dropped_keeps_nothing() -> None:
    result = evaluate(clean_engine(POLICIES), "log", array([RAW_RECORDS[1], RAW_RECORDS[1]]))
    assert (result.outcome.total, result.outcome.kept) == (2, 0)


def test_transforms_inside_a_json_message_reencode_the_message_string() -> None:
    message = gcp({"message": "token secret-xyz", "user": "bob", "nested": {"k": [1, 2]}})
    records = [{"message": message, "service": "checkout"}, {"message": "plain", "status": "info"}]
    policies = [{"id": "t", "log": {"match": [{"log_field": "body", "contains": "token"}], "keep": "all", "transform": {
        "redact": [{"log_field": "body", "regex": "secret-\\w+", "replacement": "***"}],
        "rename": [{"from_log_attribute": ["data", "jsonPayload", "user"], "to": "owner"}],
        "add": [{"log_attribute": ["data", "jsonPayload", "tag"], "value": "t"},
                {"log_attribute": "data.jsonPayload.note", "value": "n"}],
    }}}]
    body = orjson.dumps(records)
    out = msgspec.json.decode(evaluate(clean_engine(policies), "log", body).body)
    payload = json.loads(out[0]["message"])
    assert payload == {"data": {"jsonPayload": {"message": "token ***", "nested": {"k": [1, 2]}, "owner": "bob",
                                                "tag": "t", "note": "n"}}, "severity": "INFO"}
    assert out[0]["service"] == "checkout" and out[1] == records[1]


def test_changes_to_a_json_message_and_to_its_whole_string_both_survive() -> None:
    """A message without a payload body is its own body: editing the object, then the string, keeps both."""
    records = [{"message": json.dumps({"data": {"jsonPayload": {"user": "bob"}}, "token": "secret-1"})}]
    policies = [
        {"id": "a", "log": {"match": [{"log_attribute": "token", "exists": True}], "keep": "all", "transform": {
            "add": [{"log_attribute": ["data", "jsonPayload", "tag"], "value": "t"}]}}},
        {"id": "b", "log": {"match": [{"log_attribute": "token", "exists": True}], "keep": "all", "transform": {
            "redact": [{"log_field": "body", "regex": "secret-\\d", "replacement": "#"}],
            "add": [{"log_attribute": ["data", "jsonPayload", "after"], "value": "x"}]}}},
    ]
    out = msgspec.json.decode(evaluate(clean_engine(policies), "log", orjson.dumps(records)).body)
    assert json.loads(out[0]["message"]) == {"data": {"jsonPayload": {"user": "bob", "tag": "t", "after": "x"}},
                                             "token": "#"}


def test_renaming_a_dotted_key_moves_the_value_to_a_top_level_key() -> None:
    records = [{"message": gcp({"user": "bob"})}]
    policies = [{"id": "t", "log": {"match": [{"log_attribute": "data.jsonPayload.user", "exists": True}],
                                    "keep": "all", "transform": {
                                        "rename": [{"from_log_attribute": "data.jsonPayload.user", "to": "owner"}]}}}]
    out = msgspec.json.decode(evaluate(clean_engine(policies), "log", orjson.dumps(records)).body)
    assert out == [{"message": '{"data":{"jsonPayload":{}},"severity":"INFO"}', "owner": "bob"}]


def test_add_remove_rename_on_top_level_and_nested_attributes() -> None:
    records = [{"message": "m", "http": {"method": "GET"}, "tmp": "x", "ddtags": "env:prod"}]
    policies = [{"id": "t", "log": {"match": [{"log_field": "body", "exact": "m"}], "keep": "all", "transform": {
        "remove": [{"log_attribute": "tmp"}],
        "rename": [{"from_log_attribute": "ddtags", "to": "tags"}],
        "add": [{"log_attribute": "http.route", "value": "/x"}, {"log_attribute": "usr.id", "value": "u1"},
                {"log_attribute": "http.method", "value": "ignored"}, {"log_field": "severity_text", "value": "info"}],
    }}}]
    out = msgspec.json.decode(evaluate(clean_engine(policies), "log", orjson.dumps(records)).body)
    assert out == [{"message": "m", "http": {"method": "GET", "route": "/x"}, "tags": "env:prod", "usr.id": "u1",
                    "status": "info"}]


def test_body_transforms_write_where_the_body_was_found() -> None:
    records = [{"msg": "hello secret-1"}, {"log": "secret-2"}, {"status": "info"}]
    policies = [{"id": "t", "log": {"match": [{"log_field": "severity_text", "exists": False}], "keep": "all",
                                    "transform": {"redact": [{"log_field": "body", "regex": "secret-\\d",
                                                              "replacement": "#"}]}}},
                {"id": "u", "log": {"match": [{"log_field": "body", "exists": False}], "keep": "all",
                                    "transform": {"add": [{"log_field": "body", "value": "added"}]}}}]
    out = msgspec.json.decode(evaluate(clean_engine(policies), "log", orjson.dumps(records)).body)
    assert out == [{"msg": "hello #"}, {"log": "#"}, {"status": "info", "message": "added"}]


def test_sampling_with_a_sample_key_gives_records_with_one_key_one_fate() -> None:
    records = [{"message": f"r{i}", "usr": {"id": f"user-{i % 400}"}} for i in range(2000)]
    policy = {"id": "s", "log": {"match": [{"log_field": "body", "exists": True}], "keep": "50%",
                                 "sample_key": {"log_attribute": "usr.id"}}}
    engine = clean_engine([policy])
    batch = DatadogLogs(records)
    engine.evaluate("log", batch)
    fates: dict[str, set[bool]] = {}
    for i, r in enumerate(records):
        fates.setdefault(r["usr"]["id"], set()).add(bool(batch.alive >> i & 1))
    assert all(len(f) == 1 for f in fates.values())
    kept_keys = sum(True in f for f in fates.values())
    assert 140 <= kept_keys <= 260  # 400 keys at 50%: far outside 6 sigma otherwise


def test_rate_limit_keeps_the_first_n() -> None:
    policy = {"id": "r", "log": {"match": [{"log_field": "severity_text", "exact": "error"}], "keep": "3/m"}}
    records = [{"message": f"e{i}", "status": "error"} for i in range(10)]
    out = msgspec.json.decode(evaluate(clean_engine([policy]), "log", orjson.dumps(records)).body)
    assert [r["message"] for r in out] == ["e0", "e1", "e2"]


def test_series_partially_dropped_keep_other_members_and_series_bytes() -> None:
    kept = b'{ "metric" : "app.ok", "type":3, "points":[{"timestamp":1,"value":1.10}] }'
    gone = b'{"metric":"internal.x","type":1,"points":[]}'
    body = b'{"series": [' + kept + b", " + gone + b'] , "meta": {"a" : 1}}'
    engine = clean_engine([{"id": "d", "metric": {"match": [{"metric_field": "name", "starts_with": "internal."}],
                                                  "keep": False}}])
    result = evaluate(engine, "metric", body)
    assert (result.outcome.total, result.outcome.kept) == (2, 1)
    assert result.body == b'{"series":[' + kept + b'],"meta":{"a" : 1}}'
    untouched = b'{"series": [' + kept + b"]}"
    assert evaluate(engine, "metric", untouched).body is untouched


@pytest.mark.parametrize(("signal", "body"), [
    ("log", b"this is not json"),
    ("log", b'{"message": "an object, not an array"}'),
    ("log", b'[{"message": "ok"}, "a string", 3]'),
    ("log", b'[{"message": "truncated"'),
    ("metric", b'[{"metric": "a"}]'),
    ("metric", b'{"series": {"metric": "a"}}'),
    ("metric", b'{"series": ["a"]}'),
    ("metric", b'{"no_series": []}'),
])
def test_malformed_payloads_are_undecodable(signal: str, body: bytes) -> None:
    engine = clean_engine(POLICIES + [{"id": "m", "metric": {"match": [{"metric_field": "name", "regex": "."}],
                                                             "keep": False}}])
    with pytest.raises(UndecodableBody):
        evaluate(engine, signal, body)


class CollectingHandler:
    """An extension handler that keeps what it was given (and scribbles on it: it must hold copies)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def submit(self, policy_id: str, signal: str, config: bytes, records: list[dict[str, Any]]) -> None:
        self.records += records
        for item in records:
            item["record"]["message"] = "scribbled"


def test_extensions_get_copies_of_the_selected_datadog_records() -> None:
    policy = {"id": "dump", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"},
              "extensions": [{"type": "com.usetero/s3-dump", "mode": "dropped",
                              "config": {"target": {"kind": "s3", "name": "archive"}}}]}
    registry = ExtensionRegistry()
    handler = CollectingHandler()
    registry.register("com.usetero/s3-dump", handler)
    engine = Engine(compile_policies(load_document({"policies": [policy]}).policies), extensions=registry)
    body = array([RAW_RECORDS[0], RAW_RECORDS[1]])
    assert evaluate(engine, "log", body).body == b"[" + RAW_RECORDS[0] + b"]"
    assert [item["record"]["status"] for item in handler.records] == ["debug"]
    assert handler.records[0]["resource"] == {} and handler.records[0]["scope"] == {}
