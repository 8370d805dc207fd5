"""A worker's `SamplerClient`: one connection to the sampler per worker process, pipelined.

Every request of the worker shares the connection: each submission gets a request id, and
a reader task hands each answer to the request waiting for it. When the sampler is down
(restarting after a crash, or not started yet) a submission waits a short, bounded time for
it to come back, then answers `Ack.UNAVAILABLE` so the sender is told 503 with Retry-After
and retries; requests in flight when the connection breaks get the same answer (the
sampler may have logged them already: the sender's retry is then a duplicate, which the
trace's decision absorbs).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Sequence

from edge.tailsampling.channel import ANSWER, FrameError, Submission, ack_of, read_frame, submission
from edge.tailsampling.interfaces import Ack, TraceFragment

log = logging.getLogger(__name__)

CONNECT_WAIT_SECONDS = 2.0  # how long a submission waits for a sampler that is down
CONNECT_RETRY_SECONDS = 0.05
ANSWER_WAIT_SECONDS = 30.0  # a sampler that accepted the request but never answers


class Connection:
    """One open connection and the requests waiting on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[Ack]] = {}
        self.reading = asyncio.create_task(self._read(reader))

    @property
    def open(self) -> bool:
        return not self.reading.done() and not self.writer.is_closing()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, kind, body = await read_frame(reader)
                if kind != ANSWER:
                    raise FrameError(f"a frame of kind {kind} from the sampler")
                future = self.waiting.pop(request_id, None)
                if future is not None and not future.done():
                    future.set_result(ack_of(body))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except FrameError as exc:
            log.error("the sampler's connection broke: %s", exc)
        finally:
            self.close()

    def close(self) -> None:
        """Every request still waiting is answered UNAVAILABLE."""
        self.writer.close()
        for future in self.waiting.values():
            if not future.done():
                future.set_result(Ack.UNAVAILABLE)
        self.waiting.clear()


class SocketSamplerClient:
    """The `SamplerClient` of a gunicorn or gRPC worker, connected lazily to the sampler's socket."""

    def __init__(self, path: str, connect_wait: float = CONNECT_WAIT_SECONDS,
                 answer_wait: float = ANSWER_WAIT_SECONDS) -> None:
        self.path = path
        self.connect_wait = connect_wait
        self.answer_wait = answer_wait
        self._ids = itertools.count(1)
        self._connection: Connection | None = None
        self._connecting: asyncio.Lock | None = None  # created in the worker's loop, on first use
        self._failed_at = float("-inf")  # loop time at which the last attempt to connect gave up

    async def submit(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        return await self._send(fragments, Submission.FORWARDED if forwarded else Submission.TRACES)

    async def submit_logs(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        """Log records grouped by trace id (`logs.follow_traces`); ACCEPTED once the sampler logged them.
        `forwarded`: they came from a peer."""
        return await self._send(fragments, Submission.FORWARDED_LOGS if forwarded else Submission.LOGS)

    async def _send(self, fragments: Sequence[TraceFragment], kind: Submission) -> Ack:
        connection = await self._connected()
        if connection is None:
            return Ack.UNAVAILABLE
        request_id = next(self._ids)
        future: asyncio.Future[Ack] = asyncio.get_running_loop().create_future()
        connection.waiting[request_id] = future
        try:
            connection.writer.writelines(submission(request_id, fragments, kind))
            await connection.writer.drain()
            return await asyncio.wait_for(future, self.answer_wait)
        except (ConnectionError, TimeoutError):
            connection.waiting.pop(request_id, None)
            return Ack.UNAVAILABLE

    async def _connected(self) -> Connection | None:
        """The open connection, opening it when needed: at most `connect_wait` seconds, shared by every caller."""
        if self._connection is not None and self._connection.open:
            return self._connection
        if self._connecting is None:
            self._connecting = asyncio.Lock()
        asked = asyncio.get_running_loop().time()
        async with self._connecting:
            if self._connection is not None and self._connection.open:
                return self._connection
            if self._failed_at >= asked:
                return None  # an attempt that spanned this caller's wait has just given up
            self._connection = await self._connect()
            if self._connection is None:
                self._failed_at = asyncio.get_running_loop().time()
            return self._connection

    async def _connect(self) -> Connection | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.connect_wait
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(self.path)
                return Connection(reader, writer)
            except OSError:
                if loop.time() + CONNECT_RETRY_SECONDS > deadline:
                    return None
                await asyncio.sleep(CONNECT_RETRY_SECONDS)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()
            connection.reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await connection.reading
