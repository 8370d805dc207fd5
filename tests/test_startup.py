"""The `edge` process starting up: listening errors, the ready line, provider messages, JSON lines.

Everything runs the real `edge` console script on loopback with a real upstream; messages an
operator reads are asserted word for word.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from edge import __version__
from edge.config import ProviderConfig
from edge.control.http_provider import HttpProvider
from edge.policy.sync import SyncClient
from supervisor.listener import bind_listener
from tests.proxy_fixtures import RecordingUpstream, free_port, request
from tests.reliability.harness import EDGE_SCRIPT, SUITE_POLICIES, PolicyServer
from tests.waiting import wait_for

DOCUMENTED_LEVELS = {"trace", "debug", "info", "warn", "err"}  # docs/configuration.md, `log_level`
LOGS_BODY = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"severityText": "INFO", "body": {"stringValue": "x"}}]}]}]})


class Edge:
    """`edge CONFIG` with stdout and stderr in one file, JSON lines parsed on demand."""

    def __init__(self, tmp: Path, config: dict[str, Any], env: dict[str, str] | None = None) -> None:
        self.port = config.setdefault("listen_port", free_port())
        config.setdefault("workers", 1)
        self.config_path = tmp / "config.json"
        self.config_path.write_text(json.dumps(config))
        self.log_path = tmp / "edge.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(EDGE_SCRIPT), str(self.config_path)], stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def lines(self) -> list[dict[str, Any]]:
        """Every line as JSON (a line that is not JSON fails the test, naming it)."""
        out = []
        for line in self.text().splitlines():
            try:
                out.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                pytest.fail(f"not a JSON log line: {line!r}")
        return out

    def messages(self, logger: str | None = None) -> list[str]:
        return [e["msg"] for e in self.lines() if logger is None or e["logger"] == logger]

    def wait_ready(self) -> str:
        """The ready line, once logged (fails at once when edge exited)."""
        found: list[str] = []

        def ready() -> bool:
            assert self.proc.poll() is None, f"edge exited early:\n{self.text()}"
            found[:] = [m for m in self.messages("edge.supervisor") if " ready on " in m]
            return bool(found)

        assert wait_for(ready, 60, 0.1), f"no ready line:\n{self.text()}"
        return found[0]

    def healthy(self) -> bool:
        assert self.proc.poll() is None, f"edge exited early:\n{self.text()}"
        try:
            return request(self.port, "GET", "/_health", timeout=2).status == 200
        except OSError:
            return False

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise


@pytest.fixture
def started() -> Iterator[list[Edge]]:
    """Edges a test started: stopped at the end whatever happened."""
    edges: list[Edge] = []
    yield edges
    for edge in edges:
        edge.stop()


def run_edge(tmp: Path, config: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp / "config.json"
    path.write_text(json.dumps({"workers": 1, **config}))
    return subprocess.run([str(EDGE_SCRIPT), str(path)], capture_output=True, text=True, timeout=60)


def single_error_line(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The run printed exactly one line, a JSON error line, and nothing about listening or being ready."""
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) == 1, lines
    entry = orjson.loads(lines[0])
    assert entry["level"] == "err" and entry["logger"] == "edge.supervisor"
    return entry


# ── 2: listening errors before anything starts ──


def test_port_in_use_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_edge(tmp_path, {"listen_port": port})
    assert result.returncode == 2
    assert single_error_line(result)["msg"] == (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (config key listen_port)")


def test_connections_are_refused_until_gunicorn_listens() -> None:
    """The supervisor only binds: a sender connecting before the workers' master listens is refused and
    retries, instead of waiting in the backlog while workers boot (and being served after its timeout)."""
    with bind_listener("127.0.0.1", 0) as bound:
        port = bound.getsockname()[1]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        bound.listen()
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


@pytest.mark.parametrize(("address", "message"), [
    ("192.0.2.1", "cannot listen on 192.0.2.1:{port}: 192.0.2.1 is not an address of this host "
                  "(config key listen_address)"),
    ("300.1.1.1", "config key listen_address: cannot listen on '300.1.1.1': Name or service not known"),
])
def test_invalid_listen_address_is_one_error_line_and_exit_2(tmp_path: Path, address: str, message: str) -> None:
    port = free_port()
    result = run_edge(tmp_path, {"listen_address": address, "listen_port": port})
    assert result.returncode == 2
    assert single_error_line(result)["msg"] == message.format(port=port)
    assert not [n for n in os.listdir("/dev/shm") if n.startswith("edge-") and "-rl" in n and str(port) in n]


# ── 3: the ready line ──


def test_ready_line_names_address_workers_upstreams_and_policies(tmp_path: Path, started: list[Edge]) -> None:
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": SUITE_POLICIES}))
    grpc_port = free_port()
    edge = Edge(tmp_path, {"workers": 2, "upstream_url": "http://127.0.0.1:9", "logs_url": "http://127.0.0.1:10",
                           "metrics_url": "http://127.0.0.1:11/prom", "grpc": {"listen_port": grpc_port},
                           "policy_providers": [{"id": "suite", "type": "file", "path": str(policy_file)}]})
    started.append(edge)
    line = edge.wait_ready()
    assert line == (f"edge {__version__} ready on 127.0.0.1:{edge.port}: 2 workers, distribution edge, "
                    f"OTLP/gRPC on 127.0.0.1:{grpc_port}; "
                    "upstreams: logs http://127.0.0.1:10, metrics http://127.0.0.1:11/prom, traces http://127.0.0.1:9, "
                    "prometheus scrapes http://127.0.0.1:11/prom/metrics; policies: 3 in force from suite (file)")
    assert request(edge.port, "GET", "/_health").status == 200
    assert not [m for m in edge.messages() if "listening on" in m]  # the old line, logged before anything listened
    assert edge.stop() == 0


def test_port_0_names_the_port_the_system_chose(tmp_path: Path, started: list[Edge]) -> None:
    edge = Edge(tmp_path, {"listen_port": 0, "upstream_url": "http://127.0.0.1:9"})
    started.append(edge)
    line = edge.wait_ready()
    port = int(line.split(" ready on 127.0.0.1:")[1].split(":")[0])
    assert port > 0 and request(port, "GET", "/_health").status == 200
    assert edge.stop() == 0


# ── 4: what a provider says when it has nothing in force ──


def test_missing_policy_file_at_start_says_nothing_is_filtered(tmp_path: Path, started: list[Edge]) -> None:
    missing = tmp_path / "later.json"
    edge = Edge(tmp_path, {"upstream_url": "http://127.0.0.1:9",
                           "policy_providers": [{"id": "later", "type": "file", "path": str(missing)}]})
    started.append(edge)
    line = edge.wait_ready()
    assert line.endswith("; policies: none in force yet from later (file) "
                         "(everything passes unfiltered until some are)")
    errors = [e for e in edge.lines() if e["logger"] == "edge.providers" and e["level"] == "err"]
    assert [e["msg"] for e in errors] == [f"policy provider later: cannot read {missing}: No such file or directory; "
                                          "nothing is filtered until it appears"]
    assert "keeping the last good policies" not in edge.text()
    missing.write_text(json.dumps({"policies": SUITE_POLICIES[:1]}))
    assert wait_for(lambda: f"policy provider later: loaded 1 policies from {missing}" in edge.messages())
    missing.unlink()  # now there are good policies to keep
    assert wait_for(lambda: f"policy provider later: cannot read {missing}: No such file or directory; keeping the "
                            "last good policies" in edge.messages())
    assert edge.stop() == 0


def test_policy_server_down_says_what_is_in_force(caplog: pytest.LogCaptureFixture) -> None:
    """Before a first answer nothing of the server's is in force; after one, its policies are kept."""
    server = PolicyServer(free_port(), SUITE_POLICIES[:2])
    provider = HttpProvider(ProviderConfig("s", "http", url=server.url), lambda _id, _policies: None,
                            rng=random.Random(0))
    with caplog.at_level(logging.WARNING, "edge.providers"):
        assert not provider.sync_once()
        server.start()
        try:
            assert provider.sync_once()
        finally:
            server.stop()
        assert not provider.sync_once()
    refused = "policy provider s: sync failed: policy server unreachable: [Errno 111] Connection refused; "
    assert [r.getMessage().split(", retry in ")[0] for r in caplog.records] == [
        refused + "nothing is filtered until it answers", refused + "keeping the last good policies"]


# ── 5 and 7: every line JSON at every level, level names as documented ──


@pytest.mark.parametrize("level", ["debug", "trace"])
def test_every_line_is_json_at_low_levels(tmp_path: Path, started: list[Edge], level: str) -> None:
    upstream = RecordingUpstream().start()
    try:
        edge = Edge(tmp_path, {"upstream_url": upstream.url, "log_level": level})
        started.append(edge)
        edge.wait_ready()
        assert request(edge.port, "POST", "/v1/logs", LOGS_BODY, {"Content-Type": "application/json"}).status == 200
        assert edge.stop() == 0
    finally:
        upstream.stop()
    entries = edge.lines()  # fails on the first line that is not JSON
    assert {e["level"] for e in entries} <= DOCUMENTED_LEVELS
    gunicorn = [e["msg"] for e in entries if e["logger"] == "gunicorn.error"]
    assert any(m.startswith("Booting worker with pid: ") for m in gunicorn), gunicorn
    assert any(m.startswith("Current configuration:") for m in gunicorn)  # its config dump, at debug
    assert any(m.startswith("Worker exiting (pid: ") for m in gunicorn)
    assert "no policy providers configured: everything passes unfiltered" in edge.messages("edge.supervisor")
    assert not [e for e in entries if e["logger"].startswith("watchdog")]


def test_warnings_carry_the_documented_level_name(tmp_path: Path, started: list[Edge]) -> None:
    edge = Edge(tmp_path, {"upstream_url": "http://127.0.0.1:9", "log_level": "warning", "no_such_key": 1})
    started.append(edge)
    assert wait_for(lambda: edge.healthy(), 60, 0.1), edge.text()  # no ready line at this level: it is info
    assert edge.stop() == 0
    warnings = [e for e in edge.lines() if e["msg"] == "config key no_such_key: unknown, ignored"]
    assert [e["level"] for e in warnings] == ["warn"]


# ── 7: workspace_id reaches the policy server ──


def resource_attributes(body: bytes) -> dict[str, str]:
    attributes = orjson.loads(body)["clientMetadata"]["resourceAttributes"]
    return {a["key"]: a["value"]["stringValue"] for a in attributes}


@pytest.mark.parametrize(("config", "env"), [({"workspace_id": "ws-from-file"}, {}),
                                             ({"workspace_id": "ws-from-file"}, {"TERO_WORKSPACE_ID": "ws-from-env"})])
def test_workspace_id_is_sent_with_every_sync_request(tmp_path: Path, started: list[Edge], config: dict[str, Any],
                                                      env: dict[str, str]) -> None:
    server = PolicyServer(free_port(), SUITE_POLICIES[:1]).start()
    try:
        edge = Edge(tmp_path, {"upstream_url": "http://127.0.0.1:9", **config,
                               "policy_providers": [{"id": "server", "type": "http", "url": server.url}]}, env)
        started.append(edge)
        assert edge.wait_ready().endswith("; policies: 1 in force from server (http)")
        assert wait_for(lambda: server.requests >= 2)  # the first sync and a later one
    finally:
        server.stop()
    expected = env.get("TERO_WORKSPACE_ID", config["workspace_id"])
    assert {resource_attributes(body).get("workspace.id") for _, _, body in server.seen} == {expected}


def test_no_workspace_id_sends_no_attribute(tmp_path: Path) -> None:
    server = PolicyServer(free_port(), []).start()
    try:
        SyncClient(server.url, service={"name": "n"}).sync([])
    finally:
        server.stop()
    assert resource_attributes(server.seen[0][2]) == {"service.name": "n", "service.version": __version__}


def test_sigterm_during_start_up_exits_0_and_leaves_no_shared_memory(tmp_path: Path, started: list[Edge]) -> None:
    """The stop handlers are installed before anything is created: a stop at the first line goes through shutdown."""
    edge = Edge(tmp_path, {"upstream_url": "http://127.0.0.1:9"})
    started.append(edge)
    assert wait_for(lambda: edge.text().strip(), 60, 0.01), "edge logged nothing"
    assert edge.stop() == 0, edge.text()
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"edge-{edge.proc.pid}-")]
