"""Security basics: linear-time regexes, secrets kept out of logs and admin answers, verified TLS."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge.engine.engine import Engine
from edge.formats.otlp.body import evaluate
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from tests.reliability.harness import (
    SUITE_POLICIES,
    EdgeProcess,
    FaultUpstream,
    PolicyServer,
    free_port,
    otlp_document,
    wait_for,
)

CATASTROPHIC = [
    {"id": "backtrack-body", "name": "nested quantifier",
     "log": {"match": [{"log_field": "body", "regex": "(a+)+$"}], "keep": "none"}},
    {"id": "backtrack-attr", "name": "alternation blow-up",
     "log": {"match": [{"log_attribute": "user", "regex": "^(a|aa)+$"}], "keep": "none"}},
    {"id": "backtrack-redact", "name": "redact with nested quantifier",
     "log": {"match": [{"log_field": "body", "contains": "x"}], "keep": "all",
             "transform": {"redact": [{"log_field": "body", "regex": "(x+x+)+y", "replacement": "R"}]}}},
]
EVIL = "a" * 50_000 + "b"
LINEAR_BOUND_S = 20.0  # a hang bound: linear matching takes milliseconds, backtracking takes forever


def evil_batch() -> bytes:
    return orjson.dumps(otlp_document("log", [
        {"severityText": "INFO", "body": {"stringValue": EVIL}},
        {"severityText": "INFO", "body": {"stringValue": "aaaa"}},
        {"severityText": "INFO", "body": {"stringValue": "x" * 30_000},
         "attributes": [{"key": "user", "value": {"stringValue": EVIL}}]},
    ]))


# ── regexes run in linear time ──


def test_catastrophic_patterns_evaluate_in_linear_time() -> None:
    loaded = load_document({"policies": CATASTROPHIC})
    snapshot = compile_policies(loaded.policies)
    assert not loaded.errors and not snapshot.errors()
    engine = Engine(snapshot)
    started = time.perf_counter()
    result = evaluate(engine, "log", evil_batch(), "application/json")
    elapsed = time.perf_counter() - started
    bodies = [r["body"]["stringValue"] for r in otlp_records(result.body)]
    assert bodies == [EVIL, "x" * 30_000], "(a+)+$ matched only 'aaaa'; the redaction found no y"
    # A backtracking (or even quadratic) engine takes minutes to forever on 50 000 a's: the bound
    # catches that, it is no speed mark (benchmarks/engine.py measures speed).
    assert elapsed < LINEAR_BOUND_S, f"{elapsed:.2f} s: a regex backtracked"


def otlp_records(body: bytes) -> list[dict[str, Any]]:
    doc = orjson.loads(body)
    return [r for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]


# ── one proxy at debug level with secrets everywhere ──

ENV_SECRET = "env-secret-7f3a9c"
PROVIDER_SECRET = "provider-secret-51de"
CLIENT_SECRETS = {"DD-API-KEY": "dd-secret-0a1b2c", "Authorization": "Bearer client-secret-9z8y",
                  "X-Api-Key": "xapi-secret-4242"}


@pytest.fixture(scope="module")
def secret_server() -> Iterator[PolicyServer]:
    server = PolicyServer(free_port(), [*SUITE_POLICIES, *CATASTROPHIC]).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def secret_edge(upstream: FaultUpstream, secret_server: PolicyServer,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    server = secret_server
    edge = EdgeProcess(tmp_path_factory.mktemp("secrets"), upstream.url, log_level="debug", upstream_timeout=1.0,
                       env={"EDGE_TEST_SECRET": ENV_SECRET},
                       policies=[*SUITE_POLICIES, *CATASTROPHIC],
                       policy_providers=[{"id": "srv", "type": "http", "poll_interval": 1,
                                          "url": f"http://127.0.0.1:{server.port}/v1/policy/sync",
                                          "headers": [{"name": "Authorization", "value": "Bearer ${EDGE_TEST_SECRET}"},
                                                      {"name": "X-Tenant-Key", "value": PROVIDER_SECRET}]}])
    try:
        yield edge.start()
    finally:
        assert edge.stop() == 0


def test_catastrophic_patterns_through_the_proxy(secret_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    upstream.reset()
    # a backtracking worker would never answer: the request's own timeout is the hang bound
    reply = secret_edge.request("POST", "/v1/logs", evil_batch(), {"Content-Type": "application/json"}, timeout=20)
    assert reply.status == 200
    [got] = upstream.received("/v1/logs")
    assert [r["body"]["stringValue"] for r in otlp_records(got.body)] == [EVIL, "x" * 30_000]


def test_secrets_never_reach_logs_or_admin_routes(secret_edge: EdgeProcess, secret_server: PolicyServer,
                                                  upstream: FaultUpstream) -> None:
    good = orjson.dumps(otlp_document("log", [{"severityText": "INFO", "body": {"stringValue": "hello"}}]))
    cases: list[tuple[dict[str, Any], str, bytes, dict[str, str]]] = [
        ({}, "/v1/logs", good, {"Content-Type": "application/json"}),
        ({}, "/v1/logs", b"{not json", {"Content-Type": "application/json"}),
        ({}, "/v1/logs", b"\x00\x01junk", {"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"}),
        ({"status": 503, "headers": {"Retry-After": "3"}}, "/v1/metrics", good, {}),
        ({"delay": 2.0}, "/v1/traces", good, {}),
        ({"close": True}, "/api/v2/logs", b"[]", {}),
        ({}, "/passthrough/path?q=1", b"", {}),
    ]
    for behaviour, path, body, headers in cases:
        upstream.reset(**behaviour)
        secret_edge.request("POST", path, body, {**headers, **CLIENT_SECRETS})
    upstream.reset()
    secret_edge.request("POST", "/v1/logs", good, {"Content-Type": "application/json", **CLIENT_SECRETS})
    forwarded = upstream.received("/v1/logs")[0]
    assert forwarded.header("dd-api-key") == CLIENT_SECRETS["DD-API-KEY"], "API keys must still be forwarded"
    syncs = secret_server.requests
    assert wait_for(lambda: secret_server.requests >= syncs + 2, 20)  # a sync or two with the secret headers
    answers = b"".join(secret_edge.request("GET", p).body for p in ("/_health", "/_edge/policies",
                                                                    "/_edge/policies?format=json", "/_edge/metrics"))
    log = secret_edge.log_path.read_bytes()
    assert b'"level":"debug"' in log, "the proxy must log at debug level for this test to mean anything"
    for secret in [ENV_SECRET, PROVIDER_SECRET, *CLIENT_SECRETS.values()]:
        token = secret.split()[-1].encode()
        assert token not in log, f"{secret} leaked into the log"
        assert token not in answers, f"{secret} leaked into an admin answer"


# ── upstream TLS is verified by default ──


def self_signed(directory: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TlsUpstream:
    """An HTTPS server on loopback with a self-signed certificate, counting what it receives."""

    def __init__(self, cert: Path, key: Path) -> None:
        owner = self
        self.bodies: list[bytes] = []

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                owner.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.parametrize("skip_verify", [False, True], ids=["verified", "insecure-skip-verify"])
def test_self_signed_upstream_is_refused_unless_configured(tmp_path: Path, skip_verify: bool) -> None:
    cert, key = self_signed(tmp_path)
    tls = TlsUpstream(cert, key)
    edge = EdgeProcess(tmp_path, tls.url, policies=[], tls_insecure_skip_verify=skip_verify)
    edge.config["policy_providers"] = []
    try:
        edge.start()
        body = json.dumps(otlp_document("log", [{"body": {"stringValue": "tls"}}])).encode()
        reply = edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
        if skip_verify:
            assert reply.status == 200 and tls.bodies == [body]
        else:
            assert reply.status == 502 and tls.bodies == []
    finally:
        assert edge.stop() == 0
        tls.close()
