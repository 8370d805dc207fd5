"""Extension dispatch (docs/policies.md §9): records selected by mode reach the registered handler as copies."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from edge.engine.engine import Engine
from edge.engine.extensions import ExtensionRegistry
from edge.formats.otlp.body import evaluate
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document

DUMP = "com.usetero/s3-dump"


class Recorder:
    """A handler that keeps what it was given and mutates it, to prove it only gets copies."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bytes, list[dict[str, Any]]]] = []

    def submit(self, policy_id: str, signal: str, config: bytes, records: list[dict[str, Any]]) -> None:
        self.calls.append((policy_id, signal, config, records))
        for item in records:
            item["record"]["body"] = {"stringValue": "handler scribbled here"}


class Exploding:
    def submit(self, policy_id: str, signal: str, config: bytes, records: list[dict[str, Any]]) -> None:
        raise RuntimeError("bucket on fire")


def _doc() -> dict:
    bodies = [("DEBUG", "a"), ("INFO", "b"), ("DEBUG", "c"), ("WARN", "d")]
    return {"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
        "scopeLogs": [{"scope": {"name": "s"}, "logRecords": [
            {"severityText": sev, "body": {"stringValue": body}} for sev, body in bodies]}]}]}


def _run(mode: str, handler: Any, keep: str = "none") -> tuple[list[str], Engine]:
    policy = {"id": "dump-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}],
                                          "keep": keep,
                                          "transform": {"add": [{"log_attribute": "seen", "value": "yes"}]}},
              "extensions": [{"type": DUMP, "mode": mode, "config": {"target": {"kind": "s3", "name": "archive"}}}]}
    snapshot = compile_policies(load_document({"policies": [policy]}).policies)
    registry = ExtensionRegistry()
    registry.register(DUMP, handler)
    engine = Engine(snapshot, extensions=registry, rng=random.Random(1))
    out = orjson.loads(evaluate(engine, "log", orjson.dumps(_doc()), "application/json").body)
    bodies = [r["body"]["stringValue"] for rl in out.get("resourceLogs", [])
              for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    return bodies, engine


@pytest.mark.parametrize(("mode", "keep", "expected"), [
    ("dropped", "none", ["a", "c"]),
    ("matched", "none", ["a", "c"]),
    ("kept", "none", []),
    ("kept", "all", ["a", "c"]),
    ("unmatched", "none", ["b", "d"]),
    ("all", "none", ["a", "b", "c", "d"]),
    ("EXTENSION_MODE_DROPPED", "none", ["a", "c"]),
])
def test_mode_selects_records(mode: str, keep: str, expected: list[str]) -> None:
    """Each mode hands over exactly its records, with resource and scope, before transforms run."""
    recorder = Recorder()
    _run(mode, recorder, keep)
    got = [item["record"]["body"]["stringValue"] for call in recorder.calls for item in call[3]]
    # the handler scribbled on its copies; compare against what it received first
    assert len(got) == len(expected)
    received = [c for c in recorder.calls]
    if expected:
        policy_id, signal, config, records = received[0]
        assert (policy_id, signal) == ("dump-debug", "log")
        assert orjson.loads(config) == {"target": {"kind": "s3", "name": "archive"}}
        assert all(r["resource"]["attributes"][0]["value"]["stringValue"] == "svc" for r in records)
        assert all("seen" not in str(r["record"].get("attributes")) for r in records)
    else:
        assert received == []


def test_handler_gets_copies_and_cannot_change_output() -> None:
    """Scribbling on the copies changes nothing that is forwarded."""
    bodies, _ = _run("all", Recorder(), keep="all")
    assert bodies == ["a", "b", "c", "d"]


def test_failing_handler_is_fail_open() -> None:
    """A handler that raises never affects keep decisions, transforms or statistics."""
    bodies, engine = _run("dropped", Exploding())
    assert bodies == ["b", "d"]
    assert engine.stats.snapshot()["dump-debug"].hits == 2


def test_unknown_extension_type_is_skipped() -> None:
    """No handler registered for the type: the policy still works and nothing is raised."""
    bodies, _ = _run("dropped", Recorder())
    policy = {"id": "p", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"},
              "extensions": [{"type": "com.example/unknown", "mode": "all"}]}
    snapshot = compile_policies(load_document({"policies": [policy]}).policies)
    engine = Engine(snapshot, extensions=ExtensionRegistry())
    out = orjson.loads(evaluate(engine, "log", orjson.dumps(_doc()), "application/json").body)
    assert len(out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]) == 2
    assert bodies == ["b", "d"]
