"""Tail sampling's peers: who owns a trace, how the members are learnt, and delivery to the owner.

Ownership is checked on many random trace ids (spread, order independence, least movement
when a member leaves); DNS membership with the machine's real resolver on `localhost` and
numeric names; delivery against real aiohttp servers on loopback (a peer that fails twice
then accepts, one that never answers, a closed port).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from edge.config import PeersConfig, build
from edge.tailsampling.interfaces import PeerRouter, TraceFragment
from edge.tailsampling.membership import DnsMembers, StaticMembers, resolve
from edge.tailsampling.peers import (
    FORWARD_BUDGET,
    FORWARD_CHUNK_BYTES,
    FORWARDED_HEADER,
    PEER_LOGS_PATH,
    PEER_PATH,
    Peers,
    Signal,
    peers_from_config,
)
from edge.tailsampling.rendezvous import Rendezvous
from tests.proxy_fixtures import free_port
from tests.test_declared_interfaces import assert_implements

MEMBERS = ["10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"]
IDS = 30_000


def trace_ids(n: int = IDS, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(16) for _ in range(n)]


def peers_config(peers: dict[str, Any], env: dict[str, str] | None = None,
                 listen_address: str = "127.0.0.1") -> PeersConfig:
    """`tail_sampling.peers` as edge's loader reads it (`advertise` resolved)."""
    doc = {"listen_address": listen_address, "tail_sampling": {"peers": peers}}
    return build(doc, env=env or {}).tail_sampling.peers


def fragment(trace_id: bytes, spans: int = 1, size: int = 10) -> TraceFragment:
    return TraceFragment(trace_id, trace_id + b"x" * size, spans)


# ── ownership ──


def test_owners_spread_evenly_over_three_members() -> None:
    ring = Rendezvous(MEMBERS)
    counts = Counter(ring.owner(t) for t in trace_ids())
    assert set(counts) == set(MEMBERS)
    for member, count in counts.items():
        assert abs(count - IDS / 3) <= IDS / 3 * 0.10, (member, count)


def test_owners_do_not_depend_on_the_members_order() -> None:
    ids = trace_ids(5000)
    listed = Rendezvous(MEMBERS)
    for order in (MEMBERS[::-1], [MEMBERS[1], MEMBERS[2], MEMBERS[0]], MEMBERS + MEMBERS[:1]):
        reordered = Rendezvous(order)
        assert [reordered.owner(t) for t in ids] == [listed.owner(t) for t in ids]


def test_a_member_leaving_moves_only_its_own_traces() -> None:
    four = MEMBERS + ["10.0.0.4:8080"]
    ids = trace_ids()
    before = {t: Rendezvous(four).owner(t) for t in ids}
    after = Rendezvous(MEMBERS)
    moved = [t for t in ids if after.owner(t) != before[t]]
    assert all(before[t] == "10.0.0.4:8080" for t in moved)
    assert len(moved) == sum(1 for owner in before.values() if owner == "10.0.0.4:8080")
    assert abs(len(moved) - IDS / 4) <= IDS / 4 * 0.10


def test_a_member_joining_takes_about_its_share() -> None:
    ids = trace_ids()
    before = Rendezvous(MEMBERS)
    after = Rendezvous(MEMBERS + ["10.0.0.4:8080"])
    moved = [t for t in ids if after.owner(t) != before.owner(t)]
    assert all(after.owner(t) == "10.0.0.4:8080" for t in moved)
    assert abs(len(moved) - IDS / 4) <= IDS / 4 * 0.10


def test_no_members_own_nothing() -> None:
    assert Rendezvous(()).owner(b"\x01" * 16) is None


def test_this_instance_owns_its_share_and_forwards_the_rest() -> None:
    peers = Peers(StaticMembers(MEMBERS[::-1]), MEMBERS[1])
    ids = trace_ids(3000)
    owners = [peers.owner(t) for t in ids]
    ring = Rendezvous(MEMBERS)
    assert owners == [None if ring.owner(t) == MEMBERS[1] else ring.owner(t) for t in ids]
    assert 800 < owners.count(None) < 1200
    assert peers.stats().is_member and peers.stats().members == 3


def test_without_peers_every_trace_stays_here() -> None:
    peers = peers_from_config(peers_config({}))
    assert all(peers.owner(t) is None for t in trace_ids(100))


def test_an_instance_not_among_the_members_forwards_everything(caplog: pytest.LogCaptureFixture) -> None:
    peers = peers_from_config(peers_config({"static": MEMBERS}))
    with caplog.at_level(logging.WARNING, "edge.tailsampling.peers"):
        assert all(peers.owner(t) in MEMBERS for t in trace_ids(1000))
    assert "not among the 3 peers" in caplog.text and "tail_sampling.peers.advertise" in caplog.text
    assert peers.stats().is_member is False


def test_this_instance_is_known_by_its_advertised_address() -> None:
    assert peers_from_config(peers_config({"advertise": "edge-0.edge:9000"})).address == "edge-0.edge:9000"
    assert peers_from_config(peers_config({}, {"POD_IP": "10.1.2.3"}, "0.0.0.0")).address == "10.1.2.3:8080"


def test_a_wildcard_address_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "edge.tailsampling.peers"):
        peers_from_config(peers_config({"dns": "edge-peers"}, listen_address="0.0.0.0"))
    assert "0.0.0.0:8080 is no address a peer can reach" in caplog.text


def test_dns_settings_give_dns_members() -> None:
    members = peers_from_config(peers_config({"dns": "edge-peers", "port": 9000, "interval": "250ms"})).membership
    assert isinstance(members, DnsMembers)
    assert (members.name, members.port, members.interval) == ("edge-peers", 9000, 0.25)


def test_the_router_meets_its_declared_interface() -> None:
    assert_implements(Peers(StaticMembers(()), "127.0.0.1:8080"), PeerRouter)


# ── DNS membership ──


def test_dns_members_with_the_real_resolver() -> None:
    async def scenario() -> None:
        members = DnsMembers("localhost", 8080, interval=60)
        await members.start()
        try:
            assert "127.0.0.1:8080" in members.members()
        finally:
            await members.close()
        assert await resolve("127.0.0.2", 9000) == ["127.0.0.2:9000"]
        assert await resolve("::1", 9000) == ["[::1]:9000"]
    asyncio.run(scenario())


def test_dns_members_follow_the_name_and_survive_a_failed_resolution(caplog: pytest.LogCaptureFixture) -> None:
    """The name is resolved again every interval by the real resolver; here what it answers is
    changed by pointing it at other real names (numeric ones, then one that cannot resolve)."""
    names = ["127.0.0.1"]

    async def resolver(_: str, port: int) -> list[str]:
        return await resolve(names[0], port)

    async def scenario() -> None:
        members = DnsMembers("peers.example", 8080, interval=0.05, resolver=resolver)
        await members.start()
        try:
            assert members.members() == ("127.0.0.1:8080",)
            names[0] = "127.0.0.2"
            await wait_until(lambda: members.members() == ("127.0.0.2:8080",))
            with caplog.at_level(logging.WARNING, "edge.tailsampling.membership"):
                names[0] = "does-not-exist.invalid"
                await wait_until(lambda: "resolving peers peers.example failed" in caplog.text)
            assert members.members() == ("127.0.0.2:8080",)  # the last members are kept
            assert "keeping the last 1 members" in caplog.text
        finally:
            await members.close()
    asyncio.run(scenario())


def test_a_router_over_dns_sees_members_change() -> None:
    answers = [["127.0.0.1:8080"]]

    async def resolver(_: str, __: int) -> list[str]:
        return answers[0]

    async def scenario() -> None:
        peers = Peers(DnsMembers("peers.example", 8080, interval=0.02, resolver=resolver), "127.0.0.1:8080")
        await peers.start()
        try:
            ids = trace_ids(300)
            assert all(peers.owner(t) is None for t in ids)
            answers[0] = ["127.0.0.1:8080", "127.0.0.9:8080"]
            await wait_until(lambda: peers.stats().members == 2)
            assert {peers.owner(t) for t in ids} == {None, "127.0.0.9:8080"}
        finally:
            await peers.close()
    asyncio.run(scenario())


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# ── delivery ──


@dataclass
class PeerServer:
    """A peer's internal route on loopback: records requests, answers from a script of statuses."""

    statuses: list[int] = field(default_factory=list)  # answered in turn; 200 once exhausted
    retry_after: str | None = None
    hang: bool = False
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.requests.append((request.path, dict(request.headers), await request.read()))
        if self.hang:
            await asyncio.sleep(30)
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after and status != 200 else {}
        return web.Response(status=status, headers=headers)


@asynccontextmanager
async def serving(peer: PeerServer) -> AsyncIterator[str]:
    app = web.Application(client_max_size=FORWARD_CHUNK_BYTES * 2)
    for path in (PEER_PATH, PEER_LOGS_PATH):
        app.router.add_post(path, peer.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.1)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@asynccontextmanager
async def router(members: list[str], address: str = "127.0.0.1:1",
                 budget: float = FORWARD_BUDGET) -> AsyncIterator[Peers]:
    peers = Peers(StaticMembers(members), address, budget)
    await peers.start()
    try:
        yield peers
    finally:
        await peers.close()


def test_forward_retries_until_the_peer_accepts() -> None:
    peer = PeerServer(statuses=[503, 503])

    async def scenario() -> None:
        async with serving(peer) as address, router([]) as peers:
            assert await peers.forward(address, b"spans") is True
    asyncio.run(scenario())
    assert len(peer.requests) == 3
    for path, headers, body in peer.requests:
        assert (path, body) == (PEER_PATH, b"spans")
        assert headers[FORWARDED_HEADER] == "1" and headers["Content-Type"] == "application/x-protobuf"


def test_forward_honours_retry_after() -> None:
    peer = PeerServer(statuses=[429], retry_after="0.3")

    async def scenario() -> None:
        async with serving(peer) as address, router([]) as peers:
            start = time.monotonic()
            assert await peers.forward(address, b"spans") is True
            assert time.monotonic() - start >= 0.3
    asyncio.run(scenario())
    assert len(peer.requests) == 2


def test_a_refusal_is_not_retried() -> None:
    peer = PeerServer(statuses=[400])

    async def scenario() -> None:
        async with serving(peer) as address, router([]) as peers:
            assert await peers.forward(address, b"spans") is False
    asyncio.run(scenario())
    assert len(peer.requests) == 1


def test_an_unreachable_peer_is_given_up_within_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    closed = f"127.0.0.1:{free_port()}"

    async def scenario() -> None:
        async with router([]) as peers:
            start = time.monotonic()
            with caplog.at_level(logging.WARNING, "edge.tailsampling.peers"):
                assert await peers.forward(closed, b"spans") is False
            assert time.monotonic() - start <= FORWARD_BUDGET
    asyncio.run(scenario())
    assert f"forwarding spans to peer {closed} failed" in caplog.text


def test_a_peer_that_never_answers_is_given_up_within_the_bound() -> None:
    peer = PeerServer(hang=True)

    async def scenario() -> None:
        async with serving(peer) as address, router([]) as peers:
            start = time.monotonic()
            assert await peers.forward(address, b"spans") is False
            assert time.monotonic() - start <= FORWARD_BUDGET + 0.2
    asyncio.run(scenario())
    assert len(peer.requests) == 2  # the budget leaves room for one retry after a timed-out attempt


def test_route_sends_each_owner_its_fragments_and_keeps_the_rest() -> None:
    owner = PeerServer()
    here, closed = "127.0.0.1:1", f"127.0.0.1:{free_port()}"
    fragments = [fragment(t, spans=2) for t in trace_ids(300)]

    async def scenario() -> None:
        async with serving(owner) as address, router([here, address, closed], here) as peers:
            owners = {f.trace_id: peers.owner(f.trace_id) for f in fragments}
            kept = await peers.route(fragments)
            stats = peers.stats()
        to_owner = [f for f in fragments if owners[f.trace_id] == address]
        assert len(owner.requests) == 1  # one request for all of them
        assert owner.requests[0][2] == b"".join(f.payload for f in to_owner)
        assert kept == [f for f in fragments if owners[f.trace_id] is None] + \
            [f for f in fragments if owners[f.trace_id] == closed]
        assert (stats.routed_fragments, stats.routed_spans) == (len(to_owner), 2 * len(to_owner))
        unreachable = sum(1 for o in owners.values() if o == closed)
        assert unreachable > 50 and (stats.kept_fragments, stats.kept_spans) == (unreachable, 2 * unreachable)
    asyncio.run(scenario())


def test_log_records_go_to_their_owners_logs_route_and_are_counted_apart_from_spans(
        caplog: pytest.LogCaptureFixture) -> None:
    owner = PeerServer()
    here, closed = "127.0.0.1:1", f"127.0.0.1:{free_port()}"
    records = [fragment(t, spans=3) for t in trace_ids(200, seed=11)]

    async def scenario() -> None:
        async with serving(owner) as address, router([here, address, closed], here) as peers:
            owners = {f.trace_id: peers.owner(f.trace_id) for f in records}
            with caplog.at_level(logging.WARNING, "edge.tailsampling.peers"):
                kept = await peers.route(records, Signal.LOGS)
            peers.received(records[:2], Signal.LOGS)
            stats = peers.stats()
        to_owner = [f for f in records if owners[f.trace_id] == address]
        ((path, headers, body),) = owner.requests
        assert (path, body) == (PEER_LOGS_PATH, b"".join(f.payload for f in to_owner))
        assert headers[FORWARDED_HEADER] == "1" and headers["Content-Type"] == "application/x-protobuf"
        unreachable = [f for f in records if owners[f.trace_id] == closed]
        assert kept == [f for f in records if owners[f.trace_id] is None] + unreachable
        assert (stats.routed_records, stats.received_records, stats.kept_records) == \
            (3 * len(to_owner), 6, 3 * len(unreachable))
        assert (stats.routed_spans, stats.received_spans, stats.kept_spans) == (0, 0, 0)
    asyncio.run(scenario())
    assert f"forwarding log records to peer {closed} failed" in caplog.text


def test_route_splits_big_batches_for_one_owner() -> None:
    owner = PeerServer()
    size = FORWARD_CHUNK_BYTES // 4
    big = [fragment(t, size=size) for t in trace_ids(5)]

    async def scenario() -> None:
        async with serving(owner) as address, router([address]) as peers:
            assert await peers.route(big) == []
    asyncio.run(scenario())
    bodies = [body for _, _, body in owner.requests]  # sent concurrently: in any order
    assert sorted(len(body) // size for body in bodies) == [2, 3]
    assert sum(map(len, bodies)) == sum(len(f.payload) for f in big)
    assert all(any(f.payload in body for body in bodies) for f in big)


def test_received_fragments_are_counted() -> None:
    peers = Peers(StaticMembers(()), "127.0.0.1:8080")
    peers.received([fragment(b"a" * 16, spans=3), fragment(b"b" * 16, spans=4)])
    stats = peers.stats()
    assert (stats.received_fragments, stats.received_spans) == (2, 7)
