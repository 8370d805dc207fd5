"""Capacity: beyond `max_connections` requests in flight the proxy answers 503 with Retry-After
at once, /_health and the admin routes still answer, and nothing refused reaches the upstream.

The upstream holds accepted requests until the test releases them, so "at capacity" lasts exactly
as long as the checks need; how fast the admin routes answer meanwhile is measured by
benchmarks/latency.py."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import orjson
import pytest

from tests.reliability.harness import Case, EdgeProcess, FaultUpstream, Ledger, batch, check_invariant, wait_for

MAX_CONNECTIONS = 4
WORKERS = 2


@pytest.fixture(scope="module")
def small_edge(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path_factory.mktemp("capacity"), upstream.url, workers=WORKERS,
                       max_connections=MAX_CONNECTIONS, upstream_timeout=10).start()
    yield edge
    assert edge.stop() == 0


def at_capacity(upstream: FaultUpstream, answered: list[Future[Any]], sent: int) -> bool:
    """Every request is either held upstream (forwarded, not answered) or already answered by the proxy."""
    return len(upstream.received()) + sum(f.done() for f in answered) == sent


def test_over_max_connections_is_503_with_retry_after(small_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    release = threading.Event()
    upstream.reset(hold=release)  # accepted requests stay in flight until released: the proxy stays full
    ledger = Ledger()
    before = small_edge.dropped()
    bodies = [batch(ledger, "log", keep=2, drop=1) for _ in range(12)]

    def send(item: tuple[bytes, object]) -> tuple[int, bool, str | None, bytes]:
        body, sent = item
        reply = small_edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
        sent.status = reply.status  # type: ignore[attr-defined]
        return reply.status, release.is_set(), reply.header("retry-after"), reply.body

    try:
        with ThreadPoolExecutor(len(bodies)) as pool:
            pending = [pool.submit(send, item) for item in bodies]
            assert wait_for(lambda: at_capacity(upstream, pending, len(bodies)), 20)
            # nothing held can finish before the release: these answers came while the proxy was full
            assert small_edge.healthy()
            assert small_edge.request("GET", "/_edge/policies").status == 200
            assert small_edge.request("GET", "/_edge/metrics").status == 200
            release.set()
            results = [f.result() for f in pending]
    finally:
        release.set()
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(ok) + len(busy) == len(results), [r[0] for r in results]
    assert WORKERS <= len(ok) <= MAX_CONNECTIONS, [r[0] for r in results]
    for _, after_release, retry_after, body in busy:
        assert retry_after == "1" and orjson.loads(body) == {"error": "too many requests in flight"}
        assert not after_release, "a refusal must be immediate, not wait for a slot"
    assert len(upstream.received("/v1/logs")) == len(ok)  # refused batches never reach the upstream
    check_invariant(small_edge, upstream, ledger, before)
    upstream.reset()
    body, sent = batch(ledger, "log")
    reply = small_edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
    sent.status = reply.status
    assert reply.status == 200, "capacity is given back once requests finish"


def test_passthrough_counts_against_capacity(small_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    release = threading.Event()
    upstream.reset(hold=release)
    try:
        with ThreadPoolExecutor(10) as pool:
            pending = [pool.submit(lambda: small_edge.request("GET", "/api/x").status) for _ in range(10)]
            assert wait_for(lambda: at_capacity(upstream, pending, len(pending)), 20)
            release.set()
            statuses = [f.result() for f in pending]
    finally:
        release.set()
    assert sorted(set(statuses)) == [200, 503] and statuses.count(200) <= MAX_CONNECTIONS
    upstream.reset()
    check_invariant(small_edge, None, None, None)


def test_default_capacity_serves_a_burst_without_refusals(case: Case) -> None:
    """With the default max_connections (256) a burst of 48 concurrent slow requests all succeed."""
    case.upstream.reset(delay=0.5)
    case.pool_bound = 64
    items = [batch(case.ledger, "log", keep=2, drop=1) for _ in range(48)]

    def send(item: tuple[bytes, object]) -> int:
        body, sent = item
        reply = case.post("/v1/logs", body)
        sent.status = reply.status  # type: ignore[attr-defined]
        return reply.status

    with ThreadPoolExecutor(48) as pool:
        assert set(pool.map(send, items)) == {200}
