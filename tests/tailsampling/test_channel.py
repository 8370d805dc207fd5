"""The worker ↔ sampler channel: frames, pipelining, a sampler that is down, restarts or breaks the protocol."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from pathlib import Path

import pytest

from edge.tailsampling.channel import FrameError, Submission, fragments_of, serve_connection, submission
from edge.tailsampling.client import SocketSamplerClient
from edge.tailsampling.interfaces import Ack, TraceFragment


def fragments(n: int, size: int = 100) -> list[TraceFragment]:
    return [TraceFragment(os.urandom(16), os.urandom(size), i + 1) for i in range(n)]


class Recorder:
    """A sampler side that records submissions and answers after a per-call delay."""

    def __init__(self, answer: Ack = Ack.ACCEPTED) -> None:
        self.answer = answer
        self.got: list[tuple[list[TraceFragment], Submission]] = []
        self.delays: list[float] = []

    async def __call__(self, fragments: list[TraceFragment], kind: Submission) -> Ack:
        if self.delays:
            await asyncio.sleep(self.delays.pop(0))
        self.got.append((fragments, kind))
        return self.answer


async def start(path: Path, submitted: Recorder) -> asyncio.Server:
    return await asyncio.start_unix_server(functools.partial(serve_connection, submitted=submitted), path=str(path))


def test_a_submission_frame_decodes_to_the_same_fragments() -> None:
    sent = fragments(3) + [TraceFragment(bytes(16), b"", 0)]
    parts = submission(7, sent, Submission.TRACES)
    assert fragments_of(b"".join(parts)[13:]) == sent
    with pytest.raises(FrameError):
        fragments_of(b"".join(parts)[13:-1])


def test_pipelined_submissions_are_answered_in_any_order_and_their_kind_is_carried(tmp_path: Path) -> None:
    async def scenario() -> None:
        recorder = Recorder()
        recorder.delays = [0.2, 0.0, 0.0, 0.0]  # the first request is answered after the others
        server = await start(tmp_path / "s.sock", recorder)
        client = SocketSamplerClient(str(tmp_path / "s.sock"))
        slow, fast, logs, peer_logs = fragments(2), fragments(1), fragments(1), fragments(1)
        acks = await asyncio.gather(client.submit(slow), client.submit(fast, forwarded=True), client.submit_logs(logs),
                                    client.submit_logs(peer_logs, forwarded=True))
        assert acks == [Ack.ACCEPTED] * 4
        assert recorder.got == [(fast, Submission.FORWARDED), (logs, Submission.LOGS),
                                (peer_logs, Submission.FORWARDED_LOGS), (slow, Submission.TRACES)]
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_the_sampler_answer_is_passed_on(tmp_path: Path) -> None:
    async def scenario() -> None:
        server = await start(tmp_path / "s.sock", Recorder(Ack.WAL_FULL))
        client = SocketSamplerClient(str(tmp_path / "s.sock"))
        assert await client.submit(fragments(1)) is Ack.WAL_FULL
        await client.close()
        server.close()

    asyncio.run(scenario())


def test_a_sampler_that_is_down_is_unavailable_after_a_bounded_wait_shared_by_every_caller(tmp_path: Path) -> None:
    async def scenario() -> None:
        client = SocketSamplerClient(str(tmp_path / "missing.sock"), connect_wait=0.3)
        start_at = time.monotonic()
        acks = await asyncio.gather(*(client.submit(fragments(1)) for _ in range(5)))
        assert acks == [Ack.UNAVAILABLE] * 5
        assert time.monotonic() - start_at < 1.0  # one wait for all, not one each

    asyncio.run(scenario())


def test_a_restarted_sampler_is_reconnected_and_requests_in_flight_are_unavailable(tmp_path: Path) -> None:
    async def scenario() -> None:
        path = tmp_path / "s.sock"

        async def dies(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readexactly(13)  # a request arrives, then the sampler is gone
            writer.transport.abort()

        dying = await asyncio.start_unix_server(dies, path=str(path))
        client = SocketSamplerClient(str(path), connect_wait=2.0)
        assert await client.submit(fragments(1)) is Ack.UNAVAILABLE
        dying.close()
        path.unlink()
        recorder = Recorder()
        restarted = asyncio.create_task(start(path, recorder))
        assert await client.submit(fragments(1)) is Ack.ACCEPTED  # a new connection, to the new socket
        assert len(recorder.got) == 1
        (await restarted).close()
        await client.close()

    asyncio.run(scenario())


def test_a_sampler_that_never_answers_is_unavailable_after_the_answer_wait(tmp_path: Path) -> None:
    async def scenario() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read()

        server = await asyncio.start_unix_server(silent, path=str(tmp_path / "s.sock"))
        client = SocketSamplerClient(str(tmp_path / "s.sock"), answer_wait=0.2)
        assert await client.submit(fragments(1)) is Ack.UNAVAILABLE
        await client.close()
        server.close()

    asyncio.run(scenario())


def measure(path: Path, per_submission: int, size: int, seconds: float) -> tuple[float, float]:
    """Submissions/s and payload MB/s through one client with 64 requests in flight."""
    async def scenario() -> tuple[float, float]:
        server = await start(path, Recorder())
        client = SocketSamplerClient(str(path))
        batch = fragments(per_submission, size)
        done = 0
        deadline = time.monotonic() + seconds

        async def sender() -> None:
            nonlocal done
            while time.monotonic() < deadline:
                assert await client.submit(batch) is Ack.ACCEPTED
                done += 1

        started = time.monotonic()
        await asyncio.gather(*(sender() for _ in range(64)))
        elapsed = time.monotonic() - started
        await client.close()
        server.close()
        return done / elapsed, done * per_submission * size / elapsed / 1e6

    return asyncio.run(scenario())


def test_the_channel_carries_thousands_of_submissions_a_second(tmp_path: Path) -> None:
    """Both ends in one process here: a floor, not the channel's speed (benchmarks/tail_sampling.py measures it)."""
    rate, _ = measure(tmp_path / "s.sock", per_submission=10, size=1000, seconds=0.5)
    assert rate > 1000
