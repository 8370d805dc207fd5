"""Request bodies arrive whole or not at all: a client that goes away mid-body is noticed.

Falcon reads an ASGI `http.disconnect` like the end of the body, so a chunked upload cut
short (or one shorter than its Content-Length) would look complete and a part of it would
be forwarded: for protobuf a part can even parse as a smaller, valid batch, delivered while
the sender, never answered, sends it all again. `DisconnectWatch` wraps the ASGI app and
marks the scope when the client disconnected; routes check `client_gone(scope)` before
anything read goes upstream. The cost is one extra coroutine call per body event.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

CLIENT_GONE = "edge.client_gone"  # scope key, set when the client disconnected


class ClientGone(Exception):
    """Raised inside a streamed body so the upstream request is aborted, never completed short."""


class DisconnectWatch:
    """ASGI wrapper recording `http.disconnect` events in the request scope."""

    __slots__ = ("app",)

    def __init__(self, app: Callable[[Any, Any, Any], Awaitable[None]]) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def watched() -> dict[str, Any]:
            event = await receive()
            if event["type"] == "http.disconnect":
                scope[CLIENT_GONE] = True
            return event

        return await self.app(scope, watched, send)


def client_gone(scope: dict[str, Any]) -> bool:
    return CLIENT_GONE in scope


async def complete_chunks(stream: Any, scope: dict[str, Any]) -> AsyncIterator[bytes]:
    """The body's chunks; raises ClientGone at the end if the client went away before finishing."""
    async for chunk in stream:
        yield chunk
    if CLIENT_GONE in scope:
        raise ClientGone("the client disconnected before the end of its body")
