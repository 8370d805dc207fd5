"""GET /_edge/policies on a real running proxy: which policies are in force, and every provider's load errors.

A policy that does not compile is listed but not in force; a policy file that cannot be read
keeps its last good policies, and says so here with the provider id, until it is fixed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_fixtures import RecordingUpstream, free_port
from tests.reliability.harness import EdgeProcess, PolicyServer
from tests.waiting import wait_for

GOOD = {"id": "drop-debug", "name": "drop debug",
        "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}
BAD_REGEX = {"id": "bad-regex", "name": "broken",
             "log": {"match": [{"log_field": "body", "regex": "([bad"}], "keep": "none"}}
UNDECODABLE = {"id": "undecodable", "log": {"match": "not-a-list"}}
SERVED = {"id": "served", "trace": {"match": [{"span_status": "error"}], "keep": {"percentage": 100}}}


@pytest.fixture
def upstream():
    server = RecordingUpstream().start()
    yield server
    server.stop()


def _rows(doc: dict[str, Any]) -> list[tuple[str, bool, list[str]]]:
    return [(p["id"], p["in_force"], p["errors"]) for p in doc["policies"]]


def test_policies_route_shows_invalid_policies_and_provider_load_errors(tmp_path: Path, upstream):
    """Compile errors mark a policy as not in force; decode errors, an unparsable file and a failed
    sync are listed per provider, and each disappears once its cause is fixed."""
    other = tmp_path / "other.json"
    other.write_text('{"policies": [')
    server = PolicyServer(free_port(), [SERVED, UNDECODABLE], interval=1).start()
    edge = EdgeProcess(tmp_path, upstream.url, [GOOD, BAD_REGEX, UNDECODABLE], policy_providers=[
        {"id": "suite", "type": "file", "path": str(tmp_path / "policies.json")},
        {"id": "other", "type": "file", "path": str(other)},
        {"id": "server", "type": "http", "url": server.url},
    ])
    # ready once three policies are listed: drop-debug, bad-regex and served (undecodable ones never are)
    try:
        edge.start()
        expected_errors = [
            "provider suite: policy undecodable: 'log.match' must be a list, got a string",
            f"provider other: {other}: neither JSON nor YAML (JSON error at line 1, column 15: "
            "unexpected end of data); nothing is filtered until it is fixed",
            "provider server: policy undecodable: 'log.match' must be a list, got a string",
        ]
        assert wait_for(lambda: edge.policy_doc()["load_errors"] == expected_errors, 10, 0.1), \
            edge.policy_doc()["load_errors"]
        doc = edge.policy_doc()
        assert _rows(doc) == [
            ("bad-regex", False, ['log: match[0]: invalid regex "([bad": missing ]: [bad']),
            ("drop-debug", True, []),
            ("served", True, []),
        ]

        other.write_text(json.dumps({"policies": []}))  # fixed: its error goes, the others stay
        assert wait_for(lambda: edge.policy_doc()["load_errors"] == [expected_errors[0], expected_errors[2]],
                        10, 0.1), edge.policy_doc()["load_errors"]

        edge.policy_file.write_text("policies: [")  # broken: last good policies kept, the error shown
        suite = edge.policy_file
        broken = (f"provider suite: {suite}: neither JSON nor YAML (YAML error at line 1, column 12: "
                  "expected the node content, but found '<stream end>'); keeping the last good policies")
        assert wait_for(lambda: edge.policy_doc()["load_errors"] == [broken, expected_errors[2]], 10, 0.1), \
            edge.policy_doc()["load_errors"]
        assert _rows(edge.policy_doc()) == _rows(doc)

        server.stop()  # the policy server goes away: its policies stay in force, the failure is shown
        failed = "provider server: sync failed (the reason is logged); keeping the last good policies"
        assert wait_for(lambda: edge.policy_doc()["load_errors"] == [broken, failed, expected_errors[2]], 10, 0.1), \
            edge.policy_doc()["load_errors"]
        assert _rows(edge.policy_doc()) == _rows(doc)
    finally:
        edge.stop()
        server.stop()
