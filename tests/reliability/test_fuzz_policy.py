"""Fuzzing policy loading: documents (JSON/YAML text), hand-written policy objects, compilation,
the snapshot's shared-memory form, and evaluation with whatever compiled.

Property: reading raises nothing but `PolicyFileError` (the file as a whole is unusable: the
provider keeps the last good policies); a broken policy becomes a load or compile error of that
policy only; a compiled snapshot survives `to_bytes`/`from_bytes`; evaluating any batch with it
never falls back to fail-open, and never drops a record no valid policy matched.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.engine.engine import Engine
from edge.formats.otlp.body import evaluate
from edge.policy.compiler import compile_policies
from edge.policy.loader import PolicyFileError, load_document, parse_document
from edge.policy.snapshot import Snapshot
from tests.reliability.harness import otlp_document

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

regex_text = st.text(alphabet="ab.()*+?|[]^$\\{}0123,-wdsAz", max_size=12)
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=False), st.text(max_size=6),
                 st.lists(st.integers(0, 3), max_size=2), st.dictionaries(st.text(max_size=4), st.integers(0, 3),
                                                                          max_size=2))
condition = st.one_of(
    st.fixed_dictionaries({"regex": regex_text}), st.fixed_dictionaries({"exact": st.text(max_size=6)}),
    st.fixed_dictionaries({"starts_with": st.text(max_size=4)}),
    st.fixed_dictionaries({"contains": st.text(max_size=4)}),
    st.fixed_dictionaries({"exists": st.booleans() | junk}), st.fixed_dictionaries({"equals": junk}),
    st.fixed_dictionaries({"gt": junk}), st.fixed_dictionaries({"lte": junk}),
    st.dictionaries(st.text(max_size=8), junk, max_size=2))
selector = st.one_of(
    st.fixed_dictionaries({"log_field": st.sampled_from(["body", "severity_text", "LOG_FIELD_TRACE_ID", "bogus", 3])
                           | junk}),
    st.fixed_dictionaries({"log_attribute": st.sampled_from(["user", ["http", "method"], {"path": ["a"]}]) | junk}),
    st.fixed_dictionaries({"resource_attribute": st.text(max_size=8)}),
    st.fixed_dictionaries({"metric_field": st.sampled_from(["name", "unit", "METRIC_FIELD_DESCRIPTION"]) | junk}),
    st.fixed_dictionaries({"metric_type": st.sampled_from(["gauge", "sum", "histogram"]) | junk}),
    st.fixed_dictionaries({"trace_field": st.sampled_from(["name", "trace_id", "span_id"]) | junk}),
    st.fixed_dictionaries({"span_kind": st.sampled_from(["server", "client"]) | junk}),
)


@st.composite
def matcher(draw: st.DrawFn) -> dict[str, Any]:
    return {**draw(selector), **draw(condition),
            **draw(st.fixed_dictionaries({}, optional={"negate": st.booleans() | junk,
                                                        "case_insensitive": st.booleans() | junk}))}


keep = st.sampled_from(["all", "none", "50%", "0%", "100%", "10/s", "5/m", "1/2s", "1.5/s", "-3%", "abc", ""]) | junk
transform = st.fixed_dictionaries({}, optional={
    "redact": st.lists(st.fixed_dictionaries({"log_field": st.just("body"), "regex": regex_text},
                                             optional={"replacement": st.text(max_size=5)}), max_size=2),
    "remove": st.lists(st.fixed_dictionaries({"log_attribute": st.text(max_size=5)}), max_size=2),
    "add": st.lists(st.fixed_dictionaries({"log_attribute": st.text(max_size=5), "value": st.text(max_size=5)},
                                          optional={"upsert": st.booleans()}), max_size=2),
    "rename": st.lists(st.fixed_dictionaries({"from_log_attribute": st.text(max_size=5),
                                              "to": st.text(max_size=5)}), max_size=2),
}) | junk
target = st.one_of(
    st.builds(lambda m, k, t: {"log": {"match": m, "keep": k, "transform": t}}, st.lists(matcher(), max_size=3), keep,
              transform),
    st.builds(lambda m, k: {"metric": {"match": m, "keep": k}}, st.lists(matcher(), max_size=3), st.booleans() | junk),
    st.builds(lambda m, p: {"trace": {"match": m, "keep": {"percentage": p}}}, st.lists(matcher(), max_size=3),
              st.floats(-10, 110) | junk),
    st.dictionaries(st.sampled_from(["log", "metric", "trace", "extensions", "labels"]), junk, max_size=2),
)
policy = st.builds(lambda ident, t, extra: {"id": ident, "name": ident, **t, **extra},
                   st.text(min_size=1, max_size=6) | junk, target,
                   st.fixed_dictionaries({}, optional={"enabled": st.booleans() | junk, "description": junk}))

BATCHES = {
    "log": orjson.dumps(otlp_document("log", [
        {"severityText": "DEBUG", "body": {"stringValue": "aab"}, "attributes": [
            {"key": "user", "value": {"stringValue": "a0"}},
            {"key": "http", "value": {"kvlistValue": {"values": [
                {"key": "method", "value": {"stringValue": "GET"}}]}}}]},
        {"severityText": "INFO", "body": {"intValue": "7"}},
        {"body": {"stringValue": ""}}])),
    "metric": orjson.dumps(otlp_document("metric", [{"name": "a.b", "unit": "s", "gauge": {"dataPoints": [{}]}},
                                                    {"name": "", "sum": {"dataPoints": []}}])),
    "trace": orjson.dumps(otlp_document("trace", [{"name": "ab", "traceId": "0af7651916cd43dd8448eb211c80319c",
                                                   "spanId": "b7ad6b7169203331", "kind": 2}, {"name": "x"}])),
}


@FUZZ
@given(text=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
def test_arbitrary_policy_files_are_read_or_refused(text: bytes) -> None:
    try:
        loaded = load_document(parse_document(text, "fuzz.yaml"), "fuzz.yaml")
    except PolicyFileError as exc:
        assert str(exc).startswith("fuzz.yaml")
        return
    compile_policies(loaded.policies, load_errors=loaded.errors)


@pytest.fixture
def quiet_errors(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.ERROR)
    return caplog


def test_hand_written_policies_compile_or_report_and_evaluate(quiet_errors: pytest.LogCaptureFixture) -> None:
    @FUZZ
    @given(policies=st.lists(policy, max_size=4))
    def run(policies: list[Any]) -> None:
        try:
            loaded = load_document({"policies": policies})
        except PolicyFileError as exc:  # the one per-document rule a list of generated policies can break
            assert "duplicate policy id" in str(exc)
            return
        assert len(loaded.policies) + len(loaded.errors) == len(policies)
        snapshot = compile_policies(loaded.policies, load_errors=loaded.errors)
        snapshot = Snapshot.from_bytes(snapshot.to_bytes())  # what workers read from shared memory
        engine = Engine(snapshot)
        for signal, body in BATCHES.items():
            quiet_errors.clear()
            result = evaluate(engine, signal, body, "application/json")
            assert not quiet_errors.records, f"evaluation fell back to fail-open: {quiet_errors.records[0].message}"
            if not snapshot.targets(signal):
                assert result.body is body and not result.outcome.changed
            assert 0 <= result.outcome.kept <= result.outcome.total

    run()


def test_invalid_regexes_are_policy_errors_not_exceptions() -> None:
    @FUZZ
    @given(pattern=regex_text)
    def run(pattern: str) -> None:
        loaded = load_document({"policies": [{"id": "p", "name": "p", "log": {
            "match": [{"log_field": "body", "regex": pattern}], "keep": "none"}}]})
        snapshot = compile_policies(loaded.policies)
        result = evaluate(Engine(snapshot), "log", BATCHES["log"], "application/json")
        if snapshot.errors():
            assert result.body is BATCHES["log"], "an invalid policy must be inert"

    run()
