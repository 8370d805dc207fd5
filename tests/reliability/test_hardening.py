"""Faults found by adversarial probing of a real edge, each reproduced before it was fixed.

1. A body of tens of thousands of empty gzip members (or zstd frames) made decoding quadratic
   and held a worker's event loop for seconds: decoding is linear, the member count is capped
   (past it the body is forwarded raw, like a bomb over `max_decoded_bytes`) and big bodies are
   decoded off the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
import zlib
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import pytest
import zstandard

from edge.protocols import content_encoding
from edge.protocols.content_encoding import GZIP, ZSTD, decode, encode
from edge.protocols.otlp import COMPRESSION_RATIO, OFFLOAD_BYTES, OtlpRoute
from edge.protocols.upstream import RequestHead, request_head
from reliability.conftest import MATRIX_MAX_BODY, Case
from reliability.harness import batch

# ── 1. many gzip members / zstd frames ─────────────────────────────────────

EMPTY_MEMBER = {GZIP: zlib.compress(b"", 1, 31), ZSTD: zstandard.ZstdCompressor().compress(b"")}


class CountedInflater:
    """A real inflater that counts the compressed bytes it is handed and hands back
    (`unused_data`, `unconsumed_tail` are copies): the decoder's copying work."""

    def __init__(self, inner: Any, tally: list[int]) -> None:
        self.inner = inner
        self.tally = tally

    def decompress(self, data: Any, *args: Any) -> bytes:
        self.tally[0] += len(data)
        return self.inner.decompress(data, *args)

    @property
    def eof(self) -> bool:
        return self.inner.eof

    @property
    def unused_data(self) -> bytes:
        self.tally[0] += len(self.inner.unused_data)
        return self.inner.unused_data

    @property
    def unconsumed_tail(self) -> bytes:
        self.tally[0] += len(self.inner.unconsumed_tail)
        return self.inner.unconsumed_tail


def decode_work(codec: str, body: bytes) -> int:
    """Compressed bytes copied in and out of the real inflaters while decoding `body` (no member cap)."""
    tally = [0]
    real_zstd = content_encoding._decompressor
    counting_zlib = SimpleNamespace(decompressobj=lambda *a: CountedInflater(zlib.decompressobj(*a), tally),
                                    error=zlib.error, compress=zlib.compress)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(content_encoding, "MAX_MEMBERS", 1 << 20, raising=False)
        patch.setattr(content_encoding, "zlib", counting_zlib)
        patch.setattr(content_encoding, "_decompressor", lambda limit: SimpleNamespace(
            decompressobj=lambda: CountedInflater(real_zstd(limit).decompressobj(), tally)))
        assert decode(body, codec, 1 << 20) == b""
    return tally[0]


@pytest.mark.parametrize("codec", [GZIP, ZSTD])
def test_decoding_many_members_is_linear(codec: str) -> None:
    """Work grows with the body, not with members x body: 4x the members is 4x the work, and
    every compressed byte is copied a bounded number of times (the quadratic decoder handed each
    gzip member the whole rest of the body; zstd frames cost 512 bytes each however small)."""
    small, big = EMPTY_MEMBER[codec] * 5_000, EMPTY_MEMBER[codec] * 20_000
    work_small, work_big = decode_work(codec, small), decode_work(codec, big)
    assert work_big <= 4 * work_small + 1024, f"{work_small} -> {work_big}: not linear"  # + end effects
    assert work_big <= 8 * len(big), f"{work_big / len(big):.1f} bytes copied per body byte"


@pytest.mark.parametrize("codec", [GZIP, ZSTD])
def test_member_count_is_capped(codec: str) -> None:
    """Past MAX_MEMBERS members the body counts as undecodable (forwarded raw, unfiltered), so
    one request's decoding cost is bounded whatever its size; up to the cap everything decodes."""
    cap = content_encoding.MAX_MEMBERS
    one = encode(b"x", codec)
    assert decode(one * cap, codec, 1 << 20) == b"x" * cap
    assert decode(one * (cap + 1), codec, 1 << 20) is None
    assert decode(EMPTY_MEMBER[codec] * (MATRIX_MAX_BODY // len(EMPTY_MEMBER[codec])), codec, 1 << 20) is None


def test_gzip_padding_and_garbage_after_members() -> None:
    member = encode(b"abc", GZIP)
    assert decode(member * 3 + b"\0" * 100, GZIP, 100) == b"abc" * 3  # zero padding is tolerated
    assert decode(member + b"\0\0junk", GZIP, 100) is None
    assert decode(member + b"junk", GZIP, 100) is None
    assert decode(member[:-1], GZIP, 100) is None  # truncated
    assert decode(b"", GZIP, 100) is None and decode(b"", ZSTD, 100) is None


class ThreadProbe(OtlpRoute):
    """The real route's dispatch with a `filter` that notes where it ran and takes its time."""

    def __init__(self) -> None:  # no runtime: only `filter_off_loop` is exercised
        self.threads: list[str] = []

    def filter(self, body: bytes, head: RequestHead) -> bytes | None:
        self.threads.append(threading.current_thread().name)
        time.sleep(0.2 if len(body) >= OFFLOAD_BYTES else 0)
        return body


def test_big_bodies_are_filtered_off_the_event_loop() -> None:
    """From OFFLOAD_BYTES (compressed bodies count COMPRESSION_RATIO times their size) decoding and
    evaluation run in a thread: the event loop keeps ticking meanwhile; small bodies stay inline."""
    route = ThreadProbe()
    plain = request_head([(b"content-type", b"application/json")])
    gzipped = request_head([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    big, small = b"x" * OFFLOAD_BYTES, b"x" * (OFFLOAD_BYTES // COMPRESSION_RATIO - 1)

    async def run() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        ticker = asyncio.create_task(tick())
        assert await route.filter_off_loop(big, plain) == big
        ticker.cancel()
        assert await route.filter_off_loop(small, plain) == small
        assert await route.filter_off_loop(small + b"x", gzipped) == small + b"x"
        return ticks

    ticks = asyncio.run(run())
    big_thread, small_thread, gzipped_thread = route.threads
    assert big_thread.startswith("edge-filter") and gzipped_thread.startswith("edge-filter")
    assert small_thread == threading.current_thread().name
    assert ticks >= 5, f"the event loop ticked {ticks} times in 200 ms"


NORMAL_REQUESTS = 200
BOMBS_PER_SENDER = 6
P99_BUDGET = 0.100


def many_members(codec: str, size: int) -> bytes:
    return EMPTY_MEMBER[codec] * (size // len(EMPTY_MEMBER[codec]))


def test_many_member_bodies_do_not_stall_other_requests(case: Case) -> None:
    """Two senders post 1 MiB bodies of empty gzip members / zstd frames while another sends
    normal batches: the normal requests' p99 stays under 100 ms, no worker is killed, and the
    bodies are forwarded byte for byte (raw, as any body past the decoding limits)."""
    bombs = {GZIP: many_members(GZIP, MATRIX_MAX_BODY), ZSTD: many_members(ZSTD, MATRIX_MAX_BODY)}
    workers = case.edge.worker_pids()
    for _ in range(20):  # warm both workers (first evaluation loads the policy databases)
        body, sent = batch(case.ledger)
        sent.status = case.post("/v1/logs", body).status
    latencies: list[float] = []
    bomb_statuses: list[int] = []
    bombs_done = threading.Event()

    def send_bombs(first: int) -> None:
        for n in range(BOMBS_PER_SENDER):
            codec = (GZIP, ZSTD)[(first + n) % 2]
            bomb_statuses.append(case.post("/v1/logs", bombs[codec], {"Content-Encoding": codec}, timeout=60).status)

    def send_normal() -> None:
        while len(latencies) < NORMAL_REQUESTS or not bombs_done.is_set():
            body, sent = batch(case.ledger)
            started = perf_counter()
            sent.status = case.post("/v1/logs", body).status
            latencies.append(perf_counter() - started)
            if len(latencies) >= 20 * NORMAL_REQUESTS:
                break

    senders = [threading.Thread(target=send_bombs, args=(k,)) for k in range(2)]
    normal = threading.Thread(target=send_normal)
    normal.start()
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    bombs_done.set()
    normal.join(120)
    latencies.sort()
    p99 = latencies[int(0.99 * len(latencies))]
    assert bomb_statuses == [200] * 2 * BOMBS_PER_SENDER
    assert p99 < P99_BUDGET, f"normal requests p99 {p99 * 1000:.0f} ms (max {latencies[-1] * 1000:.0f} ms)"
    assert case.edge.worker_pids() == workers, "a worker was killed or restarted"
    forwarded = [r for r in case.upstream.received("/v1/logs") if r.header("content-encoding") in (GZIP, ZSTD)]
    assert len(forwarded) == 2 * BOMBS_PER_SENDER
    assert all(r.body == bombs[r.header("content-encoding") or ""] for r in forwarded), "not forwarded raw"
