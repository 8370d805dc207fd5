"""Every other path and method: forwarded to `upstream_url` unmodified, bodies streamed.

Small bodies (known length up to 64 KiB) are read in one piece, which is cheaper than
streaming them; larger or chunked ones are streamed in both directions, so memory stays
bounded whatever the size. The upstream's Content-Length is relayed for streamed bodies.
"""

from __future__ import annotations

from typing import Any

import aiohttp

from edge.protocols.body import client_gone, complete_chunks
from edge.protocols.upstream import Upstream, error_response, relay_headers, request_head, request_target, url

SMALL_BODY = 64 * 1024
_NO_BODY_STATUS = frozenset({204, 304})


class UpstreamBody:
    """The upstream's response body as Falcon's `resp.stream`; `close()` returns the connection."""

    __slots__ = ("response", "upstream")

    def __init__(self, response: aiohttp.ClientResponse, upstream: Upstream) -> None:
        self.response = response
        self.upstream = upstream

    def __aiter__(self) -> UpstreamBody:
        return self

    async def __anext__(self) -> bytes:
        try:
            chunk = await self.upstream.read(self.response)
        except Exception as exc:  # noqa: BLE001 - headers are gone: abort the client connection
            raise self.upstream.failed(exc, self.response.url) from exc
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def close(self) -> None:
        self.response.release()


class Passthrough:
    route = "passthrough"

    def __init__(self, base_url: str, upstream: Upstream) -> None:
        self.base_url = base_url
        self.upstream = upstream

    async def __call__(self, req: Any, resp: Any) -> None:
        scope = req.scope
        method = scope["method"]
        head = request_head(scope["headers"])
        headers = head.pairs()
        length = head.content_length
        if head.chunked or (length is not None and length > SMALL_BODY):
            data: Any = complete_chunks(req.stream, scope)
            if length is not None and not head.chunked:
                headers = [*headers, ("Content-Length", str(length))]
        elif length:
            data = await req.stream.read()
            if client_gone(scope) or len(data) != length:
                return error_response(resp, 400)  # the client went away mid-body: never forward a part
        else:
            data = None
        response = await self.upstream.open(method, url(self.base_url, request_target(scope)), headers, data,
                                           streaming=True)
        size = response.content_length
        if method == "HEAD" or response.status in _NO_BODY_STATUS or size == 0:
            response.release()
        elif size is not None and size <= SMALL_BODY:
            try:
                resp.data = await response.read()
            except Exception as exc:  # noqa: BLE001
                raise self.upstream.failed(exc, response.url) from None
            finally:
                response.release()
        else:
            resp.stream = UpstreamBody(response, self.upstream)
        # Headers last: an error above leaves a clean response for the 502 answer.
        relay_headers(resp, response.status, response.raw_headers, keep_length=True)
