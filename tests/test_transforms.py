"""Log transforms (docs/policies.md §5): remove, redact, rename, add; templates; ordering; stage statistics."""

from __future__ import annotations

import orjson
import pytest

from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from tests.engine_helpers import clean_engine


def S(text: str) -> dict:
    return {"stringValue": text}


def kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def I(number: int) -> dict:  # noqa: E743 - reads like the OTLP type
    return {"intValue": str(number)}


def _record(**extra) -> dict:
    record = {
        "severityText": "INFO",
        "body": S("user=alice card=4111111111111111 id=42"),
        "attributes": [
            kv("user", S("alice")),
            kv("count", I(7)),
            kv("http", {"kvlistValue": {"values": [kv("method", S("GET")), kv("url", S("/a?token=abc"))]}}),
        ],
    }
    record.update(extra)
    return record


def _doc(records: list[dict]) -> dict:
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": [kv("service.name", S("api")), kv("host", S("h1"))]},
                "scopeLogs": [{"scope": {"name": "lib", "attributes": [kv("tier", S("gold"))]}, "logRecords": records}],
            }
        ]
    }


def _policy(transform: dict, pid: str = "t", matcher: dict | None = None) -> dict:
    matcher = matcher or {"log_field": "severity_text", "exists": True}
    return {"id": pid, "name": pid, "log": {"match": [matcher], "keep": "all", "transform": transform}}


def _engine(policies: list[dict]) -> Engine:
    return clean_engine(policies)


def _apply(policies: list[dict], records: list[dict] | None = None) -> tuple[dict, Engine, bytes, bytes]:
    engine = _engine(policies)
    body = orjson.dumps(_doc(records if records is not None else [_record()]))
    out = otlp_body.evaluate(engine, "log", body, "application/json").body
    return orjson.loads(out), engine, body, out


def _rec(out: dict, i: int = 0) -> dict:
    return out["resourceLogs"][0]["scopeLogs"][0]["logRecords"][i]


def _attrs(container: dict) -> dict:
    return {a["key"]: a["value"] for a in container.get("attributes", [])}


def _resource(out: dict) -> dict:
    return _attrs(out["resourceLogs"][0]["resource"])


def _scope(out: dict) -> dict:
    return _attrs(out["resourceLogs"][0]["scopeLogs"][0]["scope"])


def _nested(out: dict, i: int = 0) -> dict:
    return {a["key"]: a["value"] for a in _attrs(_rec(out, i))["http"]["kvlistValue"]["values"]}


def _stages(engine: Engine, pid: str = "t") -> dict[str, list[int]]:
    return engine.stats.snapshot()[pid].stages


# ── remove ─────────────────────────────────────────────────────────────────


def test_remove_body_and_severity():
    """§5: remove deletes the field."""
    out, engine, _, _ = _apply([_policy({"remove": [{"log_field": "body"}, {"log_field": "severity_text"}]})])
    assert "body" not in _rec(out) and "severityText" not in _rec(out)
    assert _stages(engine)["remove"] == [2, 0]


def test_remove_attributes_nested_resource_scope():
    """§5: remove works on log attributes (incl. nested), resource and scope attributes."""
    out, engine, _, _ = _apply(
        [
            _policy(
                {
                    "remove": [
                        {"log_attribute": "user"},
                        {"log_attribute": ["http", "url"]},
                        {"resource_attribute": "host"},
                        {"scope_attribute": "tier"},
                    ]
                }
            )
        ]
    )
    assert set(_attrs(_rec(out))) == {"count", "http"}
    assert set(_nested(out)) == {"method"}
    assert set(_resource(out)) == {"service.name"}
    assert _scope(out) == {}
    assert _stages(engine)["remove"] == [4, 0]


def test_remove_absent_is_a_noop():
    """§5: remove of an absent field is a no-op (a stage miss) and the batch is forwarded unchanged."""
    out, engine, body, raw = _apply(
        [
            _policy(
                {
                    "remove": [
                        {"log_attribute": "missing"},
                        {"log_attribute": ["http", "nope"]},
                        {"log_attribute": ["user", "x"]},
                        {"log_field": "event_name"},
                        {"resource_attribute": "nope"},
                    ]
                }
            )
        ]
    )
    assert raw == body
    assert _stages(engine)["remove"] == [0, 5]


# ── redact ─────────────────────────────────────────────────────────────────


def test_redact_whole_values_default_replacement():
    """§5: redact without regex replaces the whole value with "[REDACTED]"."""
    out, engine, _, _ = _apply(
        [
            _policy(
                {
                    "redact": [
                        {"log_field": "body"},
                        {"log_attribute": "user"},
                        {"log_attribute": ["http", "url"]},
                        {"resource_attribute": "host"},
                        {"scope_attribute": "tier"},
                    ]
                }
            )
        ]
    )
    record = _rec(out)
    assert record["body"] == S("[REDACTED]")
    assert _attrs(record)["user"] == S("[REDACTED]")
    assert _nested(out)["url"] == S("[REDACTED]")
    assert _nested(out)["method"] == S("GET")
    assert _resource(out)["host"] == S("[REDACTED]")
    assert _scope(out)["tier"] == S("[REDACTED]")
    assert _stages(engine)["redact"] == [5, 0]


def test_redact_custom_replacement_and_non_string_value():
    """§5: a whole-value redact uses `replacement` and applies to any value type."""
    out, _, _, _ = _apply(
        [
            _policy(
                {
                    "redact": [
                        {"log_attribute": "count", "replacement": "***"},
                        {"log_field": "severity_text", "replacement": "SEV"},
                    ]
                }
            )
        ]
    )
    assert _attrs(_rec(out))["count"] == S("***")
    assert _rec(out)["severityText"] == "SEV"


def test_redact_absent_is_a_noop():
    """§5: redact of an absent field is a no-op."""
    out, engine, body, raw = _apply(
        [_policy({"redact": [{"log_attribute": "missing"}, {"log_attribute": "nope", "regex": "x"}]})]
    )
    assert raw == body
    assert _stages(engine)["redact"] == [0, 2]


@pytest.mark.parametrize(
    "regex,replacement,expected",
    [
        (r"card=\d+", "card=XXX", "user=alice card=XXX id=42"),
        (r"\d", "#", "user=alice card=################ id=##"),
        (r"(\w+)=(\w+)", "$2=$1", "alice=user 4111111111111111=card 42=id"),
        (r"(\w+)=(\w+)", "${2}:${1}", "alice:user 4111111111111111:card 42:id"),
        (r"card=(\d{4})\d+", "card=$1****", "user=alice card=4111**** id=42"),
        (r"card=\d+", "[$0]", "user=alice [card=4111111111111111] id=42"),
        (r"id=(?P<num>\d+)", "id=<${num}>", "user=alice card=4111111111111111 id=<42>"),
        (r"id=\d+", "cost=$$5", "user=alice card=4111111111111111 cost=$5"),
        (r"id=\d+", "$$$$", "user=alice card=4111111111111111 $$"),
        (r"id=(\d+)", "id=$9|${7}|${missing}", "user=alice card=4111111111111111 id=||"),
        (r"(x)?id=", "[$1]", "user=alice card=4111111111111111 []42"),
        (r"user=(?P<who>\w+)", "who=$1/${who}/$0", "who=alice/alice/user=alice card=4111111111111111 id=42"),
        (r"(?i)USER", "U", "U=alice card=4111111111111111 id=42"),
        (r"^", ">", ">user=alice card=4111111111111111 id=42"),
    ],
)
def test_redact_regex_templates(regex, replacement, expected):
    """§5: every non-overlapping match is replaced; `$0 $1 ${1} ${name} $$`; missing groups expand to ""."""
    out, engine, _, _ = _apply(
        [_policy({"redact": [{"log_field": "body", "regex": regex, "replacement": replacement}]})]
    )
    assert _rec(out)["body"] == S(expected)
    assert _stages(engine)["redact"] == [1, 0]


def test_redact_regex_default_replacement():
    """§5: a regex redact without replacement uses "[REDACTED]" for each match."""
    out, _, _, _ = _apply([_policy({"redact": [{"log_field": "body", "regex": r"\d{3,}"}]})])
    assert _rec(out)["body"] == S("user=alice card=[REDACTED] id=42")


def test_redact_regex_on_attributes():
    """§5: regex redact on nested, resource and scope attributes."""
    out, _, _, _ = _apply(
        [
            _policy(
                {
                    "redact": [
                        {"log_attribute": ["http", "url"], "regex": "token=[^&]+", "replacement": "token=***"},
                        {"resource_attribute": "service.name", "regex": "^a", "replacement": "A"},
                        {"scope_attribute": "tier", "regex": "o", "replacement": "0"},
                    ]
                }
            )
        ]
    )
    assert _nested(out)["url"] == S("/a?token=***")
    assert _resource(out)["service.name"] == S("Api")
    assert _scope(out)["tier"] == S("g0ld")


def test_redact_regex_only_on_string_values():
    """§5: a regex redact only touches string values; an int attribute is left alone (a stage miss)."""
    out, engine, body, raw = _apply(
        [_policy({"redact": [{"log_attribute": "count", "regex": "7", "replacement": "X"}]})]
    )
    assert raw == body
    assert _attrs(_rec(out))["count"] == I(7)
    assert _stages(engine)["redact"] == [0, 1]


def test_redact_regex_without_match_is_a_noop():
    """A regex that finds nothing changes nothing (a stage miss)."""
    _, engine, body, raw = _apply([_policy({"redact": [{"log_field": "body", "regex": "zzz"}]})])
    assert raw == body
    assert _stages(engine)["redact"] == [0, 1]


# ── rename ─────────────────────────────────────────────────────────────────


def test_rename_attribute():
    """§5: rename moves the value to `to` and removes the source."""
    out, engine, _, _ = _apply([_policy({"rename": [{"from_log_attribute": "user", "to": "user.name"}]})])
    attrs = _attrs(_rec(out))
    assert "user" not in attrs and attrs["user.name"] == S("alice")
    assert _stages(engine)["rename"] == [1, 0]


def test_rename_target_exists_without_upsert_is_noop():
    """§5: target exists and not upsert -> no-op (both values kept)."""
    out, engine, body, raw = _apply([_policy({"rename": [{"from_log_attribute": "user", "to": "count"}]})])
    assert raw == body
    assert _stages(engine)["rename"] == [0, 1]


def test_rename_target_exists_with_upsert_overwrites():
    """§5: with upsert the target is overwritten and the source removed."""
    out, _, _, _ = _apply([_policy({"rename": [{"from_log_attribute": "user", "to": "count", "upsert": True}]})])
    attrs = _attrs(_rec(out))
    assert attrs["count"] == S("alice") and "user" not in attrs
    assert sum(1 for a in _rec(out)["attributes"] if a["key"] == "count") == 1


@pytest.mark.parametrize("upsert", [False, True])
def test_rename_to_itself_is_a_noop(upsert):
    """§5: a rename whose target is its source changes nothing (a stage miss)."""
    rename = {"from_log_attribute": "user", "to": "user", "upsert": upsert}
    _, engine, body, raw = _apply([_policy({"rename": [rename]})])
    assert raw == body
    assert _stages(engine)["rename"] == [0, 1]


@pytest.mark.parametrize("upsert", [False, True])
def test_rename_absent_source_is_a_noop(upsert):
    """§5: source absent -> no-op, with or without upsert."""
    _, engine, body, raw = _apply(
        [_policy({"rename": [{"from_log_attribute": "nope", "to": "user", "upsert": upsert}]})]
    )
    assert raw == body
    assert _stages(engine)["rename"] == [0, 1]


def test_rename_nested_resource_and_log_field():
    """§5: rename of a nested attribute stays in its map; resource attributes; a log field becomes an attribute."""
    out, _, _, _ = _apply(
        [
            _policy(
                {
                    "rename": [
                        {"from_log_attribute": ["http", "method"], "to": "verb"},
                        {"from_resource_attribute": "host", "to": "host.name"},
                        {"from_log_field": "severity_text", "to": "level"},
                    ]
                }
            )
        ]
    )
    assert set(_nested(out)) == {"verb", "url"}
    assert _nested(out)["verb"] == S("GET")
    assert _resource(out) == {"service.name": S("api"), "host.name": S("h1")}
    assert "severityText" not in _rec(out)
    assert _attrs(_rec(out))["level"] == S("INFO")


# ── add ────────────────────────────────────────────────────────────────────


def test_add_new_and_existing_attributes():
    """§5: add creates an absent field; an existing one is left alone unless upsert."""
    out, engine, _, _ = _apply(
        [
            _policy(
                {
                    "add": [
                        {"log_attribute": "env", "value": "prod"},
                        {"log_attribute": "user", "value": "bob"},
                        {"log_attribute": "count", "value": "8", "upsert": True},
                    ]
                }
            )
        ]
    )
    attrs = _attrs(_rec(out))
    assert attrs["env"] == S("prod")
    assert attrs["user"] == S("alice")
    assert attrs["count"] == S("8")
    assert _stages(engine)["add"] == [2, 1]


def test_add_nested_resource_scope_and_fields():
    """§5: add on a nested path (creating maps), resource and scope attributes, body and severity."""
    out, _, _, _ = _apply(
        [
            _policy(
                {
                    "add": [
                        {"log_attribute": ["http", "status"], "value": "200"},
                        {"log_attribute": ["k8s", "pod", "name"], "value": "p-1"},
                        {"resource_attribute": "region", "value": "eu"},
                        {"scope_attribute": "tier", "value": "silver"},
                        {"log_field": "severity_text", "value": "WARN", "upsert": True},
                        {"log_field": "event_name", "value": "evt"},
                    ]
                }
            )
        ]
    )
    assert _nested(out)["status"] == S("200")
    k8s = _attrs(_rec(out))["k8s"]["kvlistValue"]["values"]
    assert k8s == [kv("pod", {"kvlistValue": {"values": [kv("name", S("p-1"))]}})]
    assert _resource(out)["region"] == S("eu")
    assert _scope(out)["tier"] == S("gold")
    assert _rec(out)["severityText"] == "WARN"
    assert _rec(out)["eventName"] == "evt"


def test_add_body_only_when_absent():
    """§5: add on an existing body without upsert is a no-op; on a record without body it sets it."""
    records = [_record(), {k: v for k, v in _record().items() if k != "body"}]
    out, engine, _, _ = _apply([_policy({"add": [{"log_field": "body", "value": "B"}]})], records)
    assert _rec(out, 0)["body"] == S("user=alice card=4111111111111111 id=42")
    assert _rec(out, 1)["body"] == S("B")
    assert _stages(engine)["add"] == [1, 1]


# ── order ──────────────────────────────────────────────────────────────────


def test_within_policy_remove_before_add():
    """§5: remove runs before add: remove + add of the same attribute leaves the new value."""
    out, _, _, _ = _apply(
        [_policy({"add": [{"log_attribute": "user", "value": "new"}], "remove": [{"log_attribute": "user"}]})]
    )
    assert _attrs(_rec(out))["user"] == S("new")


def test_within_policy_redact_before_rename():
    """§5: redact runs before rename: the renamed value is already redacted."""
    out, _, _, _ = _apply(
        [_policy({"rename": [{"from_log_attribute": "user", "to": "who"}], "redact": [{"log_attribute": "user"}]})]
    )
    attrs = _attrs(_rec(out))
    assert attrs["who"] == S("[REDACTED]") and "user" not in attrs


def test_within_policy_rename_before_add_and_remove_before_rename():
    """§5: remove -> rename -> add: a removed target frees the rename, which then blocks the add."""
    out, engine, _, _ = _apply(
        [
            _policy(
                {
                    "add": [{"log_attribute": "count", "value": "added"}],
                    "rename": [{"from_log_attribute": "user", "to": "count"}],
                    "remove": [{"log_attribute": "count"}],
                }
            )
        ]
    )
    attrs = _attrs(_rec(out))
    assert attrs["count"] == S("alice") and "user" not in attrs
    assert _stages(engine) == {"remove": [1, 0], "redact": [0, 0], "rename": [1, 0], "add": [0, 1]}


def test_across_policies_policy_id_order():
    """§5 (as pinned by the conformance cases): policies apply in id order, each running all its stages.

    `a` adds X, then `b` removes it; `a` renames k -> k2, then `b` redacts k2.
    """
    a = _policy(
        {"add": [{"log_attribute": "X", "value": "1"}], "rename": [{"from_log_attribute": "user", "to": "user2"}]},
        pid="a",
    )
    b = _policy({"remove": [{"log_attribute": "X"}], "redact": [{"log_attribute": "user2"}]}, pid="b")
    for order in ([a, b], [b, a]):
        out, engine, _, _ = _apply(order)
        attrs = _attrs(_rec(out))
        assert "X" not in attrs
        assert attrs["user2"] == S("[REDACTED]")
        assert _stages(engine, "b")["remove"] == [1, 0]


def test_two_policies_adding_the_same_field_first_by_id_wins():
    """§5: policy-id order: the lower id's add lands first; the later add (no upsert) is a no-op."""
    out, engine, _, _ = _apply(
        [
            _policy({"add": [{"log_attribute": "owner", "value": "z"}]}, pid="z"),
            _policy({"add": [{"log_attribute": "owner", "value": "m"}]}, pid="m"),
        ]
    )
    assert _attrs(_rec(out))["owner"] == S("m")
    assert _stages(engine, "m")["add"] == [1, 0]
    assert _stages(engine, "z")["add"] == [0, 1]


def test_transforms_only_for_matching_records():
    """Transforms run only on the records the policy matched."""
    records = [_record(), _record(severityText="DEBUG"), _record(severityText="INFO")]
    policy = _policy(
        {"add": [{"log_attribute": "dbg", "value": "1"}]}, matcher={"log_field": "severity_text", "exact": "DEBUG"}
    )
    out, engine, _, _ = _apply([policy], records)
    assert ["dbg" in _attrs(_rec(out, i)) for i in range(3)] == [False, True, False]
    assert _stages(engine)["add"] == [1, 0]
    assert (engine.stats.snapshot()["t"].hits, engine.stats.snapshot()["t"].misses) == (1, 0)


# ── stage statistics ───────────────────────────────────────────────────────


def test_stage_statistics_per_record():
    """Stage hits count changed records, misses no-ops, per operation and per record."""
    records = [_record(), _record(attributes=[]), {"severityText": "INFO"}]
    out, engine, _, _ = _apply(
        [
            _policy(
                {
                    "remove": [{"log_attribute": "count"}],
                    "redact": [{"log_field": "body", "regex": r"\d+", "replacement": "N"}],
                    "rename": [{"from_log_attribute": "user", "to": "u"}],
                    "add": [
                        {"log_attribute": "tag", "value": "v"},
                        {"resource_attribute": "service.name", "value": "x"},
                    ],
                }
            )
        ],
        records,
    )
    assert _stages(engine) == {"remove": [1, 2], "redact": [2, 1], "rename": [1, 2], "add": [3, 3]}
    assert _rec(out, 1)["body"] == S("user=alice card=N id=N")
    assert _attrs(_rec(out, 2)) == {"tag": S("v")}


def test_shared_resource_attribute_added_once():
    """A resource-level add hits on the first record and is a no-op for the others sharing the resource."""
    _, engine, _, _ = _apply(
        [_policy({"add": [{"resource_attribute": "region", "value": "eu"}]})], [_record(), _record(), _record()]
    )
    assert _stages(engine)["add"] == [1, 2]


def test_add_under_scalar_parent_never_duplicates_the_key():
    """§5/§3: `add ["user", "x"]` where `user` is a string must not leave two `user` attributes."""
    out, _, _, _ = _apply([_policy({"add": [{"log_attribute": ["user", "x"], "value": "v"}]})])
    keys = [a["key"] for a in _rec(out)["attributes"]]
    assert keys.count("user") == 1


@pytest.mark.parametrize("regex", [r"a\C", r"\C", r"x*", r"\C*?", "(?U)é?"])
def test_redact_regex_on_multibyte_text_never_fails(regex):
    """Byte-level RE2 matches inside multi-byte characters (`\\C`, empty matches) never break evaluation.

    (Regression: `a\\C` on "aé" used to raise UnicodeDecodeError out of the substitution.)
    """
    records = [_record(body=S("aé日本 ok"))]
    engine = _engine([_policy({"redact": [{"log_field": "body", "regex": regex, "replacement": "-"}]})])
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(_doc(records)), "application/json")
    assert (evaluated.outcome.total, evaluated.outcome.kept) == (1, 1)
    body = _rec(orjson.loads(evaluated.body))["body"]
    assert isinstance(body["stringValue"], str)
