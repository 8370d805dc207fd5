"""Request bodies: whole or not at all, within a deadline, and counted only once they are complete.

Falcon reads an ASGI `http.disconnect` like the end of the body, so a chunked upload cut
short (or one shorter than its Content-Length) would look complete and a part of it would
be forwarded: for protobuf a part can even parse as a smaller, valid batch, delivered while
the sender, never answered, sends it all again. `BodyWatch` wraps the ASGI app and marks
the scope when the client disconnected; routes check `client_gone(scope)` before anything
read goes upstream.

Slow senders: a client dribbling one byte every few seconds never trips an idle timeout.
Each request gets `client_body_timeout` seconds from its headers to the end of its body
(as nginx's body deadline); past it the receive raises `BodyTimeout` and the request is
answered 408 with the connection closed.

Admission (`max_connections`): a request counts against its worker's share only from the
moment its body is complete (at once for requests without a body), so requests still
being received cannot starve those ready to be filtered and forwarded. A complete body
that finds the worker full raises `Busy` (503 with Retry-After). The cost is one extra
coroutine call per body event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

CLIENT_GONE = "edge.client_gone"  # scope key, set when the client disconnected
LATE_BODY = b'{"error":"request body not received in time"}'
LATE_HEADERS = [(b"content-type", b"application/json"), (b"connection", b"close")]
BODY = "edge.body"  # scope key of the request's BodyState


class ClientGone(Exception):
    """Raised inside a streamed body so the upstream request is aborted, never completed short."""


class Unread(Exception):
    """A buffered body that is not used: `status` 413 (over the route's limit) or 400 (cut short)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class BodyTimeout(Exception):
    """The body was not complete within `client_body_timeout` of the request's start."""


class Busy(Exception):
    """The body is complete, but the worker already works on its share of `max_connections`."""


class Admission:
    """Requests one worker is working on, against its share of `max_connections`."""

    __slots__ = ("limit", "in_flight")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0

    def enter(self) -> bool:
        if self.in_flight >= self.limit:
            return False
        self.in_flight += 1
        return True

    def leave(self) -> None:
        self.in_flight -= 1


def worker_share(max_connections: int, workers: int) -> int:
    """Requests one worker admits at once: its share of the instance's `max_connections`."""
    return max(1, -(-max_connections // max(1, workers)))


class BodyState:
    """One request's body: whether it is admitted, exempt from admission, late or refused."""

    __slots__ = ("admission", "complete", "routed", "admitted", "exempt", "timed_out", "refused")

    def __init__(self, admission: Admission) -> None:
        self.admission = admission
        self.complete = False
        self.routed = False  # the router has the request (Falcon reads a first body event before)
        self.admitted = False
        self.exempt = False  # the admin routes: always served
        self.timed_out = False
        self.refused = False

    def admit(self) -> bool:
        """Count this request against the worker's share (once); False when the share is full."""
        if self.exempt or self.admitted:
            return True
        if not self.admission.enter():
            self.refused = True
            return False
        self.admitted = True
        return True

    def release(self) -> None:
        if self.admitted:
            self.admitted = False
            self.admission.leave()


class BodyWatch:
    """ASGI wrapper: disconnects, the body deadline and admission at the end of the body."""

    __slots__ = ("app", "admission", "timeout")

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]], admission: Admission,
                 timeout: float) -> None:
        self.app = app
        self.admission = admission
        self.timeout = timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope[BODY] = BodyState(self.admission)
        deadline = asyncio.get_running_loop().time() + self.timeout

        async def watched() -> dict[str, Any]:
            if state.complete:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    event = await receive()
            except TimeoutError:
                state.timed_out = True
                raise BodyTimeout(f"request body not complete within {self.timeout:g} s") from None
            if event["type"] == "http.disconnect":
                scope[CLIENT_GONE] = True
            elif not event.get("more_body"):
                state.complete = True
                if state.routed and not state.admit():
                    raise Busy("worker at its share of max_connections")
            return event

        try:
            return await self.app(scope, watched, send)
        except BodyTimeout:  # still in Falcon's first read, before any route: nothing was sent yet
            await send({"type": "http.response.start", "status": 408, "headers": LATE_HEADERS})
            await send({"type": "http.response.body", "body": LATE_BODY})


def body_state(scope: dict[str, Any]) -> BodyState:
    return scope[BODY]


def client_gone(scope: dict[str, Any]) -> bool:
    return CLIENT_GONE in scope


async def read_whole(req: Any, content_length: int | None, limit: int) -> bytes:
    """The whole body of a request, at most `limit` bytes; raises Unread(413) when it announces or
    sends more, Unread(400) when the client went away or sent less than it announced: a part of a
    body is never used."""
    if content_length is not None:
        if content_length > limit:
            raise Unread(413)
        body = await req.stream.read()
    else:
        body = await req.stream.read(limit + 1)
    if len(body) > limit:
        raise Unread(413)
    if client_gone(req.scope) or (content_length is not None and len(body) != content_length):
        raise Unread(400)
    return body


async def complete_chunks(stream: Any, scope: dict[str, Any]) -> AsyncIterator[bytes]:
    """The body's chunks; raises ClientGone at the end if the client went away before finishing."""
    async for chunk in stream:
        yield chunk
    if CLIENT_GONE in scope:
        raise ClientGone("the client disconnected before the end of its body")
