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
import urllib.error
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psutil
import pytest

from tests.waiting import wait_for

EDGE = [sys.executable, "-m", "supervisor.main"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder(ThreadingHTTPServer):
    """A loopback server recording (path, headers, body); with `hold` set to an Event, every answer
    waits for it (the request stays in flight as long as a test needs); `arrived` counts requests
    as soon as their body is read."""

    daemon_threads = True

    def __init__(self, reply: bytes = b"{}") -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.reply = reply
        self.hold: threading.Event | None = None
        self.arrived = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.arrived += 1
                if server.hold is not None:
                    server.hold.wait(60)
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
        path.write_text(json.dumps({"listen_port": self.port, "workers": 2, "log_level": "info",
                                    "grpc": {"listen_port": free_port()}, **config}))
        self.log = open(tmp / "edge.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([*command, str(path)], stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=new_session)
        assert wait_for(self.healthy, 30, 0.1), "edge did not become healthy: " + self.log_text()

    def healthy(self) -> bool:
        try:
            get_json(self.base + "/_health")
            return True
        except OSError:
            assert self.proc.poll() is None, self.log_text()
            return False

    def log_text(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_policies(self, count: int, timeout: float = 20.0) -> dict:
        docs: list[dict] = []

        def listed() -> bool:
            docs.append(get_json(self.base + "/_edge/policies?format=json"))
            return len(docs[-1].get("policies") or []) == count

        assert wait_for(listed, timeout, 0.1), f"policies never reached {count}"
        return docs[-1]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self.log.close()
        return code


def master_listening(edge_pid: int) -> bool:
    """Whether gunicorn's master still holds its listening socket: it closes it when SIGTERM reached
    it, and the workers drain from then on (they keep theirs until they are done)."""
    try:
        for child in psutil.Process(edge_pid).children():
            if "gunicorn" in " ".join(child.cmdline()):
                return any(c.status == psutil.CONN_LISTEN for c in child.net_connections(kind="inet"))
    except psutil.Error:
        pass
    return False


def edge_segments(pid: int) -> list[str]:
    return [name for name in os.listdir("/dev/shm") if name.startswith(f"edge-{pid}-")]


@pytest.fixture
def upstream() -> Iterator[Recorder]:
    server = Recorder()
    yield server
    server.shutdown()


def test_file_policies_hot_reload_under_load(tmp_path: Path, upstream: Recorder) -> None:
    """Rewriting the policy file while requests flow: the new set applies, no request fails.

    How soon it applies (the README's 2 s) is measured by benchmarks/latency.py: a deadline that
    tight fails on a loaded machine for reasons that are not edge's, so here it only bounds a hang.
    """
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": [drop_policy("drop-debug", "DEBUG")]}))
    edge = Edge(tmp_path, {"upstream_url": upstream.url,
                           "policy_providers": [{"id": "f", "type": "file", "path": str(policy_file)}]})
    try:
        edge.wait_policies(1)
        failures: list[int] = []
        completed = [0] * 4  # requests each load thread has finished
        stop = threading.Event()

        def load(n: int) -> None:
            while not stop.is_set():
                code = post(edge.base + "/v1/logs", logs_body(("DEBUG", "d"), ("INFO", "i"), ("WARN", "w")))
                if code != 200:
                    failures.append(code)
                completed[n] += 1

        def each_finished_another(since: list[int]) -> bool:
            return all(done > before for done, before in zip(completed, since, strict=True))

        threads = [threading.Thread(target=load, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        assert wait_for(lambda: min(completed) >= 3), "the load did not start"
        policy_file.write_text(json.dumps({"policies": [drop_policy("drop-debug", "DEBUG"),
                                                        drop_policy("drop-warn", "WARN")]}))
        edge.wait_policies(2)
        # requests already in flight may have been evaluated with the old set: once every thread has
        # finished one more, all later requests started after the swap
        assert wait_for(lambda s=list(completed): each_finished_another(s))
        with upstream.lock:
            upstream.requests.clear()
        assert wait_for(lambda s=list(completed): each_finished_another(s) and bool(upstream.bodies()))
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
        assert wait_for(lambda: sync.statuses().get("drop-debug", 0) >= 5), sync.statuses()
        assert sync.statuses()["drop-debug"] == 5
        sync.shutdown()
        sync.server_close()
        # a few syncs have failed (each logs a warning): the last good policies must have stayed
        assert wait_for(lambda: edge.log_text().count("sync failed") >= 2), edge.log_text()
        upstream.requests.clear()
        assert post(edge.base + "/v1/logs", logs_body(("DEBUG", "d2"), ("INFO", "i2"))) == 200
        assert upstream.bodies() == ["i2"]
    finally:
        assert edge.stop() == 0
    log = (tmp_path / "edge.log").read_text()
    assert "Bearer" not in log


def test_sigterm_drains_in_flight_requests_and_releases_shared_memory(tmp_path: Path, upstream: Recorder) -> None:
    """Requests in flight when SIGTERM arrives complete; exit 0; no shared-memory segment remains."""
    upstream.hold = threading.Event()  # the requests stay in flight until the drain has begun
    edge = Edge(tmp_path, {"upstream_url": upstream.url})
    assert edge_segments(edge.proc.pid)
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(post(edge.base + "/v1/logs",
                                                                    logs_body(("INFO", "x")), timeout=30)))
               for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: upstream.arrived == 4), "the requests did not reach the upstream"
        assert master_listening(edge.proc.pid), "cannot tell when the drain begins"
        edge.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: not master_listening(edge.proc.pid)), edge.log_text()
    finally:
        upstream.hold.set()
    for t in threads:
        t.join(30)
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
    # nothing is left to remove them (the whole group is dead); a bounded look for anything that did
    assert not wait_for(lambda: not edge_segments(first.proc.pid), 0.5), "segments gone: nothing to test"
    (tmp_path / "second").mkdir()
    second = Edge(tmp_path / "second", {"upstream_url": upstream.url})
    try:
        assert edge_segments(first.proc.pid) == []
    finally:
        assert second.stop() == 0
