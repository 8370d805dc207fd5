"""The `edge` supervisor's tail worker: started with a `tail` config section, restarted when it dies,
stopped (flushed) with the supervisor; its policies are the proxy's unless the section names a file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from tests.proxy_fixtures import free_port
from tests.tail.tail_helpers import REPO, clean_env, drop_policy, lines_of, wait_until, write_lines, write_policy

EDGE = [sys.executable, "-m", "supervisor.main"]


def tail_workers(supervisor_pid: int) -> list[int]:
    """Pids of the supervisor's children running workers.tail."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == supervisor_pid and b"workers.tail" in cmdline:
            found.append(int(entry.name))
    return found


def policies_loaded(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_edge/policies?format=json", timeout=2) as response:
            return "drop-debug" in response.read().decode()
    except OSError:
        return False


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def start_edge(tmp_path: Path, tail: dict, providers: list[dict]) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"listen_port": port, "grpc": {"enabled": False},
                                  "upstream_url": "http://127.0.0.1:9", "workers": 1,
                                  "policy_providers": providers, "tail": tail}))
    with open(tmp_path / "edge.log", "ab") as log:
        proc = subprocess.Popen([*EDGE, str(config)], cwd=REPO, env=clean_env(), stdout=log, stderr=log)
    return proc, port


def test_supervisor_runs_restarts_and_stops_the_tail_worker(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out.log"
    logs.mkdir()
    policies = write_policy(tmp_path / "policies.json",
                            [drop_policy("drop-debug", {"log_field": "body", "contains": "DEBUG"})])
    tail = {"paths": [str(logs / "*.log")], "output": str(out), "read_from": "checkpoint",
            "state_dir": str(tmp_path / "state"), "poll_ms": 20, "flush_interval_ms": 20, "glob_interval_ms": 100}
    proc, port = start_edge(tmp_path, tail, [{"id": "f", "type": "file", "path": str(policies)}])
    try:
        assert wait_until(lambda: policies_loaded(port), 30), (tmp_path / "edge.log").read_text()
        assert wait_until(lambda: len(tail_workers(proc.pid)) == 1, 10)
        write_lines(logs / "a.log", ["a INFO 1", "a DEBUG 2", "a INFO 3"])
        assert wait_until(lambda: lines_of(out) == [b"a INFO 1", b"a INFO 3"], 15), (tmp_path / "edge.log").read_text()
        # the worker dies: the supervisor starts a new one, which resumes from its checkpoints
        (first,) = tail_workers(proc.pid)
        os.kill(first, signal.SIGKILL)
        assert wait_until(lambda: tail_workers(proc.pid) not in ([], [first]), 10)
        write_lines(logs / "b.log", ["b INFO 1", "b DEBUG 2"])
        assert wait_until(lambda: b"b INFO 1" in lines_of(out), 15), (tmp_path / "edge.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert tail_workers(proc.pid) == []
    got = lines_of(out)
    assert set(got) == {b"a INFO 1", b"a INFO 3", b"b INFO 1"}  # at least once; DEBUG lines never
    assert "tail worker exited" in (tmp_path / "edge.log").read_text()


def test_tail_section_policy_file_and_bad_section(tmp_path: Path) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out.log"
    logs.mkdir()
    write_lines(logs / "a.log", ["keep", "drop me"])
    own = write_policy(tmp_path / "own.json", [drop_policy("own", {"log_field": "body", "starts_with": "drop"})])
    tail = {"paths": [str(logs / "a.log")], "output": str(out), "read_from": "head", "policy": str(own),
            "state_dir": str(tmp_path / "state"), "flush_interval_ms": 20}
    proc, port = start_edge(tmp_path, tail, [])
    try:
        assert wait_until(lambda: lines_of(out) == [b"keep"], 30), (tmp_path / "edge.log").read_text()
        assert wait_until(lambda: healthy(port), 30)  # gunicorn up: a SIGTERM during its boot drains slowly
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    bad = {"paths": [str(logs / "a.log")], "poll_ms": -1}
    result = subprocess.run([*EDGE, str(_config(tmp_path, bad))], cwd=REPO, env=clean_env(), capture_output=True,
                            timeout=30)
    assert result.returncode == 2
    assert result.stderr.decode().strip() == "edge: config key tail.poll_ms: must be a positive integer, got -1"


def _config(tmp_path: Path, tail: dict) -> Path:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"listen_port": free_port(), "tail": tail}))
    return path
