"""Routing traces to their owner among the cluster's members (the `PeerRouter` of `interfaces`).

Any instance accepts any span; each trace id has one owner, chosen by rendezvous hashing
over the members (`rendezvous`, `membership`), and spans that arrive elsewhere are
forwarded to it, so every span of a trace is judged together; under `logs.follow_traces` log
records carrying a trace id go to the same owner, so they meet their trace where it is
buffered. Forwarding is OTLP/HTTP protobuf to the owner's internal route for the signal
(`PEER_PATHS`: `PEER_PATH` for spans, `PEER_LOGS_PATH` for log records), marked with `FORWARDED_HEADER` so the
owner never forwards it again (nor applies edge's policies again: the first instance did).
Payloads go uncompressed: inside a cluster the bytes are cheaper than the CPU of gzip.

This instance's own address (`peers.advertise`, which the config resolves to `$POD_IP` or
`listen_address` with `listen_port` when not set) must be spelled as it appears among the
members. An instance that is not
among them (a misspelt `advertise`, a pod not yet in DNS) owns nothing and forwards every
trace to its owner among the members, and says so in a warning: the other instances hash
over the same members and never send it a trace, so keeping traces here would split them.
With no members at all (no peers configured, or DNS never answered yet) every trace is
kept here.

Delivery is retried with backoff on connection errors, timeouts, 429 and 5xx (a
`Retry-After` is honoured when it fits), within `FORWARD_BUDGET` seconds for all attempts
together; an owner still unreachable then keeps its spans here, counted, rather than losing
them or holding the sampler up.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import aiohttp

from edge.config import PeersConfig
from edge.logs import RateLimitedLog
from edge.tailsampling.interfaces import Signal, TraceFragment, TraceId
from edge.tailsampling.membership import DnsMembers, Membership, StaticMembers
from edge.tailsampling.rendezvous import Rendezvous

log = logging.getLogger(__name__)
_troubles = RateLimitedLog(log)  # keyed by peer (and signal, for logs)

PEER_PATH = "/_edge/tail/v1/traces"
PEER_LOGS_PATH = "/_edge/tail/v1/logs"
FORWARDED_HEADER = "X-Edge-Tail-Forwarded"
PROTOBUF = "application/x-protobuf"
FORWARD_HEADERS = {"Content-Type": PROTOBUF, FORWARDED_HEADER: "1"}
WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]"})

FORWARD_BUDGET = 2.0  # seconds for every attempt of one forward together, backoff included
ATTEMPTS = 3
ATTEMPT_TIMEOUT = 1.0  # one attempt's share of the budget at most, so a hanging peer still gets a retry
FIRST_BACKOFF = 0.1  # doubled after each failed attempt, with up to 50% jitter
# Spans for one owner go in requests of at most this many bytes (a single bigger fragment goes alone):
# well under the owner's `max_decoded_bytes`, which bounds what its internal route accepts.
FORWARD_CHUNK_BYTES = 4 << 20


PEER_PATHS = {Signal.TRACES: PEER_PATH, Signal.LOGS: PEER_LOGS_PATH}


@dataclass(frozen=True, slots=True)
class PeerStats:
    """The counters `/_edge/metrics` shows, as of one moment."""

    members: int
    is_member: bool  # False: this instance owns nothing and forwards every trace
    routed_fragments: int  # delivered to their owner
    routed_spans: int
    received_fragments: int  # forwarded here by a peer
    received_spans: int
    kept_fragments: int  # owner unreachable: kept here instead
    kept_spans: int
    routed_records: int = 0  # log records (`logs.follow_traces`), likewise
    received_records: int = 0
    kept_records: int = 0


class Tally:
    """Fragments and spans counted together."""

    __slots__ = ("fragments", "spans")

    def __init__(self) -> None:
        self.fragments = 0
        self.spans = 0

    def add(self, fragments: Sequence[TraceFragment]) -> None:
        self.fragments += len(fragments)
        self.spans += sum(f.spans for f in fragments)


class Attempt(NamedTuple):
    """One POST to a peer: delivered, or why not and whether trying again may help."""

    delivered: bool
    retry: bool = False
    retry_after: float | None = None
    reason: str = ""


DELIVERED = Attempt(True)


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` in seconds (an HTTP date is not worth parsing for a 2 s budget: ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def batches(fragments: Sequence[TraceFragment], limit: int) -> Iterator[list[TraceFragment]]:
    """Consecutive runs of fragments of at most `limit` payload bytes (one bigger fragment alone)."""
    batch: list[TraceFragment] = []
    size = 0
    for fragment in fragments:
        if batch and size + len(fragment.payload) > limit:
            yield batch
            batch, size = [], 0
        batch.append(fragment)
        size += len(fragment.payload)
    if batch:
        yield batch


class Peers:
    """The `PeerRouter`: owners by rendezvous hashing over the members, delivery over a pooled session."""

    def __init__(self, membership: Membership, address: str, budget: float = FORWARD_BUDGET) -> None:
        self.membership = membership
        self.address = address
        self.budget = budget
        self._hash = Rendezvous(())
        self._session: aiohttp.ClientSession | None = None
        # per signal: (routed, received, kept); a log fragment's `spans` counts its records
        self._tallies = {signal: (Tally(), Tally(), Tally()) for signal in Signal}

    async def start(self) -> None:
        """Learn the members (and keep them current); run on the loop that will forward."""
        await self.membership.start()
        self._current()

    async def close(self) -> None:
        await self.membership.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    # ── ownership ──

    def owner(self, trace_id: TraceId) -> str | None:
        member = self._current().owner(trace_id)
        return None if member is None or member == self.address else member

    def _current(self) -> Rendezvous:
        """The hashing over the members as they are now (rebuilt, and checked, when they change)."""
        members = self.membership.members()
        if members != self._hash.members:
            self._hash = Rendezvous(members)
            if members and self.address not in members:
                log.warning("tail sampling: this instance (%s) is not among the %d peers (%s): it owns no trace "
                            "and forwards every span to its owner; set tail_sampling.peers.advertise to this "
                            "instance's address as the peers list it", self.address, len(members),
                            ", ".join(members[:5]) + (", ..." if len(members) > 5 else ""))
        return self._hash

    # ── delivery ──

    async def route(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> list[TraceFragment]:
        """Forward every fragment this instance does not own, all of an owner's in few requests,
        concurrently, to the owner's route for `signal`; returns the fragments to keep here (owned,
        or their owner unreachable)."""
        local: list[TraceFragment] = []
        remote: dict[str, list[TraceFragment]] = {}
        for fragment in fragments:
            owner = self.owner(fragment.trace_id)
            if owner is None:
                local.append(fragment)
            else:
                remote.setdefault(owner, []).append(fragment)
        if not remote:
            return local
        sends = [(peer, batch) for peer, group in remote.items() for batch in batches(group, FORWARD_CHUNK_BYTES)]
        delivered = await asyncio.gather(*(self.forward(peer, b"".join(f.payload for f in batch), signal)
                                           for peer, batch in sends))
        routed, _, kept = self._tallies[signal]
        for (_, batch), ok in zip(sends, delivered, strict=True):
            if ok:
                routed.add(batch)
            else:
                kept.add(batch)
                local.extend(batch)
        return local

    async def forward(self, peer: str, payload: bytes, signal: Signal = Signal.TRACES) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.budget
        backoff = FIRST_BACKOFF
        attempt = Attempt(False, reason="no time left")
        for tries in range(1, ATTEMPTS + 1):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            attempt = await self._post(peer, PEER_PATHS[signal], payload, min(ATTEMPT_TIMEOUT, remaining))
            if attempt.delivered:
                return True
            if not attempt.retry or tries == ATTEMPTS:
                break
            wait = attempt.retry_after if attempt.retry_after is not None else backoff * (1 + random.random() / 2)
            if loop.time() + wait >= deadline:
                break
            await asyncio.sleep(wait)
            backoff *= 2
        what = "spans" if signal is Signal.TRACES else "log records"
        key = peer if signal is Signal.TRACES else f"{peer} {signal.value}"
        _troubles.log(logging.WARNING, key, "tail sampling: forwarding %s to peer %s failed (%s); they "
                      "are kept on this instance", what, peer, attempt.reason)
        return False

    async def _post(self, peer: str, path: str, payload: bytes, timeout: float) -> Attempt:
        try:
            async with self._client().post(f"http://{peer}{path}", data=payload, headers=FORWARD_HEADERS,
                                           timeout=aiohttp.ClientTimeout(total=timeout)) as response:
                await response.read()  # the whole answer, so the connection goes back to the pool
        except TimeoutError:
            return Attempt(False, retry=True, reason=f"no answer within {timeout:.2g} s")
        except (aiohttp.ClientError, OSError) as exc:
            return Attempt(False, retry=True, reason=f"{type(exc).__name__}: {exc}")
        if response.status < 300:
            return DELIVERED
        retry = response.status == 429 or response.status >= 500
        return Attempt(False, retry, retry_after(response.headers.get("Retry-After")), f"HTTP {response.status}")

    def _client(self) -> aiohttp.ClientSession:
        """One session (one keep-alive connection pool) for every peer, created on the running loop."""
        if self._session is None:
            self._session = aiohttp.ClientSession(skip_auto_headers=("User-Agent",))
        return self._session

    # ── counters ──

    def received(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> None:
        """Count fragments a peer forwarded here (the sampler calls it for `forwarded` submissions)."""
        self._tallies[signal][1].add(fragments)

    def stats(self) -> PeerStats:
        members = self.membership.members()
        routed, received, kept = self._tallies[Signal.TRACES]
        logs = self._tallies[Signal.LOGS]
        return PeerStats(len(members), not members or self.address in members,
                         routed.fragments, routed.spans, received.fragments, received.spans,
                         kept.fragments, kept.spans, *(tally.spans for tally in logs))


def membership_of(settings: PeersConfig) -> Membership:
    """The static list, or the DNS name (the config allows one of them), or no members at all."""
    if settings.dns:
        return DnsMembers(settings.dns, settings.port, settings.interval)
    return StaticMembers(settings.static)


def peers_from_config(settings: PeersConfig) -> Peers:
    """The router for `tail_sampling.peers` (its `advertise` already resolved by the config's loader)."""
    host = settings.advertise.rpartition(":")[0]
    if (settings.static or settings.dns) and host in WILDCARD_HOSTS:
        log.warning("tail sampling: this instance's address %s is no address a peer can reach (listen_address is "
                    "a wildcard and POD_IP is not set): set tail_sampling.peers.advertise", settings.advertise)
    return Peers(membership_of(settings), settings.advertise)
