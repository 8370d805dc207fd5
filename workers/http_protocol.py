"""uvicorn's httptools protocol with gunicorn's limits on the request head, refusals answered in order.

httptools (llhttp) frames requests strictly: Content-Length together with Transfer-Encoding,
duplicate lengths, a bad chunk size or a bare LF is a parse error, answered 400 with the
connection closed, so a request cannot be smuggled past the proxy. It has no limit on the
request target, the number of header fields or their size, which gunicorn enforced and edge
relies on (`--limit-request-field_size 16384`, gunicorn's defaults for the others). This
protocol applies gunicorn's three limits and answers 414 or 431, as gunicorn did. httptools
buffers a header field whole before handing it over, so the bytes received while a head is
open are bounded too: one huge field cannot grow a worker's memory without limit.

uvicorn answers a malformed request at once and closes the connection, even when a valid
request received just before it (pipelined, or its body followed by junk) is still being
served: that request's response was lost. Here the refusal waits for the responses before it.
Refusals are not logged (gunicorn logged none): anyone can send junk, and a log line per
request would let them flood the log.

An app that raises CancelledError while its task is not being cancelled ends its response
early on purpose (`edge.protocols.prometheus.ScrapeAborted`: the one way to tell a client
that a streamed body failed): the connection is dropped without a word, as gunicorn's worker
did, where uvicorn would log the exception with a traceback.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from typing import Any

import httptools
from uvicorn._types import ASGI3Application, ASGIReceiveCallable, ASGISendCallable, Scope
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

REFUSALS = {
    400: b'{"error":"malformed request"}',
    414: b'{"error":"request target too long"}',
    431: b'{"error":"request header fields too large"}',
}


@dataclass(frozen=True, slots=True)
class HeadLimits:
    """gunicorn's `limit_request_line`, `limit_request_fields` and `limit_request_field_size`."""

    line: int  # bytes of the request target
    fields: int  # header fields
    field_size: int  # bytes of one field, `name: value`

    @property
    def head(self) -> int:
        """Bytes a head may take in all: every field at its largest, with the line and CRLFs."""
        return self.line + self.fields * (self.field_size + 2) + 64


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop httptools; the protocol's `refused_status` says the answer."""


def refusal(status: int) -> bytes:
    """A complete response that refuses a request and announces the connection's end."""
    body = REFUSALS[status]
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, HTTPStatus(status).phrase.encode(), len(body)) + body)


async def abandon_quietly(cycle: RequestResponseCycle, app: ASGI3Application, scope: Scope,
                          receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    """`app`, with a CancelledError of its own making taken as "drop this connection"."""
    try:
        await app(scope, receive, send)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the task itself is cancelled (a shutdown past its grace): uvicorn's to handle
        cycle.transport.close()
        cycle.disconnected = True  # so uvicorn does not complain of a response left incomplete


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """One client connection: uvicorn's httptools protocol within `limits`."""

    def __init__(self, config: Config, server_state: ServerState, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None, *, limits: HeadLimits) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        self.head_open = False  # between the start of a request and the end of its header fields
        self.head_bytes = 0  # received while the head is open (a chunk may also hold what came before it)
        self.fields = 0
        self.refused_status = 400  # what the next refusal answers (400 unless a limit was hit)
        self.pending: bytes | None = None  # a refusal waiting for the responses before it

    def data_received(self, data: bytes) -> None:
        """uvicorn's, without its log lines for junk and for upgrades (edge upgrades to nothing)."""
        if self.pending is not None:
            return  # refused: what follows is never parsed
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # Served as a plain request; the parser reads nothing after its head, so the connection
            # ends with the response.
            self.cycle.keep_alive = False
        except httptools.HttpParserError:
            self.send_400_response("")
            return
        if self.head_open and not self.transport.is_closing():
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.head:
                self.refused_status = 431
                self.send_400_response("")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_open = True
        self.head_bytes = 0
        self.fields = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.limits.line:
            raise self._refuse(414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields += 1
        if self.fields > self.limits.fields or len(name) + len(value) + 2 > self.limits.field_size:
            raise self._refuse(431)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.head_open = False
        super().on_headers_complete()

    def _refuse(self, status: int) -> HeadTooLarge:
        self.refused_status = status
        return HeadTooLarge(HTTPStatus(status).phrase)

    def send_400_response(self, msg: str) -> None:
        """The answer to a request that cannot be parsed or breaks a limit (`msg`, uvicorn's text,
        is not sent), once the requests before it are answered."""
        answer = refusal(self.refused_status)
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            if not cycle.more_body:  # the request before is whole: it is answered first
                self.pending = answer
                self.flow.pause_reading()
                return
            # The junk is in that request's body: it is abandoned as if the client had gone (the app
            # sees a disconnect), answered here unless its response has begun or others wait before it.
            if cycle.response_started or self.pipeline:
                self.transport.close()
                return
        self.transport.write(answer)
        self.transport.close()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        super()._start_asgi_task(cycle, partial(abandon_quietly, cycle, app))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.pending is not None and self.cycle.response_complete and not self.transport.is_closing():
            self.transport.write(self.pending)
            self.transport.close()
