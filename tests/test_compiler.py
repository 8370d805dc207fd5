"""Compilation: the validation errors of docs/policies.md §8, inert invalid policies, regex routing, snapshots."""

from __future__ import annotations

import random
import subprocess
import sys

import orjson
import pytest
import re2

from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from edge.policy.snapshot import Snapshot


def _compile(*policies: dict):
    result = load_document({"policies": list(policies)})
    assert result.errors == [], result.errors
    return compile_policies(result.policies)


def _errors(policy: dict) -> list[str]:
    return _compile(policy).errors().get(policy["id"], [])


def _log(match: list[dict], keep: str = "none", **target) -> dict:
    return {"id": "p", "name": "p", "log": {"match": match, "keep": keep, **target}}


def _logs_doc(bodies: list[str | None]) -> dict:
    records = []
    for i, body in enumerate(bodies):
        record: dict = {"severityText": "INFO", "attributes": [{"key": "i", "value": {"intValue": str(i)}}]}
        if body is not None:
            record["body"] = {"stringValue": body}
        records.append(record)
    return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": records}]}]}


def _kept_indices(snapshot, bodies: list[str | None]) -> list[int]:
    engine = Engine(snapshot, rng=random.Random(3))
    out = orjson.loads(otlp_body.evaluate(engine, "log", orjson.dumps(_logs_doc(bodies)), "application/json").body)
    return [
        int(r["attributes"][0]["value"]["intValue"])
        for rl in out.get("resourceLogs", [])
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
    ]


# ── single validation errors ───────────────────────────────────────────────


def test_invalid_regex_message_format():
    """§8: `log: match[0]: invalid regex "([bad"` (the compiler may append `: reason`)."""
    errors = _errors(_log([{"log_field": "body", "regex": "([bad"}]))
    assert len(errors) == 1
    assert errors[0].startswith('log: match[0]: invalid regex "([bad"')


@pytest.mark.parametrize(
    "signal,policy",
    [
        (
            "metric",
            {"id": "p", "metric": {"match": [{"metric_field": "name", "regex": "a(b"}], "keep": False}},
        ),
        (
            "trace",
            {
                "id": "p",
                "trace": {"match": [{"trace_field": "name", "regex": "a(b"}], "keep": {"percentage": 50}},
            },
        ),
    ],
)
def test_invalid_regex_on_metric_and_trace(signal, policy):
    """§8: the signal prefix names the policy's target."""
    errors = _errors(policy)
    assert len(errors) == 1
    assert errors[0].startswith(f'{signal}: match[0]: invalid regex "a(b"')


def test_invalid_regex_in_second_matcher_names_its_index():
    """§8: the location names the failing matcher's position."""
    errors = _errors(_log([{"log_field": "body", "exact": "ok"}, {"log_field": "body", "regex": "x{2,1}"}]))
    assert len(errors) == 1
    assert errors[0].startswith('log: match[1]: invalid regex "x{2,1}"')


def test_hyperscan_only_syntax_is_rejected_as_re2():
    """§3/§8: regexes are RE2 syntax: `\\Z` and backreferences (not RE2) are invalid."""
    for pattern in (r"foo\Z", r"(a)\1", r"(?=a)"):
        errors = _errors(_log([{"log_field": "body", "regex": pattern}]))
        assert len(errors) == 1 and errors[0].startswith(f'log: match[0]: invalid regex "{pattern}"')


def test_no_field_selector():
    """§8: a matcher without a field selector is invalid."""
    errors = _errors(_log([{"regex": "x"}]))
    assert len(errors) == 1
    assert errors[0].startswith("log: match[0]: ") and "selector" in errors[0]


@pytest.mark.parametrize(
    "matcher",
    [
        {"log_field": "LOG_FIELD_UNSPECIFIED", "exact": "x"},
        {"log_field": 0, "exact": "x"},
    ],
)
def test_unspecified_log_field(matcher):
    """§8: an UNSPECIFIED enum is invalid."""
    errors = _errors(_log([matcher]))
    assert len(errors) == 1
    assert errors[0].startswith("log: match[0]: ") and "unspecified" in errors[0].lower()


@pytest.mark.parametrize(
    "policy",
    [
        {"id": "p", "metric": {"match": [{"metric_type": "METRIC_TYPE_UNSPECIFIED"}], "keep": False}},
        {"id": "p", "metric": {"match": [{"metric_field": 0, "exact": "x"}], "keep": False}},
        {"id": "p", "metric": {"match": [{"aggregation_temporality": 0}], "keep": False}},
        {"id": "p", "trace": {"match": [{"span_kind": "SPAN_KIND_UNSPECIFIED"}], "keep": {"percentage": 1}}},
        {"id": "p", "trace": {"match": [{"trace_field": 0, "exact": "x"}], "keep": {"percentage": 1}}},
    ],
)
def test_unspecified_enums_on_metrics_and_traces(policy):
    """§8: UNSPECIFIED selector enums are invalid for every signal."""
    signal = "metric" if "metric" in policy else "trace"
    errors = _errors(policy)
    assert len(errors) == 1
    assert errors[0].startswith(f"{signal}: match[0]: ") and "unspecified" in errors[0].lower()


@pytest.mark.parametrize("path", [[], {"path": []}])
def test_empty_attribute_path(path):
    """§8: `log: match[0]: attribute has empty path`."""
    assert _errors(_log([{"log_attribute": path, "exact": "x"}])) == ["log: match[0]: attribute has empty path"]


def test_empty_attribute_path_on_resource_and_datapoint():
    """§8: the empty-path rule holds for every attribute selector."""
    assert _errors(_log([{"resource_attribute": [], "exists": True}])) == ["log: match[0]: attribute has empty path"]
    assert _errors({"id": "p", "metric": {"match": [{"datapoint_attribute": [], "exists": True}], "keep": False}}) == [
        "metric: match[0]: attribute has empty path"
    ]


def test_no_match_condition():
    """§8: a matcher with a selector but no condition is invalid."""
    errors = _errors(_log([{"log_attribute": "a"}]))
    assert len(errors) == 1
    assert errors[0].startswith("log: match[0]: ") and "condition" in errors[0]


@pytest.mark.parametrize("hex_text", ["zz", "abc", "0x12", "g0"])
def test_invalid_hex(hex_text):
    """§8: bad hex in equals.hex_value is a compile error."""
    errors = _errors(_log([{"log_field": "trace_id", "equals": {"hex_value": hex_text}}]))
    assert len(errors) == 1
    assert errors[0].startswith("log: match[0]: ") and "hex" in errors[0] and hex_text in errors[0]


@pytest.mark.parametrize(
    "keep", ["1.5/s", "0/s", "abc", "150%", "-5%", "10/0s", "5/h", "5/2h", "5/1.5m", "%", "ten/s", "100.5%"]
)
def test_malformed_keep(keep):
    """§4/§8: malformed keeps -> `log: keep: ...` naming the keep."""
    errors = _errors(_log([{"log_field": "body", "exact": "x"}], keep=keep))
    assert len(errors) == 1
    assert errors[0].startswith("log: keep: ") and keep in errors[0]


@pytest.mark.parametrize("keep", ["all", "none", "0%", "100%", "12.5%", "1/s", "10/m", "3/5s", "2/10m", ""])
def test_wellformed_keep(keep):
    """§4: the documented keep forms compile (empty means the default, "all")."""
    assert _errors(_log([{"log_field": "body", "exact": "x"}], keep=keep)) == []


@pytest.mark.parametrize(
    "keep,needle",
    [
        ({"percentage": 150}, "percentage"),
        ({"percentage": -1}, "percentage"),
        ({"percentage": 50, "mode": 7}, "mode"),
        ({"percentage": 50, "sampling_precision": 0}, "precision"),
        ({"percentage": 50, "sampling_precision": 15}, "precision"),
    ],
)
def test_trace_keep_errors(keep, needle):
    """§2/§8: trace percentage out of 0..100, unknown mode, precision out of 1..14."""
    errors = _errors({"id": "p", "trace": {"match": [{"span_kind": "server"}], "keep": keep}})
    assert len(errors) == 1
    assert errors[0].startswith("trace: keep: ") and needle in errors[0]


@pytest.mark.parametrize(
    "keep",
    [
        {"percentage": 0},
        {"percentage": 100},
        {"percentage": 50, "sampling_precision": 1},
        {"percentage": 50, "sampling_precision": 14},
        {"percentage": 5, "mode": "equalizing"},
    ],
)
def test_trace_keep_boundaries_are_valid(keep):
    """§2: 0 and 100 percent, precision 1 and 14 are in range."""
    assert _errors({"id": "p", "trace": {"match": [{"span_kind": "server"}], "keep": keep}}) == []


def test_rename_with_empty_to():
    """§8: rename with an empty `to` is invalid."""
    errors = _errors(
        _log(
            [{"log_field": "body", "exact": "x"}],
            keep="all",
            transform={"rename": [{"from_log_attribute": "a", "to": ""}]},
        )
    )
    assert len(errors) == 1
    assert errors[0].startswith("log: transform: rename[0]: ")


@pytest.mark.parametrize(
    "transform,prefix",
    [
        ({"remove": [{}]}, "log: transform: remove[0]: "),
        ({"remove": [{"log_attribute": "ok"}, {"log_attribute": []}]}, "log: transform: remove[1]: "),
        ({"redact": [{"log_field": 0}]}, "log: transform: redact[0]: "),
        ({"rename": [{"to": "x"}]}, "log: transform: rename[0]: "),
        ({"add": [{"scope_attribute": {"path": []}, "value": "v"}]}, "log: transform: add[0]: "),
    ],
)
def test_transform_with_invalid_selector(transform, prefix):
    """§8: a transform with an invalid selector is a compile error at its location."""
    errors = _errors(_log([{"log_field": "body", "exact": "x"}], keep="all", transform=transform))
    assert len(errors) == 1
    assert errors[0].startswith(prefix)


def test_invalid_redact_regex_location():
    """§8: `log: transform: redact[2]: ...` for the third redact's bad regex."""
    errors = _errors(
        _log(
            [{"log_field": "body", "exact": "x"}],
            keep="all",
            transform={
                "redact": [
                    {"log_attribute": "a"},
                    {"log_attribute": "b", "regex": "ok"},
                    {"log_attribute": "c", "regex": "(["},
                ]
            },
        )
    )
    assert len(errors) == 1
    assert errors[0].startswith('log: transform: redact[2]: invalid regex "(["')


def test_missing_matchers_is_an_error():
    """§2: a target needs at least one matcher."""
    errors = _errors(_log([]))
    assert len(errors) == 1 and errors[0].startswith("log: ")


def test_multiple_errors_collected_in_one_policy():
    """§8: every error of a policy is collected, in document order."""
    policy = _log(
        [
            {"log_field": "body", "regex": "(["},
            {"log_attribute": [], "exact": "x"},
            {"log_field": "severity_text"},
            {"log_field": "trace_id", "equals": {"hex_value": "xyz"}},
        ],
        keep="1.5/s",
        transform={
            "rename": [{"from_log_attribute": "a", "to": ""}],
            "redact": [{"log_field": "body", "regex": "a)"}],
        },
    )
    errors = _errors(policy)
    assert len(errors) == 7, errors
    assert errors[0].startswith('log: match[0]: invalid regex "(["')
    assert errors[1] == "log: match[1]: attribute has empty path"
    assert errors[2].startswith("log: match[2]: ")
    assert errors[3].startswith("log: match[3]: ")
    assert errors[4].startswith("log: keep: ") and "1.5/s" in errors[4]
    assert any(e.startswith('log: transform: redact[0]: invalid regex "a)"') for e in errors[5:])
    assert any(e.startswith("log: transform: rename[0]: ") for e in errors[5:])


# ── invalid policies are inert ─────────────────────────────────────────────


def test_invalid_policies_are_inert_and_valid_ones_work():
    """§8: an invalid policy never matches and gets no stats; the valid ones are unaffected."""
    snapshot = _compile(
        {
            "id": "a-bad",
            "log": {
                "match": [{"log_field": "body", "exact": "x"}, {"log_field": "body", "regex": "(["}],
                "keep": "none",
            },
        },
        {"id": "b-bad-keep", "log": {"match": [{"log_field": "body", "exact": "y"}], "keep": "1.5/s"}},
        {"id": "c-good", "log": {"match": [{"log_field": "body", "exact": "z"}], "keep": "none"}},
        {
            "id": "d-bad-transform",
            "log": {
                "match": [{"log_field": "body", "exact": "x"}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": [], "value": "v"}]},
            },
        },
    )
    assert set(snapshot.errors()) == {"a-bad", "b-bad-keep", "d-bad-transform"}
    engine = Engine(snapshot)
    doc = _logs_doc(["x", "y", "z", "w"])
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    out = orjson.loads(evaluated.body)
    records = out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [r["body"]["stringValue"] for r in records] == ["x", "y", "w"]
    assert all(len(r["attributes"]) == 1 for r in records)  # the invalid add never ran
    stats = engine.stats.snapshot()
    assert set(stats) == {"c-good"}
    assert (stats["c-good"].hits, stats["c-good"].misses) == (1, 0)


def test_invalid_trace_and_metric_policies_are_inert():
    """§8: inert for every signal: an invalid 0% trace policy and keep=false metric policy drop nothing."""
    snapshot = _compile(
        {"id": "t", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 0, "mode": 9}}},
        {"id": "m", "metric": {"match": [{"metric_field": "name", "regex": "(("}], "keep": False}},
    )
    engine = Engine(snapshot)
    spans = {
        "resourceSpans": [
            {"scopeSpans": [{"spans": [{"name": "s", "kind": 2, "traceId": "0af7651916cd43dd8448eb211c80319c"}]}]}
        ]
    }
    metrics = {"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "((", "gauge": {"dataPoints": []}}]}]}]}
    for signal, doc in (("trace", spans), ("metric", metrics)):
        body = orjson.dumps(doc)
        evaluated = otlp_body.evaluate(engine, signal, body, "application/json")
        assert evaluated.body == body
        assert evaluated.outcome.kept == 1
    assert engine.stats.snapshot() == {}


# ── regex routing ──────────────────────────────────────────────────────────


BODIES = ["foo", "xfoo", "foox", "foo\nbar", "bar\nfoo", "", None, "foo", "a", "aaa", "b", "ab\n", "foo"]


@pytest.mark.parametrize(
    "pattern",
    [
        r"\Afoo",
        r"foo\z",
        r"\Afoo\z",
        r"(?m)^foo$",
        r"\Aa*\z",
        r"^foo",
        r"foo$",
        r"^foo$",
        "a*",
        "x*",
        "(|a)",
        "^",
        "$",
        r"\b",
        "a?",
        "(?:b|)+",
        r"\Aa",
        r"a\z",
    ],
)
def test_regex_routing_evaluates_like_re2(pattern):
    """§3: buffer anchors and empty-matching patterns give RE2 search semantics per record.

    The empty string and a missing body never match a string condition.
    """
    snapshot = _compile(_log([{"log_field": "body", "regex": pattern}]))
    assert snapshot.errors() == {}
    dropped = set(range(len(BODIES))) - set(_kept_indices(snapshot, BODIES))
    expected = {i for i, b in enumerate(BODIES) if b and re2.search(pattern, b) is not None}
    assert dropped == expected


def test_anchored_and_scanned_patterns_share_a_field():
    """Hyperscan-routed and RE2-routed conditions on one field each match their own records."""
    snapshot = _compile(
        {"id": "a", "log": {"match": [{"log_field": "body", "regex": r"\Afoo\z"}], "keep": "none"}},
        {"id": "b", "log": {"match": [{"log_field": "body", "contains": "bar"}], "keep": "none"}},
        {
            "id": "c",
            "log": {
                "match": [{"log_field": "body", "regex": "q*"}, {"log_field": "body", "ends_with": "z"}],
                "keep": "none",
            },
        },
    )
    bodies = ["foo", "bar", "foo!", "baz", "xyz", "foo", "zap"]
    assert _kept_indices(snapshot, bodies) == [2, 6]


# ── snapshots across processes ─────────────────────────────────────────────


SNAPSHOT_POLICIES = [
    {
        "id": "drop-debug",
        "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"},
    },
    {"id": "drop-anchored", "log": {"match": [{"log_field": "body", "regex": r"\Aping\z"}], "keep": "none"}},
    {
        "id": "redact",
        "log": {
            "match": [{"log_field": "body", "regex": r"card=\d+"}],
            "keep": "all",
            "transform": {
                "redact": [{"log_field": "body", "regex": r"card=(\d{4})\d+", "replacement": "card=$1****"}],
                "add": [{"log_attribute": "redacted", "value": "yes"}],
            },
        },
    },
    {
        "id": "sample",
        "log": {
            "match": [{"resource_attribute": "service.name", "starts_with": "pay"}],
            "keep": "50%",
            "sample_key": {"log_attribute": "user"},
        },
    },
    {"id": "broken", "log": {"match": [{"log_field": "body", "regex": "(["}], "keep": "none"}},
]


def _snapshot_batch() -> bytes:
    records = []
    for i in range(60):
        severity = "DEBUG" if i % 7 == 0 else "INFO"
        body = "ping" if i % 5 == 0 else f"order {i} card=4111111111111111" if i % 3 == 0 else f"msg {i}\nline"
        records.append(
            {
                "severityText": severity,
                "body": {"stringValue": body},
                "attributes": [{"key": "user", "value": {"stringValue": f"user-{i}"}}],
            }
        )
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "payments"}}]},
                "scopeLogs": [{"scope": {}, "logRecords": records[:30]}],
            },
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}}]},
                "scopeLogs": [{"scope": {}, "logRecords": records[30:]}],
            },
        ]
    }
    return orjson.dumps(doc)


_CHILD = """
import random, sys
from pathlib import Path
import orjson
from edge.formats.otlp import body as otlp_body
from edge.engine.engine import Engine
from edge.policy.snapshot import Snapshot
snap = Snapshot.from_bytes(Path(sys.argv[1]).read_bytes())
engine = Engine(snap, rng=random.Random(11))
out = otlp_body.evaluate(engine, "log", Path(sys.argv[2]).read_bytes(), "application/json")
stats = {k: [v.hits, v.misses, v.stages] for k, v in sorted(engine.stats.snapshot().items())}
Path(sys.argv[3]).write_bytes(out.body)
meta = {"stats": stats, "errors": snap.errors(), "kept": out.outcome.kept}
Path(sys.argv[4]).write_bytes(orjson.dumps(meta))
"""


def test_snapshot_round_trip_in_another_process(tmp_path):
    """A snapshot published as bytes evaluates identically in a fresh process (no recompilation)."""
    snapshot = _compile(*SNAPSHOT_POLICIES)
    batch = _snapshot_batch()
    engine = Engine(snapshot, rng=random.Random(11))
    local = otlp_body.evaluate(engine, "log", batch, "application/json")
    assert local.outcome.changed and 0 < local.outcome.kept < 60

    (tmp_path / "snap.bin").write_bytes(snapshot.to_bytes())
    (tmp_path / "in.json").write_bytes(batch)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _CHILD,
            str(tmp_path / "snap.bin"),
            str(tmp_path / "in.json"),
            str(tmp_path / "out.json"),
            str(tmp_path / "meta.json"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.json").read_bytes() == local.body
    meta = orjson.loads((tmp_path / "meta.json").read_bytes())
    assert meta["kept"] == local.outcome.kept
    assert meta["errors"] == snapshot.errors()
    expected_stats = {k: [v.hits, v.misses, v.stages] for k, v in sorted(engine.stats.snapshot().items())}
    assert meta["stats"] == expected_stats


def test_snapshot_from_bytes_in_same_process_is_equivalent():
    """from_bytes(to_bytes()) keeps policies and errors and evaluates the same."""
    snapshot = _compile(*SNAPSHOT_POLICIES)
    copy = Snapshot.from_bytes(snapshot.to_bytes())
    assert [p.id for p in copy.policies] == [p.id for p in snapshot.policies]
    assert copy.errors() == snapshot.errors()
    batch = _snapshot_batch()
    a = otlp_body.evaluate(Engine(snapshot, rng=random.Random(2)), "log", batch, "application/json")
    b = otlp_body.evaluate(Engine(copy, rng=random.Random(2)), "log", batch, "application/json")
    assert a.body == b.body


def test_snapshot_from_garbage_bytes_raises():
    """Bytes that are not a snapshot raise a ValueError subclass, never load silently."""
    with pytest.raises(ValueError):
        Snapshot.from_bytes(b"not a snapshot")


@pytest.mark.parametrize("mode", ["bogus", "SAMPLING_MODE_RANDOM"])
def test_unknown_sampling_mode_name_is_rejected(mode):
    """§8: an unknown trace sampling mode makes the policy invalid (or undecodable), never active."""
    loaded = load_document(
        {
            "policies": [
                {"id": "t", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 50, "mode": mode}}}
            ]
        }
    )
    snapshot = compile_policies(loaded.policies)
    assert loaded.errors or "t" in snapshot.errors()
    assert not any(p.id == "t" for p in snapshot.plan("trace").policies)
