"""Capacity: beyond `max_connections` requests in flight the proxy answers 503 with Retry-After
at once, /_health and the admin routes still answer, and nothing refused reaches the upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from tests.reliability.harness import Case, EdgeProcess, FaultUpstream, Ledger, batch, check_invariant

MAX_CONNECTIONS = 4
WORKERS = 2
HOLD = 1.5  # seconds the upstream holds every request


@pytest.fixture(scope="module")
def small_edge(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path_factory.mktemp("capacity"), upstream.url, workers=WORKERS,
                       max_connections=MAX_CONNECTIONS, upstream_timeout=10).start()
    yield edge
    assert edge.stop() == 0


def test_over_max_connections_is_503_with_retry_after(small_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    upstream.reset(delay=HOLD)
    ledger = Ledger()
    before = small_edge.dropped()
    bodies = [batch(ledger, "log", keep=2, drop=1) for _ in range(12)]

    def send(item: tuple[bytes, object]) -> tuple[int, float, str | None, bytes]:
        body, sent = item
        started = time.monotonic()
        reply = small_edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
        sent.status = reply.status  # type: ignore[attr-defined]
        return reply.status, time.monotonic() - started, reply.header("retry-after"), reply.body

    with ThreadPoolExecutor(len(bodies)) as pool:
        pending = pool.map(send, bodies)
        time.sleep(HOLD / 3)  # every request is either held upstream or already refused
        health_started = time.monotonic()
        assert small_edge.healthy()
        assert small_edge.request("GET", "/_edge/policies").status == 200
        assert small_edge.request("GET", "/_edge/metrics").status == 200
        admin_seconds = time.monotonic() - health_started
        results = list(pending)
    assert admin_seconds < 0.5, f"admin routes waited {admin_seconds:.2f} s behind the load"
    ok = [r for r in results if r[0] == 200]
    busy = [r for r in results if r[0] == 503]
    assert len(ok) + len(busy) == len(results), [r[0] for r in results]
    assert WORKERS <= len(ok) <= MAX_CONNECTIONS, [r[0] for r in results]
    for _, seconds, retry_after, body in busy:
        assert retry_after == "1" and orjson.loads(body) == {"error": "too many requests in flight"}
        assert seconds < HOLD / 2, "a refusal must be immediate"
    assert len(upstream.received("/v1/logs")) == len(ok)  # refused batches never reach the upstream
    check_invariant(small_edge, upstream, ledger, before)
    upstream.reset()
    body, sent = batch(ledger, "log")
    reply = small_edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json"})
    sent.status = reply.status
    assert reply.status == 200, "capacity is given back once requests finish"


def test_passthrough_counts_against_capacity(small_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    upstream.reset(delay=HOLD)
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: small_edge.request("GET", "/api/x").status, range(10)))
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
