"""The policy file provider against what can appear at its path or in its directory, on a real edge.

Found against a running proxy: a FIFO at the policy path wedged the provider in `open()`
forever, silently, so a valid file put back later was never loaded; with `log_level: debug`
and stderr written into the policy file's directory, every log line caused a watcher event
that was logged again (170 KB/s of log and 30% CPU with no traffic).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.reliability.harness import EdgeProcess, FaultUpstream, wait_for

DROP_DEBUG = {"id": "drop-debug", "name": "drop debug",
              "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}
DROP_TRACE = {"id": "drop-trace", "name": "drop trace",
              "log": {"match": [{"log_field": "severity_text", "exact": "TRACE"}], "keep": "none"}}


def _ids(edge: EdgeProcess) -> set[str]:
    return {p["id"] for p in edge.policy_doc().get("policies") or []}


def test_a_fifo_at_the_policy_path_is_refused_and_a_file_put_back_is_loaded(tmp_path: Path) -> None:
    upstream = FaultUpstream().start()
    edge = EdgeProcess(tmp_path, upstream.url, policies=[DROP_DEBUG], workers=1)
    try:
        edge.start()
        fifo = tmp_path / "swap.fifo"
        os.mkfifo(fifo)
        fifo.replace(edge.policy_file)  # nobody ever writes to it: opening it for reading would block
        assert wait_for(lambda: "not a regular file" in edge.log(), 15), edge.log()
        assert _ids(edge) == {"drop-debug"}  # the last good policies stay
        edge.write_policies([DROP_DEBUG, DROP_TRACE])
        assert wait_for(lambda: _ids(edge) == {"drop-debug", "drop-trace"}, 15), edge.log()
        assert edge.healthy()
    finally:
        edge.stop()
        upstream.stop()


def test_debug_logging_into_the_policy_directory_does_not_feed_itself(tmp_path: Path) -> None:
    upstream = FaultUpstream().start()
    edge = EdgeProcess(tmp_path, upstream.url, policies=[DROP_DEBUG], workers=1, log_level="debug")
    assert edge.log_path.parent == edge.policy_file.parent  # stderr goes into the watched directory
    try:
        edge.start()
        assert wait_for(lambda: _ids(edge) == {"drop-debug"}, 15)
        size = edge.log_path.stat().st_size
        started = time.monotonic()
        wait_for(lambda: edge.log_path.stat().st_size - size > 64 << 10, 3.0)  # a loop writes this in well under 1 s
        grown = edge.log_path.stat().st_size - size
        elapsed = time.monotonic() - started
        assert grown < 16 << 10, f"the log grew by {grown} bytes in {elapsed:.1f} s without traffic"
    finally:
        edge.stop()
        upstream.stop()
