"""Strict policy validation: what used to load silently (and do nothing) is now refused, in plain words.

Per-policy problems (no id, a key that means nothing, a value of the wrong kind) reject that
policy and let the others load; per-document problems (no `policies` list, duplicate ids)
refuse the document, and a file provider keeps its last good policies.
"""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from edge.cli.policy import main
from edge.config import ProviderConfig
from edge.control.file_provider import FileProvider
from edge.policy.loader import PolicyFileError, load_document, parse_document
from edge.policy.sync import SyncClient, SyncError
from edge.proto.tero.policy.v1 import policy_pb2 as pb


def _pol(pid: str, **log: object) -> dict:
    return {"id": pid, "log": {"match": [{"log_field": "body", "contains": pid}], "keep": "none", **log}}


def _errors(*policies: object) -> list[str]:
    return load_document({"policies": list(policies)}).errors


def _refusal(doc: object, source: str = "p.yaml") -> str:
    with pytest.raises(PolicyFileError) as info:
        load_document(doc, source)
    return str(info.value)


# ── per document ───────────────────────────────────────────────────────────


@pytest.mark.parametrize(("doc", "message"), [
    ({"polices": [_pol("a")]}, "p.yaml: no 'policies' key (found 'polices': did you mean 'policies'?)"),
    (None, "p.yaml: the document is empty; expected an object with a 'policies' list"),
    ([], "p.yaml: the document is an empty list; expected an object with a 'policies' list"),
    ({"listen": ":4318", "upstream": "http://collector:4318"},
     "p.yaml: no 'policies' key (found keys: 'listen', 'upstream'); expected an object with a 'policies' list"),
    ({}, "p.yaml: no 'policies' key (found keys: none); expected an object with a 'policies' list"),
    ({"policies": {"id": "a"}}, "p.yaml: 'policies' must be a list, got an object"),
    ("text", "p.yaml: expected an object with a 'policies' list, got a string"),
])
def test_document_without_a_policies_list_is_refused(doc: object, message: str) -> None:
    assert _refusal(doc) == message


def test_duplicate_ids_refuse_the_document_and_say_which() -> None:
    doc = {"policies": [_pol("a"), _pol("b"), _pol("a")]}
    assert _refusal(doc) == "p.yaml: duplicate policy id 'a' (policies #0 and #2); ids must be unique"


@pytest.mark.parametrize(("text", "message"), [
    (b'{\n  "policies": [\n    {"id": "a"\n  ]\n}\n',
     "p.json: neither JSON nor YAML (JSON error at line 4, column 3: unexpected character, expected ',' or '}')"),
    (b"policies:\n  - id: a\n   log: x\n",
     "p.json: neither JSON nor YAML (YAML error at line 3, column 4: "
     "expected <block end>, but found '<block mapping start>')"),
])
def test_syntax_errors_give_line_and_column(text: bytes, message: str) -> None:
    with pytest.raises(PolicyFileError) as info:
        parse_document(text, "p.json")
    assert str(info.value) == message


# ── per policy ─────────────────────────────────────────────────────────────


def test_policy_without_id_is_rejected_and_the_others_load() -> None:
    result = load_document({"policies": [{"name": "no id", "log": {"keep": "none"}}, _pol("b")]})
    assert [p.id for p in result.policies] == ["b"]
    assert result.errors == ["policy #0: missing 'id' (every policy needs a unique id)"]


@pytest.mark.parametrize(("policy", "message"), [
    ({"id": "r", "log": {"match": [{"log_feld": "body", "contains": "x"}], "keep": "none"}},
     "policy r: unknown key 'log.match[0].log_feld' (did you mean 'log_field'?)"),
    ({"id": "r", "log": {"match": [{"log_field": "body", "contains": "x"}], "kep": "none"}},
     "policy r: unknown key 'log.kep' (did you mean 'keep'?)"),
    ({"id": "r", "log": {"match": [{"logFeld": "body", "contains": "x"}]}},
     "policy r: unknown key 'log.match[0].logFeld' (did you mean 'logField'?)"),
    ({"id": "r", "log": {"match": [], "transform": {"redcat": [{"log_field": "body", "regex": "@"}]}}},
     "policy r: unknown key 'log.transform.redcat' (did you mean 'redact'?)"),
    ({"id": "r", "colour": "blue", "log": {"keep": "none"}},
     "policy r: unknown key 'colour'; expected one of: id, name, description, enabled, created_at_unix_nano, "
     "modified_at_unix_nano, labels, log, metric, trace, extensions"),
])
def test_unknown_keys_are_rejected_with_a_suggestion(policy: dict, message: str) -> None:
    result = load_document({"policies": [policy, _pol("other")]})
    assert [p.id for p in result.policies] == ["other"]
    assert result.errors == [message]


def test_several_problems_of_one_policy_share_its_line() -> None:
    policy = {"id": "r", "log": {"match": [{"log_feld": "body", "contains": "x"}], "kep": "none"}}
    assert _errors(policy) == ["policy r: unknown key 'log.match[0].log_feld' (did you mean 'log_field'?); "
                               "unknown key 'log.kep' (did you mean 'keep'?)"]


@pytest.mark.parametrize(("policy", "message"), [
    ({"id": "a", "log": {"keep": 5}}, "policy a: 'log.keep' must be a string, got a number"),
    ({"id": "a", "log": {"match": {"log_field": "body"}}}, "policy a: 'log.match' must be a list, got an object"),
    ({"id": "a", "log": "drop"}, "policy a: 'log' must be an object, got a string"),
    ({"id": "a", "enabled": "yes", "log": {}}, "policy a: 'enabled' must be true or false, got a string"),
    ({"id": "a", "log": {}, "metric": {}}, "policy a: 'log' and 'metric' cannot both be set; choose one"),
    ({"id": "a", "log": {"match": [{"log_field": "body", "exact": "x", "regex": "y"}]}},
     "policy a: 'log.match[0].exact' and 'log.match[0].regex' cannot both be set; choose one"),
    ({"id": "a", "log": {"match": [{"log_field": "bdy", "exact": "x"}]}},
     "policy a: 'log.match[0].log_field' has unknown value 'bdy'; expected one of: body, severity_text, trace_id, "
     "span_id, event_name, resource_schema_url, scope_schema_url, severity_number, scope_name, scope_version"),
    (42, "policy #0: cannot decode: a policy must be an object, got a number"),
])
def test_wrong_values_are_named_without_protobuf_words(policy: object, message: str) -> None:
    errors = _errors(policy)
    assert errors == [message]
    for word in ("oneof", "tero.policy", "Failed to parse", "LogMatcher", "LogField"):
        assert word not in errors[0]


def test_existing_leniency_is_kept() -> None:
    """Both key styles, enum spellings and shorthands still load without a word."""
    policy = {"id": "a", "enabled": True, "log": {
        "match": [{"logField": "LOG_FIELD_BODY", "startsWith": "x"}, {"log_attribute": "user", "exists": True},
                  {"logAttribute": {"path": ["http", "method"]}, "equals": "GET"}, {"log_field": 1, "regex": "y"}],
        "keep": "none", "transform": {"redact": [{"logAttribute": ["user"], "replacement": "*"}]}}}
    result = load_document({"policies": [policy]})
    assert result.errors == []
    assert [p.id for p in result.policies] == ["a"]


# ── callers: validate, the file provider, the sync client ──────────────────


def test_validate_refuses_a_typoed_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("polices:\n  - id: a\n    log: {keep: none}\n")
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}: no 'policies' key (found 'polices': did you mean 'policies'?)\n"


def test_validate_reports_a_typoed_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(orjson.dumps({"policies": [_pol("a"), {"id": "b", "log": {"kep": "none"}}]}))
    assert main(["validate", str(path)]) == 1
    assert capsys.readouterr().out == f"{path}: policy b: unknown key 'log.kep' (did you mean 'keep'?)\n"


def test_validate_says_ok_for_a_good_file_after_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad, good = tmp_path / "bad.json", tmp_path / "good.json"
    bad.write_bytes(b"[]")
    good.write_bytes(orjson.dumps({"policies": [_pol("a")]}))
    assert main(["validate", str(bad), str(good)]) == 1
    assert capsys.readouterr().out.splitlines()[-1] == f"{good}: 1 policies OK"


def test_file_provider_keeps_last_good_policies_on_duplicate_ids(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "p.json"
    path.write_bytes(orjson.dumps({"policies": [_pol("a")]}))
    delivered: list[list[str]] = []
    provider = FileProvider(ProviderConfig("f", "file", path=str(path)),
                            lambda _pid, policies: delivered.append([p.id for p in policies]))
    assert provider.check()
    path.write_bytes(orjson.dumps({"policies": [_pol("a"), _pol("a")]}))
    with caplog.at_level(logging.WARNING, "edge.providers"):
        assert not provider.check()
    assert delivered == [["a"]]
    assert f"{path}: duplicate policy id 'a' (policies #0 and #1); ids must be unique; keeping the last good " \
           "policies" in caplog.text


def test_sync_answer_rejects_the_bad_policy_and_loads_the_rest() -> None:
    answer = orjson.dumps({"hash": "h", "policies": [_pol("a"), {"id": "b", "log": {"kep": "none"}}]})
    result = SyncClient("http://unused")._decode(answer, "application/json")
    assert [p.id for p in result.policies] == ["a"]
    assert result.decode_errors == ["policy b: unknown key 'log.kep' (did you mean 'keep'?)"]
    assert isinstance(result.policies[0], pb.Policy)


def test_sync_answer_with_duplicate_ids_is_refused() -> None:
    """A failed sync (one warning line, last good policies kept), not an unexpected error with a traceback."""
    answer = orjson.dumps({"hash": "h", "policies": [_pol("a"), _pol("a")]})
    with pytest.raises(SyncError, match="^sync response: duplicate policy id 'a'"):
        SyncClient("http://unused")._decode(answer, "application/json")
