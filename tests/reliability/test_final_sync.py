"""The final policy sync on shutdown, seen by a real policy server: SIGTERM and SIGINT alike.

The README promises that a stopping edge reports its last match statistics. The syncs here
are an hour apart, so the only report that can carry the counts of the traffic sent is the
final one: without it the server never hears about those records.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.harness import EdgeProcess, FaultUpstream, free_port, otlp_document, wait_for

DROP_DEBUG = {"id": "drop-debug", "name": "drop debug",
              "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}


class RecordingPolicyServer:
    """Serves one policy with a one-hour sync interval and keeps every sync request it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                owner.requests.append(json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0))))
                body = json.dumps({"policies": [DROP_DEBUG], "hash": "h1",
                                   "recommendedSyncIntervalSeconds": 3600}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hits(self, policy_id: str) -> int:
        """Hits reported for `policy_id` over every request received."""
        return sum(int(status.get("matchHits", 0)) for request in self.requests
                   for status in request.get("policyStatuses", []) if status.get("id") == policy_id)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def policy_server() -> Iterator[RecordingPolicyServer]:
    server = RecordingPolicyServer()
    yield server
    server.stop()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_reports_the_last_statistics(tmp_path: Path, policy_server: RecordingPolicyServer, signum) -> None:
    upstream = FaultUpstream().start()
    provider = {"id": "server", "type": "http", "url": f"http://127.0.0.1:{policy_server.port}/sync"}
    edge = EdgeProcess(tmp_path, upstream.url, policies=[], workers=2, policy_providers=[provider])
    try:
        edge.start()
        assert wait_for(lambda: [p["id"] for p in edge.policy_doc().get("policies") or []] == ["drop-debug"], 20)
        first_syncs = len(policy_server.requests)
        records = [{"severityText": "DEBUG", "body": {"stringValue": f"debug {i}"}} for i in range(7)]
        records.append({"severityText": "INFO", "body": {"stringValue": "kept"}})
        for _ in range(3):
            reply = edge.request("POST", "/v1/logs", json.dumps(otlp_document("log", records)).encode(),
                                 {"Content-Type": "application/json"})
            assert reply.status == 200
        assert policy_server.hits("drop-debug") == 0  # nothing reported yet: the next sync is an hour away
        edge.proc.send_signal(signum)
        assert edge.proc.wait(30) == 0, edge.log()
        assert len(policy_server.requests) == first_syncs + 1, "no final sync reached the server"
        assert policy_server.hits("drop-debug") == 21
        assert edge.shm_segments() == []
    finally:
        if edge.proc is not None and edge.proc.poll() is None:
            edge.stop()
        upstream.stop()
