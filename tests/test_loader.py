"""Policy document reader: the leniencies of docs/policies.md §1 and the skip-on-decode-error rule of §8."""

from __future__ import annotations

import random

import orjson
import pytest

from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from edge.policy.compiler import compile_policies
from edge.policy.loader import PolicyFileError, load_document, load_file, parse_document
from edge.proto.tero.policy.v1 import policy_pb2 as pb


def _one(policy: dict) -> pb.Policy:
    result = load_document({"policies": [policy]})
    assert result.errors == []
    assert len(result.policies) == 1
    return result.policies[0]


def _log_policy(matcher: dict, **target) -> dict:
    return {"id": "p", "name": "p", "log": {"match": [matcher], "keep": "none", **target}}


def _logs(*bodies: str) -> bytes:
    records = [{"body": {"stringValue": b}, "severityText": "INFO"} for b in bodies]
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})


def _kept_bodies(policies: list[dict], *bodies: str) -> list[str]:
    loaded = load_document({"policies": policies})
    engine = Engine(compile_policies(loaded.policies), rng=random.Random(1))
    out = orjson.loads(otlp_body.evaluate(engine, "log", _logs(*bodies), "application/json").body)
    return [
        r["body"]["stringValue"]
        for rl in out.get("resourceLogs", [])
        for sl in rl["scopeLogs"]
        for r in sl["logRecords"]
    ]


# ── key spellings ──────────────────────────────────────────────────────────


SNAKE = {
    "id": "full",
    "name": "Full",
    "enabled": True,
    "log": {
        "match": [{"log_attribute": {"path": ["http", "method"]}, "starts_with": "GE", "case_insensitive": True}],
        "keep": "50%",
        "sample_key": {"log_field": "LOG_FIELD_TRACE_ID"},
        "transform": {
            "rename": [{"from_log_attribute": {"path": ["old"]}, "to": "new", "upsert": True}],
            "redact": [{"log_attribute": {"path": ["secret"]}, "regex": "[0-9]+", "replacement": "#"}],
        },
    },
}
CAMEL = {
    "id": "full",
    "name": "Full",
    "enabled": True,
    "log": {
        "match": [{"logAttribute": {"path": ["http", "method"]}, "startsWith": "GE", "caseInsensitive": True}],
        "keep": "50%",
        "sampleKey": {"logField": "LOG_FIELD_TRACE_ID"},
        "transform": {
            "rename": [{"fromLogAttribute": {"path": ["old"]}, "to": "new", "upsert": True}],
            "redact": [{"logAttribute": {"path": ["secret"]}, "regex": "[0-9]+", "replacement": "#"}],
        },
    },
}


def test_snake_case_and_lower_camel_case_keys_decode_identically():
    """§1: readers accept proto-JSON in both snake_case and lowerCamelCase keys."""
    snake, camel = _one(SNAKE), _one(CAMEL)
    assert snake == camel
    assert snake.log.match[0].starts_with == "GE"
    assert snake.log.match[0].case_insensitive is True
    assert list(snake.log.match[0].log_attribute.path) == ["http", "method"]
    assert snake.log.sample_key.log_field == pb.LOG_FIELD_TRACE_ID
    assert snake.log.transform.rename[0].to == "new"
    assert snake.log.transform.rename[0].upsert is True
    assert snake.log.transform.redact[0].regex == "[0-9]+"


def test_camel_case_trace_sampling_keys():
    """§1: lowerCamelCase keys inside TraceSamplingConfig (samplingPrecision, hashSeed, failClosed)."""
    policy = _one(
        {
            "id": "t",
            "trace": {
                "match": [{"spanKind": "server"}],
                "keep": {"percentage": 25, "samplingPrecision": 6, "hashSeed": 7, "failClosed": False},
            },
        }
    )
    keep = policy.trace.keep
    assert (keep.percentage, keep.sampling_precision, keep.hash_seed, keep.fail_closed) == (25, 6, 7, False)
    assert keep.HasField("fail_closed")


def test_camel_case_policy_blocks_matching_records():
    """A camelCase policy is not only decoded but effective in the engine."""
    policy = {
        "id": "c",
        "log": {"match": [{"logField": "LOG_FIELD_BODY", "startsWith": "drop"}], "keep": "none"},
    }
    assert _kept_bodies([policy], "drop me", "keep me") == ["keep me"]


# ── enum spellings ─────────────────────────────────────────────────────────


@pytest.mark.parametrize("spelling", ["LOG_FIELD_SEVERITY_TEXT", "severity_text", "SEVERITY_TEXT", 2, "2"])
def test_log_field_enum_spellings(spelling):
    """§1: enum values as full names, short lowercase names or numbers (log_field)."""
    policy = _one(_log_policy({"log_field": spelling, "exact": "INFO"}))
    assert policy.log.match[0].log_field == pb.LOG_FIELD_SEVERITY_TEXT


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("METRIC_TYPE_EXPONENTIAL_HISTOGRAM", pb.METRIC_TYPE_EXPONENTIAL_HISTOGRAM),
        ("exponential_histogram", pb.METRIC_TYPE_EXPONENTIAL_HISTOGRAM),
        ("summary", pb.METRIC_TYPE_SUMMARY),
        (1, pb.METRIC_TYPE_GAUGE),
    ],
)
def test_metric_type_enum_spellings(spelling, expected):
    """§1: metric_type accepts full, short and numeric spellings."""
    policy = _one({"id": "m", "metric": {"match": [{"metric_type": spelling}], "keep": False}})
    assert policy.metric.match[0].metric_type == expected


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("SPAN_KIND_CONSUMER", pb.SPAN_KIND_CONSUMER),
        ("consumer", pb.SPAN_KIND_CONSUMER),
        ("server", pb.SPAN_KIND_SERVER),
        (3, pb.SPAN_KIND_CLIENT),
    ],
)
def test_span_kind_enum_spellings(spelling, expected):
    """§1: span_kind accepts full, short and numeric spellings."""
    policy = _one({"id": "t", "trace": {"match": [{"span_kind": spelling}], "keep": {"percentage": 0}}})
    assert policy.trace.match[0].span_kind == expected


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("SPAN_STATUS_CODE_ERROR", pb.SPAN_STATUS_CODE_ERROR),
        ("error", pb.SPAN_STATUS_CODE_ERROR),
        ("ok", pb.SPAN_STATUS_CODE_OK),
        (2, pb.SPAN_STATUS_CODE_ERROR),
    ],
)
def test_span_status_enum_spellings(spelling, expected):
    """§1: span_status accepts full, short and numeric spellings."""
    policy = _one({"id": "t", "trace": {"match": [{"span_status": spelling}], "keep": {"percentage": 0}}})
    assert policy.trace.match[0].span_status == expected


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("proportional", pb.SAMPLING_MODE_PROPORTIONAL),
        ("SAMPLING_MODE_PROPORTIONAL", pb.SAMPLING_MODE_PROPORTIONAL),
        ("equalizing", pb.SAMPLING_MODE_EQUALIZING),
        ("hash_seed", pb.SAMPLING_MODE_HASH_SEED),
        (3, pb.SAMPLING_MODE_EQUALIZING),
    ],
)
def test_sampling_mode_spellings(spelling, expected):
    """§1: sampling mode `"proportional"` or `"SAMPLING_MODE_PROPORTIONAL"` (and numbers)."""
    policy = _one(
        {
            "id": "t",
            "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 10, "mode": spelling}},
        }
    )
    assert policy.trace.keep.mode == expected


@pytest.mark.parametrize(
    "spelling,expected",
    [
        ("EXTENSION_MODE_DROPPED", pb.EXTENSION_MODE_DROPPED),
        ("dropped", pb.EXTENSION_MODE_DROPPED),
        ("all", pb.EXTENSION_MODE_ALL),
        (1, pb.EXTENSION_MODE_KEPT),
    ],
)
def test_extension_mode_spellings(spelling, expected):
    """§1/§9: extension mode accepts full, short and numeric spellings; configs may be inline objects."""
    policy = _one(
        {
            **_log_policy({"log_field": "body", "exact": "x"}),
            "extensions": [{"type": "com.usetero/s3-dump", "mode": spelling, "config": {"bucket": "b"}}],
        }
    )
    assert policy.extensions[0].mode == expected
    assert orjson.loads(policy.extensions[0].config) == {"bucket": "b"}


# ── attribute paths ────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "path,expected",
    [
        ("user_id", ["user_id"]),
        (["http", "method"], ["http", "method"]),
        ({"path": ["http", "method"]}, ["http", "method"]),
        ({"path": ["user_id"]}, ["user_id"]),
    ],
)
def test_attribute_path_shorthands(path, expected):
    """§1: attribute path as `"user_id"`, `["http","method"]` or `{"path": [...]}`."""
    policy = _one(_log_policy({"log_attribute": path, "exists": True}))
    assert list(policy.log.match[0].log_attribute.path) == expected


def test_attribute_path_shorthands_in_transforms_and_sample_key():
    """The shorthands apply to every AttributePath: transforms, rename sources and sample keys."""
    policy = _one(
        {
            "id": "p",
            "log": {
                "match": [{"resource_attribute": "service.name", "exact": "api"}],
                "keep": "10%",
                "sample_key": {"log_attribute": ["user", "id"]},
                "transform": {
                    "remove": [{"scope_attribute": "x"}],
                    "rename": [{"from_resource_attribute": ["a", "b"], "to": "c"}],
                    "add": [{"log_attribute": {"path": ["k"]}, "value": "v"}],
                },
            },
        }
    )
    assert list(policy.log.match[0].resource_attribute.path) == ["service.name"]
    assert list(policy.log.sample_key.log_attribute.path) == ["user", "id"]
    assert list(policy.log.transform.remove[0].scope_attribute.path) == ["x"]
    assert list(policy.log.transform.rename[0].from_resource_attribute.path) == ["a", "b"]
    assert list(policy.log.transform.add[0].log_attribute.path) == ["k"]


# ── typed values ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "literal,which,expected",
    [
        (200, "int_value", 200),
        (-7, "int_value", -7),
        (0.5, "double_value", 0.5),
        (True, "bool_value", True),
        (False, "bool_value", False),
        ("checkout", "string_value", "checkout"),
        ({"int_value": 200}, "int_value", 200),
        ({"intValue": "200"}, "int_value", 200),
        ({"double_value": 1.25}, "double_value", 1.25),
        ({"string_value": "x"}, "string_value", "x"),
        ({"hex_value": "0aF1"}, "hex_value", "0aF1"),
        ({"bool_value": True}, "bool_value", True),
    ],
)
def test_typed_value_shorthands_for_equals(literal, which, expected):
    """§1: typed value as a bare literal (`200`, `0.5`, `true`, `"checkout"`) or `{"int_value": 200}`."""
    value = _one(_log_policy({"log_attribute": "a", "equals": literal})).log.match[0].equals
    assert value.WhichOneof("value") == which
    assert getattr(value, which) == expected


@pytest.mark.parametrize("op", ["gt", "gte", "lt", "lte"])
@pytest.mark.parametrize(
    "literal,which,expected",
    [
        (5, "int_value", 5),
        (2.5, "double_value", 2.5),
        ({"int_value": 9}, "int_value", 9),
        ({"doubleValue": 0.25}, "double_value", 0.25),
    ],
)
def test_numeric_shorthands_for_comparisons(op, literal, which, expected):
    """§1: gt/gte/lt/lte accept bare numbers (int or double) and the explicit object form."""
    number = getattr(_one(_log_policy({"log_attribute": "n", op: literal})).log.match[0], op)
    assert number.WhichOneof("value") == which
    assert getattr(number, which) == expected


def test_bare_literal_equals_is_effective():
    """A bare int literal in equals matches an intValue attribute, not the string "200"."""
    doc = {
        "resourceLogs": [
            {
                "scopeLogs": [
                    {
                        "logRecords": [
                            {
                                "body": {"stringValue": "int"},
                                "attributes": [{"key": "code", "value": {"intValue": "200"}}],
                            },
                            {
                                "body": {"stringValue": "str"},
                                "attributes": [{"key": "code", "value": {"stringValue": "200"}}],
                            },
                        ]
                    }
                ]
            }
        ]
    }
    loaded = load_document({"policies": [_log_policy({"log_attribute": "code", "equals": 200})]})
    engine = Engine(compile_policies(loaded.policies))
    out = orjson.loads(otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json").body)
    kept = [r["body"]["stringValue"] for r in out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]]
    assert kept == ["str"]


# ── YAML ───────────────────────────────────────────────────────────────────


YAML_TEXT = """\
policies:
  - id: drop-debug
    name: Drop debug
    log:
      match:
        - log_field: severity_text
          exact: DEBUG
      keep: none
  - id: tag
    name: Tag
    log:
      match:
        - logAttribute: [http, status]
          equals: 500
      keep: all
      transform:
        add:
          - log_attribute: alert
            value: "yes"
  - id: traces
    trace:
      match:
        - span_kind: server
      keep:
        percentage: 12.5
        mode: proportional
"""


def test_yaml_policy_file(tmp_path):
    """§1: YAML policy files with the same structure are accepted."""
    path = tmp_path / "policies.yaml"
    path.write_text(YAML_TEXT)
    result = load_file(path)
    assert result.errors == []
    by_id = {p.id: p for p in result.policies}
    assert set(by_id) == {"drop-debug", "tag", "traces"}
    assert by_id["drop-debug"].log.match[0].log_field == pb.LOG_FIELD_SEVERITY_TEXT
    assert by_id["drop-debug"].enabled is True
    assert list(by_id["tag"].log.match[0].log_attribute.path) == ["http", "status"]
    assert by_id["tag"].log.match[0].equals.int_value == 500
    assert by_id["tag"].log.transform.add[0].value == "yes"
    assert by_id["traces"].trace.keep.mode == pb.SAMPLING_MODE_PROPORTIONAL
    assert by_id["traces"].trace.keep.percentage == pytest.approx(12.5)
    assert compile_policies(result.policies).errors() == {}


def test_yaml_and_json_files_decode_identically(tmp_path):
    """The same document written as YAML and as JSON gives the same policies."""
    import yaml

    doc = yaml.safe_load(YAML_TEXT)
    (tmp_path / "p.json").write_bytes(orjson.dumps(doc))
    (tmp_path / "p.yml").write_text(YAML_TEXT)
    assert load_file(tmp_path / "p.json").policies == load_file(tmp_path / "p.yml").policies


# ── decode errors ──────────────────────────────────────────────────────────


def test_undecodable_policy_is_skipped_and_named():
    """§8: a policy that fails to decode is skipped, the others load, the error names it."""
    result = load_document(
        {
            "policies": [
                _log_policy({"log_field": "body", "exact": "a"}) | {"id": "good-1"},
                {"id": "broken", "log": {"match": "not-a-list", "keep": "none"}},
                _log_policy({"log_field": "body", "exact": "b"}) | {"id": "good-2"},
            ]
        }
    )
    assert [p.id for p in result.policies] == ["good-1", "good-2"]
    assert len(result.errors) == 1
    assert "broken" in result.errors[0]


def test_non_object_policy_is_skipped_with_its_position():
    """A policy entry that is not an object is reported by position; the others still load."""
    result = load_document({"policies": [_log_policy({"log_field": "body", "exact": "a"}), "oops", 3]})
    assert [p.id for p in result.policies] == ["p"]
    assert len(result.errors) == 2
    assert "#1" in result.errors[0] and "#2" in result.errors[1]


def test_wrong_value_type_is_a_decode_error():
    """A string where a number is required makes that policy undecodable, not the file."""
    result = load_document(
        {
            "policies": [
                {
                    "id": "bad-pct",
                    "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": "lots"}},
                },
                {"id": "ok", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 5}}},
            ]
        }
    )
    assert [p.id for p in result.policies] == ["ok"]
    assert len(result.errors) == 1 and "bad-pct" in result.errors[0]


def test_skipped_policy_does_not_stop_others_from_working():
    """Policies after an undecodable one are evaluated normally."""
    policies = [
        {"id": "a-broken", "log": {"match": 17}},
        {"id": "b-drop", "log": {"match": [{"log_field": "body", "exact": "x"}], "keep": "none"}},
    ]
    assert _kept_bodies(policies, "x", "y") == ["y"]


# ── enabled ────────────────────────────────────────────────────────────────


def test_enabled_defaults_to_true():
    """§1: `enabled` defaults to true (proto3 would default it to false)."""
    assert _one(_log_policy({"log_field": "body", "exact": "x"})).enabled is True
    assert _one(_log_policy({"log_field": "body", "exact": "x"}) | {"enabled": False}).enabled is False


def test_default_enabled_policy_applies_and_disabled_does_not():
    """§1: an omitted `enabled` is active; `enabled: false` makes the policy not exist."""
    assert _kept_bodies([_log_policy({"log_field": "body", "exact": "x"})], "x", "y") == ["y"]
    disabled = _log_policy({"log_field": "body", "exact": "x"}) | {"enabled": False}
    assert _kept_bodies([disabled], "x", "y") == ["x", "y"]


# ── whole-document errors ──────────────────────────────────────────────────


@pytest.mark.parametrize("doc", [5, "text", {"policies": 5}, {"policies": {"id": "a"}}])
def test_bad_document_raises_policy_file_error(doc):
    """A document that is not `{"policies": [...]}` raises PolicyFileError."""
    with pytest.raises(PolicyFileError):
        load_document(doc)


def test_bare_list_is_accepted():
    """A non-empty bare list of policies loads (docs/policies.md §1)."""
    assert [p.id for p in load_document([_log_policy({"log_field": "body", "exact": "x"})]).policies] == ["p"]


@pytest.mark.parametrize("doc", [None, {}, []])
def test_empty_document_is_refused(doc):
    """An empty document is not "no policies" (that is `{"policies": []}`): it is almost always a mistake."""
    with pytest.raises(PolicyFileError):
        load_document(doc)


@pytest.mark.parametrize("text", [b"{: [", b"[1, 2", b"policies: [\n  - {id: x\n"])
def test_unparseable_text_raises_policy_file_error(text):
    """Neither JSON nor YAML -> PolicyFileError naming the source."""
    with pytest.raises(PolicyFileError, match="src.json"):
        parse_document(text, "src.json")


def test_load_file_errors(tmp_path):
    """A missing file, a directory and a non-policy document all raise PolicyFileError."""
    with pytest.raises(PolicyFileError):
        load_file(tmp_path / "missing.json")
    with pytest.raises(PolicyFileError):
        load_file(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(PolicyFileError, match="bad.json"):
        load_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(PolicyFileError):
        load_file(scalar)
