"""`edge-lambda`, the AWS Lambda extension, against a local Lambda Extensions API.

`FakeLambda` implements the Extensions API contract on loopback (register, event/next
handing out the events the test queues, init/error and exit/error) and records what it
receives. The real `edge-lambda` process runs against it with a real upstream, a real
policy sync server and a real S3-compatible server: Datadog logs posted while an
invocation runs are filtered, the next INVOKE uploads the s3-dump batch, and SHUTDOWN
ends in a final sync and exit status 0.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from edge.config import ProviderConfig
from edge.control.merger import PolicyMerger
from edge.control.providers import ProviderSet
from edge.lambda_extension.policies import EventDrivenPolicies
from edge.proto.tero.policy.v1 import policy_pb2 as pb
from tests.proxy_fixtures import RecordingUpstream, free_port, request
from tests.s3_fixtures import BIN, CREDENTIALS, MotoServer, create_bucket, ndjson, objects
from tests.waiting import wait_for

BASE = "/2020-01-01/extension"


@dataclass
class Call:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class FakeLambda:
    """The Lambda Extensions API: `push()` queues an event for the next `GET /event/next`."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.extension_id = str(uuid.uuid4())
        self.lock = threading.Lock()
        lam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                lam.record(self, body)
                if self.path == f"{BASE}/register":
                    self._answer(200, {"functionName": "fn", "functionVersion": "$LATEST", "handler": "h.handler"},
                                 {"Lambda-Extension-Identifier": lam.extension_id})
                elif self.path in (f"{BASE}/init/error", f"{BASE}/exit/error"):
                    self._answer(202, {"status": "OK"})
                else:
                    self._answer(404, {})

            def do_GET(self) -> None:
                lam.record(self, b"")
                if self.path != f"{BASE}/event/next":
                    self._answer(404, {})
                    return
                if self.headers.get("Lambda-Extension-Identifier") != lam.extension_id:
                    self._answer(403, {"errorMessage": "unknown extension"})
                    return
                try:
                    event = lam.events.get(timeout=30)  # bounded: a test that forgets SHUTDOWN still ends
                except queue.Empty:
                    self._answer(500, {"errorMessage": "no event queued"})
                    return
                self._answer(200, event)

            def _answer(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def record(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self.lock:
            self.calls.append(Call(handler.command, handler.path, dict(handler.headers.items()), body))

    def calls_to(self, suffix: str) -> list[Call]:
        with self.lock:
            return [c for c in self.calls if c.path == BASE + suffix]

    def wait_next_calls(self, count: int, timeout: float = 20.0) -> None:
        """Until the extension has asked for its `count`-th event (it finished handling the one before)."""
        assert wait_for(lambda: len(self.calls_to("/event/next")) >= count, timeout), (
            f"the extension never asked for event {count}")

    def push(self, event_type: str, **fields: Any) -> None:
        self.events.put({"eventType": event_type, **fields})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class SyncServer:
    """A policy server (JSON sync protocol) recording every SyncRequest it receives."""

    def __init__(self, policies: list[dict]) -> None:
        self.policies = policies
        self.requests: list[tuple[float, pb.SyncRequest, dict[str, str]]] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with server.lock:
                    server.requests.append((time.monotonic(), json_format.Parse(body, pb.SyncRequest()),
                                            dict(self.headers.items())))
                answer = json.dumps({"policies": server.policies, "hash": "h1"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/policy/sync"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def hits(self, policy_id: str) -> int:
        with self.lock:
            return sum(s.match_hits for _, r, _ in self.requests for s in r.policy_statuses if s.id == policy_id)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ── fixtures ──


@pytest.fixture
def lam() -> Iterator[FakeLambda]:
    api = FakeLambda()
    yield api
    api.close()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    server = MotoServer().start()
    yield server.url
    server.stop()


def start_extension(tmp: Path, lam: FakeLambda, **env: str) -> tuple[subprocess.Popen, Path]:
    log_path = tmp / "edge-lambda.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(BIN / "edge-lambda")], stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "AWS_LAMBDA_RUNTIME_API": lam.address, **env})
    return proc, log_path


def stop(proc: subprocess.Popen, timeout: float = 15.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise


DROP_DEBUG = {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"},
              "extensions": [{"type": "com.usetero/s3-dump", "mode": "dropped"}]}


# ── the lifecycle ──


def test_invocations_filter_flush_and_shutdown_syncs(tmp_path: Path, lam: FakeLambda, upstream: RecordingUpstream,
                                                     s3_url: str) -> None:
    sync = SyncServer([DROP_DEBUG])
    bucket = create_bucket(s3_url)
    port = free_port()
    providers = [{"id": "tero", "type": "http", "url": sync.url, "poll_interval": 600,
                  "headers": [{"name": "Authorization", "value": "Bearer ${TERO_API_KEY}"}]}]
    proc, log_path = start_extension(
        tmp_path, lam, TERO_LISTEN_PORT=str(port), TERO_UPSTREAM_URL=upstream.url, TERO_API_KEY="k-123",
        TERO_SERVICE_NAME="checkout-fn", TERO_POLICY_PROVIDERS=json.dumps(providers),
        TERO_S3_DUMP_ENABLED="true", TERO_S3_DUMP_FLUSH_INTERVAL_MS="600000",
        TERO_S3_DUMP_TARGETS=json.dumps([{"name": "archive", "endpoint": s3_url, "bucket": bucket}]), **CREDENTIALS)
    try:
        lam.wait_next_calls(1)  # init done: registered, listening, policies loaded
        register = lam.calls_to("/register")[0]
        assert register.headers["Lambda-Extension-Name"] == "edge-lambda"
        assert json.loads(register.body) == {"events": ["INVOKE", "SHUTDOWN"]}
        assert lam.calls_to("/event/next")[0].headers["Lambda-Extension-Identifier"] == lam.extension_id
        assert request(port, "GET", "/_health").status == 200
        first_sync = sync.requests[0]
        assert first_sync[2]["Authorization"] == "Bearer k-123"
        assert "com.usetero/s3-dump" in [e.type for e in first_sync[1].client_metadata.supported_extensions]
        assert json.loads(request(port, "GET", "/_edge/policies").body)["policies"][0]["id"] == "drop-debug"

        lam.push("INVOKE", requestId="r-1", deadlineMs=int(time.time() * 1000) + 30_000)
        lam.wait_next_calls(2)
        # the function sends its logs while it runs
        logs = [{"message": "cache miss", "status": "debug", "service": "checkout"},
                {"message": "order placed", "status": "info", "service": "checkout"},
                {"message": "retrying", "status": "debug", "service": "checkout", "attempt": 2}]
        reply = request(port, "POST", "/api/v2/logs", body=json.dumps(logs).encode(),
                        headers={"Content-Type": "application/json", "DD-API-KEY": "dd-secret"})
        assert reply.status == 200
        forwarded = upstream.received("/api/v2/logs")
        assert len(forwarded) == 1 and forwarded[0].header("DD-API-KEY") == "dd-secret"
        assert [entry["message"] for entry in json.loads(forwarded[0].body)] == ["order placed"]
        assert objects(s3_url, bucket) == {}  # batched: the flush interval is ten minutes

        lam.push("INVOKE", requestId="r-2", deadlineMs=int(time.time() * 1000) + 30_000)
        lam.wait_next_calls(3)  # INVOKE handled: the dropped records are in the bucket before we may be frozen
        lines = ndjson(objects(s3_url, bucket))
        assert [line["record"] for line in lines] == [logs[0], logs[2]]
        assert {(line["signal"], line["policy_id"]) for line in lines} == {("log", "drop-debug")}
        assert sync.hits("drop-debug") == 0  # not due yet: the statistics wait for the final sync

        shutdown_at = time.monotonic()
        lam.push("SHUTDOWN", shutdownReason="spindown", deadlineMs=int(time.time() * 1000) + 2000)
        assert stop(proc) == 0
        assert time.monotonic() - shutdown_at < 3.0  # Lambda allows 2 s; the process aims at the deadline
    finally:
        if proc.poll() is None:
            proc.kill()
        sync.close()
    final_at, final, _ = sync.requests[-1]
    assert final_at > shutdown_at
    assert [(s.id, s.match_hits) for s in final.policy_statuses] == [("drop-debug", 2)]
    assert sync.hits("drop-debug") == 2
    assert lam.calls_to("/init/error") == [] and lam.calls_to("/exit/error") == []
    log = log_path.read_text()
    assert "k-123" not in log and "dd-secret" not in log and CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in log


def test_bad_config_is_an_init_error(tmp_path: Path, lam: FakeLambda) -> None:
    """A bad TERO_* value: POST /init/error with the error type, one line on stderr, non-zero exit."""
    proc, log_path = start_extension(tmp_path, lam, TERO_LISTEN_PORT=str(free_port()),
                                     TERO_POLICY_PROVIDERS='[{"type": "http", "url": "not a url"}]')
    assert stop(proc) == 2
    errors = lam.calls_to("/init/error")
    assert len(errors) == 1
    assert errors[0].headers["Lambda-Extension-Function-Error-Type"] == "Extension.ConfigInvalid"
    assert errors[0].headers["Lambda-Extension-Identifier"] == lam.extension_id
    assert "policy_providers[0].url" in json.loads(errors[0].body)["errorMessage"]
    output = log_path.read_text()
    assert output.count("\n") == 1 and output.startswith("edge-lambda: config key policy_providers[0].url")
    assert lam.calls_to("/event/next") == []


def test_port_in_use_is_an_init_error(tmp_path: Path, lam: FakeLambda) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc, log_path = start_extension(tmp_path, lam, TERO_LISTEN_PORT=str(taken.getsockname()[1]))
        assert stop(proc) == 1
    errors = lam.calls_to("/init/error")
    assert [e.headers["Lambda-Extension-Function-Error-Type"] for e in errors] == ["Extension.StartFailed"]
    assert "Traceback" not in log_path.read_text()


def test_sigterm_while_waiting_stops_cleanly(tmp_path: Path, lam: FakeLambda, upstream: RecordingUpstream) -> None:
    """Outside Lambda (a local run), SIGTERM while waiting for an event stops like SHUTDOWN: exit 0."""
    port = free_port()
    proc, _ = start_extension(tmp_path, lam, TERO_LISTEN_PORT=str(port), TERO_UPSTREAM_URL=upstream.url)
    try:
        lam.wait_next_calls(1)
        assert request(port, "POST", "/api/v2/logs", body=b'[{"message": "m"}]',
                       headers={"Content-Type": "application/json"}).status == 200
        proc.terminate()
        assert stop(proc) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    with pytest.raises(OSError):
        request(port, "GET", "/_health", timeout=1)


def test_policy_servers_are_synced_on_invoke_only_when_due() -> None:
    """Between start-up and the final sync, an INVOKE syncs a policy server once its interval has passed."""
    sync = SyncServer([DROP_DEBUG])
    now = [1000.0]
    published: list[list[str]] = []
    try:
        config = ProviderConfig("tero", "http", url=sync.url, poll_interval=60)
        merger = PolicyMerger(lambda policies, version: published.append([p.id for p in policies]), [config])
        policies = EventDrivenPolicies(ProviderSet([config], merger), clock=lambda: now[0])
        policies.refresh(force=True)
        assert len(sync.requests) == 1 and published == [["drop-debug"]]
        now[0] += 59
        policies.refresh()
        assert len(sync.requests) == 1
        now[0] += 2
        policies.refresh()
        assert len(sync.requests) == 2
        assert policies.final_sync(2.0) and len(sync.requests) == 3
    finally:
        sync.close()
