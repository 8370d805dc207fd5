"""Fuzzing the OTLP parsers: JSON and protobuf batch views through `edge.formats.otlp.body.evaluate`.

Property (fail-open, lose nothing): no exception escapes but `UndecodableBody` (the route then
forwards the bytes raw); an unchanged result is the original bytes object; a changed one holds
exactly the input records minus those a suite policy drops, each kept record unchanged. For
well-formed documents the engine must not even fall back: the result is exactly that oracle.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edge.engine.engine import Engine
from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import evaluate
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from tests.reliability.harness import MESSAGES, SUITE_POLICIES, fingerprint, otlp_document, records_of

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CONTENT_TYPES = {False: "application/json", True: "application/x-protobuf"}


@pytest.fixture(scope="module")
def engine() -> Engine:
    loaded = load_document({"policies": SUITE_POLICIES})
    assert not loaded.errors
    return Engine(compile_policies(loaded.policies))


def dropped_by_suite(signal: str, record: Any) -> bool:
    """The suite policies, evaluated by hand: the oracle the engine is compared with."""
    if not isinstance(record, dict):
        return False
    if signal == "log":
        return record.get("severityText") == "DEBUG"
    name = record.get("name")
    prefix = "drop." if signal == "metric" else "drop-"
    return isinstance(name, str) and name.startswith(prefix)


# ── strategies: well-formed OTLP/JSON documents, then the same with junk in random places ──

text = st.text(max_size=10)
scalar_value = st.one_of(
    st.builds(lambda s: {"stringValue": s}, text),
    st.builds(lambda i: {"intValue": str(i)}, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda b: {"boolValue": b}, st.booleans()),
    st.builds(lambda d: {"doubleValue": d}, st.floats(allow_nan=False, allow_infinity=False)),
)
any_value = st.recursive(scalar_value, lambda inner: st.one_of(
    st.builds(lambda vs: {"arrayValue": {"values": vs}}, st.lists(inner, max_size=3)),
    st.builds(lambda kvs: {"kvlistValue": {"values": kvs}},
              st.lists(st.builds(lambda k, v: {"key": k, "value": v}, text, inner), max_size=3))), max_leaves=6)
attributes = st.lists(st.builds(lambda k, v: {"key": k, "value": v},
                                st.sampled_from(["service.name", "user", "k"]) | text, any_value), max_size=3)
names = {"log": st.sampled_from(["DEBUG", "INFO", "debug", "DEBUG ", "", "WARN"]),
         "metric": st.sampled_from(["drop.x", "drop", "keep.drop.x", "DROP.x", "drop."]) | text,
         "trace": st.sampled_from(["drop-1", "drop", "keep-drop-", "drop-"]) | text}


def record_strategy(signal: str) -> st.SearchStrategy[dict[str, Any]]:
    if signal == "log":
        return st.fixed_dictionaries({}, optional={"severityText": names["log"], "body": any_value,
                                                   "attributes": attributes, "eventName": text,
                                                   "timeUnixNano": st.integers(0, 2**63).map(str)})
    if signal == "metric":
        point = st.fixed_dictionaries({"asDouble": st.floats(allow_nan=False, allow_infinity=False)},
                                      optional={"attributes": attributes})
        return st.fixed_dictionaries({"name": names["metric"]}, optional={
            "description": text, "unit": text, "gauge": st.builds(lambda ps: {"dataPoints": ps},
                                                                 st.lists(point, max_size=2))})
    return st.fixed_dictionaries({"name": names["trace"]}, optional={
        "kind": st.integers(0, 5), "attributes": attributes,
        "status": st.builds(lambda c: {"code": c}, st.integers(0, 2))})


def document_strategy(signal: str) -> st.SearchStrategy[dict[str, Any]]:
    top, scopes, key = {"log": ("resourceLogs", "scopeLogs", "logRecords"),
                        "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
                        "trace": ("resourceSpans", "scopeSpans", "spans")}[signal]
    scope = st.builds(lambda n, rs: {"scope": {"name": n}, key: rs}, text, st.lists(record_strategy(signal),
                                                                                   max_size=4))
    resource = st.builds(lambda a, ss: {"resource": {"attributes": a}, scopes: ss}, attributes,
                         st.lists(scope, max_size=3))
    return st.builds(lambda rs: {top: rs}, st.lists(resource, max_size=3))


junk = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), text,
                 st.lists(st.integers(0, 9), max_size=2),
                 st.dictionaries(text, st.integers(0, 9), max_size=2))


@st.composite
def damaged(draw: st.DrawFn, signal: str) -> dict[str, Any]:
    """A well-formed document with one value somewhere replaced by junk of any type."""
    doc = draw(document_strategy(signal))
    slots: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                slots.append((node, k))
                walk(v)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                slots.append((node, i))
                walk(v)

    walk(doc)
    if slots:
        holder, key = draw(st.sampled_from(slots))
        holder[key] = draw(junk)
    return doc


def all_records(signal: str, doc: Any) -> list[Any]:
    """The records of a possibly damaged document (anything that is not a list holds none)."""
    top, scopes, key = {"log": ("resourceLogs", "scopeLogs", "logRecords"),
                        "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
                        "trace": ("resourceSpans", "scopeSpans", "spans")}[signal]
    out: list[Any] = []
    tops = doc.get(top) if isinstance(doc, dict) else None
    for rl in tops if isinstance(tops, list) else []:
        held = rl.get(scopes) if isinstance(rl, dict) else None
        for sl in held if isinstance(held, list) else []:
            records = sl.get(key) if isinstance(sl, dict) else None
            out += records if isinstance(records, list) else []
    return out


def view(signal: str, body: bytes, protobuf: bool) -> list[Any]:
    return records_of(signal, body, True) if protobuf else all_records(signal, orjson.loads(body))


def check_fail_open(engine: Engine, signal: str, body: bytes, protobuf: bool, exact: bool) -> None:
    """Evaluate and hold the result to the property; `exact` also forbids the internal fallback."""
    try:
        result = evaluate(engine, signal, body, CONTENT_TYPES[protobuf])
    except UndecodableBody:
        assert not exact, "a well-formed document was called undecodable"
        return
    before = view(signal, body, protobuf)
    expected = [r for r in before if not dropped_by_suite(signal, r)]
    if result.body is body:
        assert not exact or len(expected) == len(before) or not result.outcome.kept, "policies were not applied"
        return
    after = view(signal, result.body, protobuf)
    assert [fingerprint(r) for r in after] == [fingerprint(r) for r in expected]
    assert (result.outcome.total, result.outcome.kept) == (len(before), len(expected))


# ── the properties ──


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_well_formed_batches_are_filtered_exactly(engine: Engine, signal: str, protobuf: bool,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    @FUZZ
    @given(doc=document_strategy(signal))
    def run(doc: dict[str, Any]) -> None:
        body = (json_format.ParseDict(doc, MESSAGES[signal]()).SerializeToString() if protobuf
                else orjson.dumps(doc))
        with caplog.at_level(logging.ERROR):
            caplog.clear()
            check_fail_open(engine, signal, body, protobuf, exact=True)
            assert not caplog.records, "the engine fell back to fail-open on a well-formed batch"

    run()


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
def test_damaged_json_documents_fail_open(engine: Engine, signal: str) -> None:
    @FUZZ
    @given(doc=damaged(signal))
    def run(doc: dict[str, Any]) -> None:
        check_fail_open(engine, signal, orjson.dumps(doc), False, exact=False)

    run()


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_arbitrary_bytes_fail_open(engine: Engine, signal: str, protobuf: bool) -> None:
    @FUZZ
    @given(body=st.binary(max_size=300))
    def run(body: bytes) -> None:
        check_fail_open(engine, signal, body, protobuf, exact=False)

    run()


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
def test_mutated_protobuf_fails_open(engine: Engine, signal: str) -> None:
    """Valid requests with bytes flipped, cut or inserted: parse errors or smaller valid requests."""
    @FUZZ
    @given(doc=document_strategy(signal), data=st.data())
    def run(doc: dict[str, Any], data: st.DataObject) -> None:
        body = bytearray(json_format.ParseDict(doc, MESSAGES[signal]()).SerializeToString())
        assume(body)
        for _ in range(data.draw(st.integers(1, 4))):
            at = data.draw(st.integers(0, len(body) - 1))
            op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
            if op == "flip":
                body[at] = data.draw(st.integers(0, 255))
            elif op == "cut":
                del body[at:]
                if not body:
                    break
            else:
                body[at:at] = data.draw(st.binary(min_size=1, max_size=4))
        check_fail_open(engine, signal, bytes(body), True, exact=False)

    run()


def test_suite_oracle_matches_a_known_batch(engine: Engine) -> None:
    """The oracle itself: a fixed batch with one record of each kind gives the expected survivors."""
    doc = otlp_document("log", [{"severityText": "DEBUG", "body": {"stringValue": "a"}},
                                {"severityText": "INFO", "body": {"stringValue": "b"}}])
    result = evaluate(engine, "log", orjson.dumps(doc), "application/json")
    assert [r["body"]["stringValue"] for r in all_records("log", orjson.loads(result.body))] == ["b"]
