"""SIGKILL of the supervisor: every child dies with it, and a new edge starts on the same port at once.

Found against a running proxy: gunicorn and its workers went on serving with frozen policies,
a new edge failed with "Address already in use", and the orphans died only later, when a
worker restart found the shared memory gone.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil

from tests.reliability.harness import EdgeProcess, FaultUpstream, wait_for


def _alive(pids: list[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            continue
    return out


def test_children_die_with_a_killed_supervisor_and_a_restart_succeeds(tmp_path: Path) -> None:
    upstream = FaultUpstream().start()
    logs = tmp_path / "logs"
    logs.mkdir()
    tail = {"paths": [str(logs / "*.log")], "output": str(tmp_path / "out.log"), "state_dir": str(tmp_path / "state")}
    first = EdgeProcess(tmp_path / "first", upstream.url, workers=2, tail=tail)
    (tmp_path / "first").mkdir()
    try:
        first.start()
        # gunicorn, its 2 workers and the tail worker
        assert wait_for(lambda: len(psutil.Process(first.pid).children(recursive=True)) >= 4, 20)
        children = [p.pid for p in psutil.Process(first.pid).children(recursive=True)]
        os.kill(first.pid, signal.SIGKILL)
        first.proc.wait(5)
        assert wait_for(lambda: not _alive(children), 20), f"orphans still running: {_alive(children)}"

        (tmp_path / "second").mkdir()
        second = EdgeProcess(tmp_path / "second", upstream.url, workers=2, listen_port=first.port)
        second.port, second.base = first.port, first.base
        second.start()
        assert first.shm_segments() == [], "the killed instance's shared memory was not reclaimed"
        assert second.request("POST", "/v1/logs", b"{\"resourceLogs\": []}",
                              {"Content-Type": "application/json"}).status == 200
        assert second.stop() == 0
    finally:
        if first.proc is not None and first.proc.poll() is None:
            first.proc.kill()
        upstream.stop()
