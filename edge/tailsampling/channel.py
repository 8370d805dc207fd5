"""The worker ↔ sampler channel: length-prefixed frames with request ids over a Unix socket.

Why a socket of its own rather than shared memory: a submission must wait for the
sampler's write-ahead log before the sender is answered, so every frame needs an answer;
a stream socket gives that, and pipelining (many requests of one worker in flight on its
one connection, answered in any order, matched by id) keeps it cheap.

A frame is `length:u32 | request id:u64 | kind:u8 | body` (big-endian; `length` counts
what follows it; a submission's kind says what it carries: `Submission`). A submission's
body is its fragments, each `trace id:16 bytes | spans:u32 | size:u32 | payload`; the
answer's body is one byte, the `Ack`'s code. The payloads are serialised OTLP requests and
cross the socket untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum

from edge.tailsampling.interfaces import Ack, TraceFragment

log = logging.getLogger(__name__)

HEADER = struct.Struct("!IQB")  # length of the rest, request id, kind
FRAGMENT = struct.Struct("!16sII")  # trace id, spans, payload size
ID_AND_KIND = HEADER.size - 4
MAX_FRAME = 256 << 20  # a body is at most `max_decoded_bytes` (20 MiB by default); this bounds a broken peer

ANSWER = 0x80


class Submission(Enum):
    """What a submission frame carries (its kind byte)."""

    TRACES = 1
    FORWARDED = 2  # fragments a peer forwarded: never routed again
    LOGS = 3  # log records grouped by trace id (`logs.follow_traces`): `spans` counts records
    FORWARDED_LOGS = 4  # log records a peer forwarded: never routed again


KINDS = {kind.value: kind for kind in Submission}

ACK_CODES = {Ack.ACCEPTED: 0, Ack.WAL_FULL: 1, Ack.UNAVAILABLE: 2}
ACKS = {code: ack for ack, code in ACK_CODES.items()}

Submitted = Callable[[list[TraceFragment], Submission], Awaitable[Ack]]
"""The sampler's side: fragments and what they are in, its answer out."""


class FrameError(Exception):
    """Bytes on the socket that are not a frame of this protocol: the connection is closed."""


def submission(request_id: int, fragments: Sequence[TraceFragment], kind: Submission) -> list[bytes]:
    """A submission frame as parts to write (the payloads are not copied into one buffer)."""
    parts: list[bytes] = [b""]
    size = ID_AND_KIND
    for fragment in fragments:
        parts.append(FRAGMENT.pack(fragment.trace_id, fragment.spans, len(fragment.payload)))
        parts.append(fragment.payload)
        size += FRAGMENT.size + len(fragment.payload)
    parts[0] = HEADER.pack(size, request_id, kind.value)
    return parts


def answer(request_id: int, ack: Ack) -> bytes:
    return HEADER.pack(ID_AND_KIND + 1, request_id, ANSWER) + bytes((ACK_CODES[ack],))


def fragments_of(body: bytes) -> list[TraceFragment]:
    """A submission's body back into fragments; raises FrameError when it does not parse."""
    view = memoryview(body)
    out = []
    offset = 0
    while offset < len(body):
        if offset + FRAGMENT.size > len(body):
            raise FrameError("a fragment header is cut short")
        trace_id, spans, size = FRAGMENT.unpack_from(view, offset)
        offset += FRAGMENT.size
        if offset + size > len(body):
            raise FrameError("a fragment's payload is cut short")
        out.append(TraceFragment(trace_id, bytes(view[offset:offset + size]), spans))
        offset += size
    return out


def ack_of(body: bytes) -> Ack:
    if len(body) != 1 or body[0] not in ACKS:
        raise FrameError(f"an answer of {len(body)} bytes that is no Ack")
    return ACKS[body[0]]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    """(request id, kind, body); raises IncompleteReadError at the end of the stream, FrameError on garbage."""
    length, request_id, kind = HEADER.unpack(await reader.readexactly(HEADER.size))
    if length < ID_AND_KIND or length > MAX_FRAME:
        raise FrameError(f"a frame of {length} bytes")
    return request_id, kind, await reader.readexactly(length - ID_AND_KIND)


async def serve_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, submitted: Submitted) -> None:
    """One worker's connection, on the sampler's side: each submission handled as it arrives, answered when done."""
    tasks: set[asyncio.Task[None]] = set()
    try:
        while True:
            request_id, kind, body = await read_frame(reader)
            if kind not in KINDS:
                raise FrameError(f"a frame of unknown kind {kind}")
            task = asyncio.create_task(_handle(writer, request_id, fragments_of(body), KINDS[kind], submitted))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the worker went away (restarted, or stopping): its unanswered requests are its to retry
    except FrameError as exc:
        log.error("closing a worker's connection: %s", exc)
    finally:
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _handle(writer: asyncio.StreamWriter, request_id: int, fragments: list[TraceFragment], kind: Submission,
                  submitted: Submitted) -> None:
    try:
        ack = await submitted(fragments, kind)
    except Exception:  # noqa: BLE001 - the worker is answered whatever went wrong here
        log.exception("a submission failed")
        ack = Ack.UNAVAILABLE
    if not writer.is_closing():
        writer.write(answer(request_id, ack))
