"""`edge validate [CONFIG]` and `edge --dry-run [CONFIG]`: the real command, real files, a real policy server.

The check starts nothing: the tests hold the configured listen port themselves (a start would
fail on it) and look for shared memory left under the command's pid.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.proxy_fixtures import free_port
from tests.reliability.harness import EDGE_SCRIPT, SUITE_POLICIES, PolicyServer

UPSTREAM = "http://127.0.0.1:9"
UPSTREAMS = f"upstreams: logs {UPSTREAM}, metrics {UPSTREAM}, traces {UPSTREAM}, prometheus scrapes {UPSTREAM}/metrics"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port something else listens on: a real start would fail there, a check must not care."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.fixture
def policy_server() -> Iterator[PolicyServer]:
    server = PolicyServer(free_port(), SUITE_POLICIES[:1]).start()
    yield server
    server.stop()


def check(tmp: Path, config: dict[str, Any], *command: str) -> tuple[int, list[str]]:
    path = tmp / "config.json"
    path.write_text(json.dumps(config))
    result = subprocess.run([str(EDGE_SCRIPT), *command, str(path)], capture_output=True, text=True, timeout=60)
    assert result.stderr == ""
    assert not [n for n in os.listdir("/dev/shm") if n.startswith(f"edge-{os.getpid()}-")]
    return result.returncode, result.stdout.splitlines()


@pytest.mark.parametrize("command", [["validate"], ["--dry-run"]])
def test_a_good_config_is_summarised_and_exits_0(tmp_path: Path, held_port: int, policy_server: PolicyServer,
                                                 command: list[str]) -> None:
    policies = tmp_path / "policies.json"
    policies.write_text(json.dumps({"policies": SUITE_POLICIES}))
    code, lines = check(tmp_path, {"listen_port": held_port, "workers": 3, "upstream_url": UPSTREAM,
                                   "policy_providers": [{"id": "suite", "type": "file", "path": str(policies)},
                                                        {"id": "server", "type": "http", "url": policy_server.url}]},
                        *command)
    assert lines == [f"config: {tmp_path / 'config.json'}", f"listen: 127.0.0.1:{held_port}", "workers: 3", UPSTREAMS,
                     f"provider suite (file {policies}): 3 policies",
                     f"provider server (http {policy_server.url}): 1 policies", "result: ok"]
    assert code == 0
    assert policy_server.requests == 1


def test_every_problem_is_listed_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text(json.dumps({"policies": [
        {"id": "a", "log": {"match": [{"log_field": "body", "regex": "("}], "keep": "none"}},
        {"id": "b", "log": {"kep": "none"}}]}))
    (tmp_path / "broken.json").write_text('{"policies": [\n')
    down = free_port()
    code, lines = check(tmp_path, {"workers": 1, "upstream_url": UPSTREAM, "policy_providers": [
        {"id": "bad", "type": "file", "path": str(tmp_path / "bad.json")},
        {"id": "broken", "type": "file", "path": str(tmp_path / "broken.json")},
        {"id": "gone", "type": "file", "path": str(tmp_path / "gone.json")},
        {"id": "down", "type": "http", "url": f"http://user:secret@127.0.0.1:{down}/sync"}]}, "validate")
    assert lines[4:] == [
        f"provider bad (file {tmp_path / 'bad.json'}): 1 policies",
        "    error: policy b: unknown key 'log.kep' (did you mean 'keep'?)",
        "    error: policy a: log: match[0]: invalid regex \"(\": missing ): (",
        f"provider broken (file {tmp_path / 'broken.json'}): error: {tmp_path / 'broken.json'}: neither JSON nor YAML "
        "(JSON error at line 2, column 1: unexpected end of data)",
        f"provider gone (file {tmp_path / 'gone.json'}): error: cannot read {tmp_path / 'gone.json'}: "
        "No such file or directory",
        f"provider down (http http://***@127.0.0.1:{down}/sync): unreachable, edge would start without it and "
        "retry: policy server unreachable: [Errno 111] Connection refused",
        "result: 3 problem(s)"]
    assert code == 2


def test_no_providers_is_said_and_a_bad_key_exits_2(tmp_path: Path) -> None:
    code, lines = check(tmp_path, {"upstream_url": UPSTREAM, "workers": 1}, "validate")
    assert lines[4:] == ["providers: none: everything passes unfiltered", "result: ok"] and code == 0
    code, lines = check(tmp_path, {"listen_port": 70000}, "--dry-run")
    assert lines == [f"config: {tmp_path / 'config.json'}",
                     "error: config key listen_port: expected 0..65535, got 70000"]
    assert code == 2
