"""Upstream faults against a real `edge`: refused, hanging, resetting mid-answer, erroring, dribbling.

Whatever the upstream does, the sender gets a clear status (502 unreachable or broken, 504 too
slow, the upstream's own 4xx/5xx relayed with Retry-After) within the configured timeout, and
the proxy keeps its connections and memory in order (the invariant after every case).
"""

from __future__ import annotations

import http.client
import time
from collections.abc import Iterator

import orjson
import pytest

from tests.proxy_fixtures import Reply
from tests.reliability.harness import (
    MATRIX_TIMEOUT,
    PB_CT,
    SIGNAL_PATHS,
    Case,
    EdgeProcess,
    Fault,
    FaultUpstream,
    Ledger,
    batch,
    check_invariant,
    free_port,
)

SIGNALS = ["log", "metric", "trace"]


def send(case: Case, signal: str, protobuf: bool = False, timeout: float = 10.0) -> Reply:
    body, sent = batch(case.ledger, signal, keep=2, drop=1, protobuf=protobuf)
    reply = case.post(SIGNAL_PATHS[signal], body, PB_CT if protobuf else {}, timeout=timeout)
    sent.status = reply.status
    return reply


# ── refused ──


@pytest.fixture(scope="module")
def refused_edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """A proxy whose upstream port has nothing listening."""
    edge = EdgeProcess(tmp_path_factory.mktemp("refused"), f"http://127.0.0.1:{free_port()}",
                       upstream_timeout=MATRIX_TIMEOUT).start()
    yield edge
    assert edge.stop() == 0


@pytest.mark.parametrize("signal", SIGNALS)
def test_refused_upstream_is_502(refused_edge: EdgeProcess, upstream: FaultUpstream, signal: str) -> None:
    ledger = Ledger()
    before = refused_edge.dropped()
    for protobuf in (False, True):
        body, sent = batch(ledger, signal, keep=2, drop=1, protobuf=protobuf)
        reply = refused_edge.request("POST", SIGNAL_PATHS[signal], body, PB_CT if protobuf else {})
        sent.status = reply.status
        assert (reply.status, orjson.loads(reply.body)) == (502, {"error": "upstream unreachable"})
    check_invariant(refused_edge, None, None, before)
    assert refused_edge.dropped() - before == 2  # the DEBUG record of each batch, evaluated before the failure


def test_refused_upstream_passthrough_is_502(refused_edge: EdgeProcess) -> None:
    for method in ("GET", "PUT", "DELETE"):
        reply = refused_edge.request(method, "/api/anything?q=1", b"x" * 10 if method == "PUT" else None)
        assert reply.status == 502
    big = refused_edge.request("POST", "/upload", b"y" * 300_000)
    assert big.status == 502
    check_invariant(refused_edge, None, None, None)


# ── hangs ──


@pytest.mark.parametrize("signal", SIGNALS)
def test_hanging_upstream_is_504_within_the_timeout(case: Case, signal: str) -> None:
    case.upstream.reset(delay=MATRIX_TIMEOUT + 3)
    started = time.monotonic()
    reply = send(case, signal)
    elapsed = time.monotonic() - started
    # the upstream answers 3 s after the timeout: a 504 means the proxy gave up first; and not
    # before the timeout (a lower bound, which a busy machine cannot break)
    assert (reply.status, orjson.loads(reply.body)) == (504, {"error": "upstream timed out"})
    assert elapsed >= MATRIX_TIMEOUT - 0.1, elapsed


def test_hanging_upstream_passthrough_is_504(case: Case) -> None:
    case.upstream.reset(delay=MATRIX_TIMEOUT + 3)  # answers 3 s after the timeout: a 504 is the proxy giving up
    for reply in (case.edge.request("GET", "/slow"), case.edge.request("POST", "/slow", b"z" * 200_000)):
        assert reply.status == 504


# ── resets mid-answer ──


@pytest.mark.parametrize("signal", SIGNALS)
def test_upstream_reset_mid_answer_is_502(case: Case, signal: str) -> None:
    case.upstream.reset(Fault(reset_after=100), body=b"r" * 5000)
    reply = send(case, signal)
    assert (reply.status, orjson.loads(reply.body)) == (502, {"error": "upstream unreachable"})


def test_upstream_reset_mid_answer_passthrough(case: Case) -> None:
    """A small answer is buffered (502); a large one is streamed: the client sees the cut, never a hang."""
    case.upstream.reset(Fault(reset_after=100), body=b"r" * 5000)
    assert case.edge.request("GET", "/small").status == 502
    case.upstream.reset(Fault(reset_after=150_000, chunk=50_000), body=b"R" * 400_000)
    conn = http.client.HTTPConnection("127.0.0.1", case.edge.port, timeout=10)
    try:
        conn.request("GET", "/large")
        resp = conn.getresponse()
        assert resp.status == 200
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):
            resp.read()
    finally:
        conn.close()


# ── errors relayed ──


@pytest.mark.parametrize("status", [429, 500, 503])
@pytest.mark.parametrize("signal", SIGNALS)
def test_upstream_errors_are_relayed_with_retry_after(case: Case, signal: str, status: int) -> None:
    answer = b'{"code":8,"message":"slow down"}'
    case.upstream.reset(status=status, body=answer, headers={"Content-Type": "application/json", "Retry-After": "7"})
    reply = send(case, signal, protobuf=signal == "metric")
    assert (reply.status, reply.header("retry-after"), reply.body) == (status, "7", answer)


@pytest.mark.parametrize("status", [429, 503])
def test_upstream_errors_are_relayed_on_passthrough(case: Case, status: int) -> None:
    case.upstream.reset(status=status, body=b"busy", headers={"Retry-After": "120"})
    reply = case.edge.request("POST", "/api/v1/push", b"{}")
    assert (reply.status, reply.header("retry-after"), reply.body) == (status, "120", b"busy")


# ── slow answers ──


@pytest.mark.parametrize("signal", SIGNALS)
def test_dribbled_answer_within_the_timeout_is_relayed_whole(case: Case, signal: str) -> None:
    answer = b'{"partialSuccess":{"errorMessage":"' + b"d" * 8000 + b'"}}'
    case.upstream.reset(Fault(dribble=0.08, chunk=1000), body=answer)
    reply = send(case, signal)
    assert (reply.status, reply.body) == (200, answer)


def test_dribbled_answer_past_the_timeout_is_504(case: Case) -> None:
    case.upstream.reset(Fault(dribble=0.1, chunk=100), body=b"x" * 3000)  # 3 s in all, the timeout is 1.5 s
    reply = send(case, "log")
    assert reply.status == 504  # had the proxy waited for the whole answer, it would relay a 200


def test_streamed_passthrough_answer_may_take_longer_than_the_timeout(case: Case) -> None:
    """Streamed bodies are bounded per read, not in total: a 2.4 s download with steady progress completes."""
    body = bytes(range(256)) * 800  # 200 KiB, over the 64 KiB buffering threshold
    case.upstream.reset(Fault(dribble=0.2, chunk=len(body) // 12), body=body)
    started = time.monotonic()
    reply = case.edge.request("GET", "/download", timeout=15)
    assert (reply.status, reply.body) == (200, body)
    assert time.monotonic() - started > MATRIX_TIMEOUT


def test_recovery_after_faults(case: Case) -> None:
    """After every kind of failure above, the pooled connections still carry normal traffic."""
    for signal in SIGNALS:
        for protobuf in (False, True):
            assert send(case, signal, protobuf).status == 200
