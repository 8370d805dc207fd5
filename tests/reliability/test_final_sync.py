"""The final policy sync on shutdown, seen by a real policy server: SIGTERM and SIGINT alike.

The README promises that a stopping edge reports its last match statistics. The syncs here
are an hour apart, so the only report that can carry the counts of the traffic sent is the
final one: without it the server never hears about those records.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.reliability.harness import EdgeProcess, FaultUpstream, PolicyServer, free_port, otlp_document, wait_for

DROP_DEBUG = {"id": "drop-debug", "name": "drop debug",
              "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}


def _hits(server: PolicyServer, policy_id: str) -> int:
    """Hits reported for `policy_id` over every sync request the server received."""
    return sum(int(status.get("matchHits", 0)) for _, _, body in server.seen
               for status in json.loads(body).get("policyStatuses", []) if status.get("id") == policy_id)


@pytest.fixture
def policy_server() -> Iterator[PolicyServer]:
    server = PolicyServer(free_port(), [DROP_DEBUG], interval=3600).start()  # the next sync is an hour away
    yield server
    server.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_reports_the_last_statistics(tmp_path: Path, policy_server: PolicyServer, signum) -> None:
    upstream = FaultUpstream().start()
    provider = {"id": "server", "type": "http", "url": policy_server.url}
    edge = EdgeProcess(tmp_path, upstream.url, policies=[], workers=2, policy_providers=[provider])
    try:
        edge.start()
        assert wait_for(lambda: [p["id"] for p in edge.policy_doc().get("policies") or []] == ["drop-debug"], 20)
        first_syncs = policy_server.requests
        records = [{"severityText": "DEBUG", "body": {"stringValue": f"debug {i}"}} for i in range(7)]
        records.append({"severityText": "INFO", "body": {"stringValue": "kept"}})
        for _ in range(3):
            reply = edge.request("POST", "/v1/logs", json.dumps(otlp_document("log", records)).encode(),
                                 {"Content-Type": "application/json"})
            assert reply.status == 200
        assert _hits(policy_server, "drop-debug") == 0  # nothing reported yet: the next sync is an hour away
        edge.proc.send_signal(signum)
        assert edge.proc.wait(30) == 0, edge.log()
        assert policy_server.requests == first_syncs + 1, "no final sync reached the server"
        assert _hits(policy_server, "drop-debug") == 21
        assert edge.shm_segments() == []
    finally:
        if edge.proc is not None and edge.proc.poll() is None:
            edge.stop()
        upstream.stop()
