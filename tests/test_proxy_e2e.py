"""The `edge` command end to end: supervisor, gunicorn workers, providers, shutdown.

Everything is real and on loopback: the `edge` executable, an upstream HTTP server, a
policy sync server and policy files that change while traffic flows.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

EDGE = [sys.executable, "-m", "supervisor.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(ThreadingHTTPServer):
    """A loopback server recording (path, headers, body); `handler_delay` slows every answer."""

    daemon_threads = True

    def __init__(self, reply: bytes = b"{}") -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.reply = reply
        self.handler_delay = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if server.handler_delay:
                    time.sleep(server.handler_delay)
                with server.lock:
                    server.requests.append((self.path, dict(self.headers), body))
                reply = server.respond(self.path, body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def respond(self, path: str, body: bytes) -> bytes:
        return self.reply

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def bodies(self) -> list[str]:
        with self.lock:
            return [r["body"]["stringValue"] for _, _, b in self.requests if b
                    for rl in json.loads(b).get("resourceLogs", []) for sl in rl["scopeLogs"]
                    for r in sl["logRecords"]]


class SyncServer(Recorder):
    """Serves policies over the sync protocol (JSON) and records every request."""

    def __init__(self, policies: list[dict]) -> None:
        self.policies = policies
        self.down = False
        super().__init__()

    def respond(self, path: str, body: bytes) -> bytes:
        return json.dumps({"policies": self.policies, "hash": str(hash(json.dumps(self.policies))),
                           "recommendedSyncIntervalSeconds": 1}).encode()

    def statuses(self) -> dict[str, int]:
        hits: dict[str, int] = {}
        with self.lock:
            for _, _, body in self.requests:
                for status in json.loads(body).get("policyStatuses", []):
                    hits[status["id"]] = hits.get(status["id"], 0) + int(status.get("matchHits", 0))
        return hits


def logs_body(*records: tuple[str, str]) -> bytes:
    return json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
        {"severityText": sev, "body": {"stringValue": text}} for sev, text in records]}]}]}).encode()


def post(url: str, body: bytes, timeout: float = 10.0) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def drop_policy(pid: str, severity: str) -> dict:
    return {"id": pid, "log": {"match": [{"log_field": "severity_text", "exact": severity}], "keep": "none"}}


class Edge:
    def __init__(self, tmp: Path, config: dict, command: list[str] = EDGE, new_session: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        path = tmp / "config.json"
        path.write_text(json.dumps({"listen_port": self.port, "workers": 2, "log_level": "info", **config}))
        self.log = open(tmp / "edge.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*command, str(path)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=new_session)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                get_json(self.base + "/_health")
                return
            except OSError:
                assert self.proc.poll() is None, (tmp / "edge.log").read_text()
                time.sleep(0.1)
        raise AssertionError("edge did not become healthy: " + (tmp / "edge.log").read_text())

    def wait_policies(self, count: int, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            doc = get_json(self.base + "/_edge/policies?format=json")
            if len(doc.get("policies") or []) == count:
                return doc
            time.sleep(0.1)
        raise AssertionError(f"policies never reached {count}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code


def edge_segments(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"edge-{pid}-")]


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.shutdown()


def test_file_policies_hot_reload_under_load(tmp_path: Path, upstream: Recorder) -> None:
    """Rewriting the policy file while requests flow: the new set applies within 2 s, no request fails."""
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": [drop_policy("drop-debug", "DEBUG")]}))
    edge = Edge(tmp_path, {"upstream_url": upstream.url,
                           "policy_providers": [{"id": "f", "type": "file", "path": str(policy_file)}]})
    try:
        edge.wait_policies(1)
        failures: list[int] = []
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                code = post(edge.base + "/v1/logs", logs_body(("DEBUG", "d"), ("INFO", "i"), ("WARN", "w")))
                if code != 200:
                    failures.append(code)

        threads = [threading.Thread(target=load) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        policy_file.write_text(json.dumps({"policies": [drop_policy("drop-debug", "DEBUG"),
                                                        drop_policy("drop-warn", "WARN")]}))
        changed_at = time.monotonic()
        edge.wait_policies(2, timeout=2.5)
        assert time.monotonic() - changed_at < 2.5
        time.sleep(0.5)
        upstream.requests.clear()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        assert failures == []
        bodies = upstream.bodies()
        assert bodies and "d" not in bodies and "w" not in bodies and "i" in bodies
    finally:
        assert edge.stop() == 0


def test_http_provider_statuses_and_server_down(tmp_path: Path, upstream: Recorder) -> None:
    """Policies from a sync server apply; hits are reported back; with the server gone the policies stay."""
    sync = SyncServer([drop_policy("drop-debug", "DEBUG")])
    edge = Edge(tmp_path, {"upstream_url": upstream.url, "policy_providers": [
        {"id": "srv", "type": "http", "url": sync.url + "/v1/policy/sync", "poll_interval": 1,
         "headers": [{"name": "Authorization", "value": "Bearer ${EDGE_TEST_TOKEN}"}]}]})
    try:
        edge.wait_policies(1)
        for _ in range(5):
            assert post(edge.base + "/v1/logs", logs_body(("DEBUG", "d"), ("INFO", "i"))) == 200
        deadline = time.monotonic() + 10
        while sync.statuses().get("drop-debug", 0) < 5 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sync.statuses()["drop-debug"] == 5
        sync.shutdown()
        sync.server_close()
        time.sleep(2.5)
        upstream.requests.clear()
        assert post(edge.base + "/v1/logs", logs_body(("DEBUG", "d2"), ("INFO", "i2"))) == 200
        assert upstream.bodies() == ["i2"]
    finally:
        assert edge.stop() == 0
    log = (tmp_path / "edge.log").read_text()
    assert "Bearer" not in log


def test_sigterm_drains_in_flight_requests_and_releases_shared_memory(tmp_path: Path, upstream: Recorder) -> None:
    """Requests in flight when SIGTERM arrives complete; exit 0; no shared-memory segment remains."""
    upstream.handler_delay = 1.5
    edge = Edge(tmp_path, {"upstream_url": upstream.url})
    assert edge_segments(edge.proc.pid)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(post(edge.base + "/v1/logs",
                                                                    logs_body(("INFO", "x"))))) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    edge.proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(15)
    assert edge.stop() == 0
    assert results == [200, 200, 200, 200]
    assert edge_segments(edge.proc.pid) == []


def test_passthrough_before_policies_and_final_sync(tmp_path: Path, upstream: Recorder) -> None:
    """With an unreachable policy server edge still serves (raw passthrough)."""
    edge = Edge(tmp_path, {"upstream_url": upstream.url, "policy_providers": [
        {"id": "srv", "type": "http", "url": f"http://127.0.0.1:{free_port()}/v1/policy/sync"}]})
    try:
        assert post(edge.base + "/v1/logs", logs_body(("DEBUG", "d"))) == 200
        assert upstream.bodies() == ["d"]
    finally:
        assert edge.stop() == 0


@pytest.mark.parametrize(("script", "filters_otlp"), [("edge-otlp", True), ("edge-datadog", False)])
def test_distributions_serve_their_route_subsets(tmp_path: Path, upstream: Recorder, script: str,
                                                 filters_otlp: bool) -> None:
    """edge-otlp applies policies on /v1/logs; edge-datadog has no OTLP routes and passes them through."""
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": [drop_policy("drop-debug", "DEBUG")]}))
    edge = Edge(tmp_path, {"upstream_url": upstream.url,
                           "policy_providers": [{"id": "f", "type": "file", "path": str(policy_file)}]},
                command=[str(Path(sys.executable).parent / script)])
    try:
        edge.wait_policies(1)
        assert post(edge.base + "/v1/logs", logs_body(("DEBUG", "d"), ("INFO", "i"))) == 200
        assert upstream.bodies() == (["i"] if filters_otlp else ["d", "i"])
    finally:
        assert edge.stop() == 0


def test_segments_of_a_killed_instance_are_removed_by_the_next(tmp_path: Path, upstream: Recorder) -> None:
    """SIGKILL of the whole process group (as a container runtime does) leaves segments behind;
    the next edge to start removes them."""
    (tmp_path / "first").mkdir()
    first = Edge(tmp_path / "first", {"upstream_url": upstream.url}, new_session=True)
    assert edge_segments(first.proc.pid)
    os.killpg(first.proc.pid, signal.SIGKILL)
    first.proc.wait(10)
    first.log.close()
    time.sleep(0.5)
    assert edge_segments(first.proc.pid)
    (tmp_path / "second").mkdir()
    second = Edge(tmp_path / "second", {"upstream_url": upstream.url})
    try:
        assert edge_segments(first.proc.pid) == []
    finally:
        assert second.stop() == 0
