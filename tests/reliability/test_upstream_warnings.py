"""Upstream failures are in the log, once per upstream per 10 s: never silent, never a flood.

A real `edge` (one worker, so one log line per burst) with three upstreams: nothing listening
on `upstream_url` (traces and passthrough: connect errors), `logs_url` answering 503, and
`metrics_url` holding its answers past `upstream_timeout` or answering 413. A burst of
requests to each gives the sender every answer, and the log exactly one line for the burst:
at warn for connect errors, timeouts and 5xx, at info for a 413.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pytest

from tests.reliability.harness import JSON_CT, EdgeProcess, FaultUpstream, free_port

BURST = 8
TIMEOUT = 1.0
LOGS = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hello"}}]}]}]})
METRICS = orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [
    {"name": "m", "gauge": {"dataPoints": [{"asDouble": 1.0}]}}]}]}]})


@pytest.fixture(scope="module")
def erroring() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def slow() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def closed() -> str:
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory, erroring: FaultUpstream, slow: FaultUpstream,
         closed: str) -> Iterator[EdgeProcess]:
    proc = EdgeProcess(tmp_path_factory.mktemp("warnings"), closed, workers=1, logs_url=erroring.url,
                       metrics_url=slow.url, upstream_timeout=TIMEOUT).start()
    yield proc
    assert proc.stop() == 0, proc.log()


def lines(log_path: Path, prefix: str) -> list[tuple[str, str]]:
    """(level, message) of the JSON log lines whose message starts with `prefix`."""
    out = []
    for text in log_path.read_text(errors="replace").splitlines():
        if text.startswith("{"):
            line = orjson.loads(text)
            if line.get("msg", "").startswith(prefix):
                out.append((line["level"], line["msg"]))
    return out


def burst(edge: EdgeProcess, path: str, body: bytes | None, method: str = "POST") -> list[int]:
    """BURST requests at once; their statuses."""
    with ThreadPoolExecutor(BURST) as pool:
        return list(pool.map(lambda _: edge.request(method, path, body, JSON_CT, timeout=30).status, range(BURST)))


def test_connect_errors_are_one_warning_per_burst(edge: EdgeProcess, closed: str) -> None:
    port = closed.rsplit(":", 1)[1]
    assert burst(edge, "/v1/traces", b"{}") + burst(edge, "/api/anything", None, "GET") == [502] * (2 * BURST)
    found = lines(edge.log_path, f"upstream {closed} ")
    assert len(found) == 1, found
    assert found[0][0] == "warn"
    assert found[0][1].startswith(f"upstream {closed} failed (connect): Cannot connect to host 127.0.0.1:{port} ")


def test_5xx_answers_are_relayed_and_one_warning_per_burst(edge: EdgeProcess, erroring: FaultUpstream) -> None:
    erroring.reset(status=503, body=b'{"error":"overloaded"}')
    assert burst(edge, "/v1/logs", LOGS) == [503] * BURST
    assert len(erroring.received("/v1/logs")) == BURST
    assert lines(edge.log_path, f"upstream {erroring.url} ") == [("warn", f"upstream {erroring.url} answered 503")]


def test_timeouts_are_one_warning_per_burst_and_a_413_one_info_line(edge: EdgeProcess, slow: FaultUpstream) -> None:
    release = threading.Event()
    slow.reset(hold=release)
    try:
        assert burst(edge, "/v1/metrics", METRICS) == [504] * BURST
    finally:
        release.set()
    assert lines(edge.log_path, f"upstream {slow.url} ") == [
        ("warn", f"upstream {slow.url} failed (timeout): timed out")]
    slow.reset(status=413, body=b'{"error":"too large"}')
    assert burst(edge, "/v1/metrics", METRICS) == [413] * BURST
    assert lines(edge.log_path, f"upstream {slow.url} answered 413") == [
        ("info", f"upstream {slow.url} answered 413: a request body was too large for it")]
