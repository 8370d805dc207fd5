"""Forwarding to the upstream: connection pools per worker, header filtering, errors.

Requests keep the method, the path and query exactly as received and every header except
the hop-by-hop ones (plus any the client named in `Connection`); the upstream's Host and
the Content-Length of the body actually sent are added. Responses are relayed with their
status and headers (minus hop-by-hop and Date: edge dates its answers) and their body as received,
never decompressed.
An unreachable upstream is a 502, one that does not answer within `upstream_timeout` a
504, both with a short JSON body. Failures (connect error, timeout, reset) and 5xx answers
are logged at warn, a 413 answer at info: at most one line per upstream per 10 s with a
count (`RateLimitedLog`), so an upstream down never floods the log.

One aiohttp `ClientSession` per worker (`auto_decompress=False`) carries buffered
exchanges (OTLP batches) and streaming passthrough alike; it keeps connections alive and
verifies TLS certificates unless `tls_insecure_skip_verify` is set. aiohttp was measured
against httpx, aiosonic and pyreqwest (`benchmarks/upstream_client.py`): only pyreqwest
costs less per request, and it cannot relay a response header value that is not UTF-8. The channels to gRPC
upstreams (`edge.protocols.grpc_channels`) belong to the same object, so the worker opens
and closes all its upstream connections in one place.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from edge.config import Config
from edge.logs import RateLimitedLog
from edge.protocols.body import LATE_BODY, BodyTimeout, Busy, ClientGone
from edge.protocols.grpc_channels import ChannelPool, GrpcTarget
from edge.protocols.self_metrics import Metrics

log = logging.getLogger(__name__)
_troubles = RateLimitedLog(log)  # keyed by upstream origin (scheme, host, port: never userinfo)

HOP_BY_HOP = frozenset({b"host", b"connection", b"content-length", b"transfer-encoding", b"keep-alive",
                        b"proxy-connection", b"te", b"trailer", b"upgrade",
                        b"expect"})  # the HTTP server already answered the client's 100-continue; the body is in hand
# Response headers never relayed: the hop-by-hop ones, and Date, which edge's HTTP server writes on every
# response (as nginx replaces the upstream's); content-length is handled separately (kept for streamed bodies).
RESPONSE_NOT_RELAYED = frozenset({b"connection", b"transfer-encoding", b"keep-alive", b"proxy-connection", b"te",
                                  b"trailer", b"upgrade", b"content-length", b"date"})
# Headers aiohttp would invent; the client's own are forwarded, nothing is added.
SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
JSON = "application/json"
PROTOBUF = "application/x-protobuf"

ERROR_BODIES = {
    502: b'{"error":"upstream unreachable"}',
    504: b'{"error":"upstream timed out"}',
    413: b'{"error":"request body too large"}',
    400: b'{"error":"incomplete request body"}',
    408: LATE_BODY,
}


@dataclass(slots=True)
class Response:
    """A buffered upstream answer: status, raw header pairs, whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


@dataclass(slots=True)
class RequestHead:
    """The request headers to forward (raw ASGI pairs) and the few the proxy itself looks at."""

    raw: list[tuple[bytes, bytes]]
    content_length: int | None
    content_type: str | None
    content_encoding: str | None
    chunked: bool

    def pairs(self) -> list[tuple[str, str]]:
        return [(n.decode("latin-1"), _header_text(v)) for n, v in self.raw]


def _header_text(value: bytes) -> str:
    """A header value as aiohttp needs it: aiohttp writes header text as UTF-8, so a UTF-8 value
    decoded as UTF-8 reaches the upstream byte for byte (latin-1 would double-encode it). Bytes
    that are not UTF-8 cannot be carried exactly; they go as their latin-1 reading."""
    if value.isascii():
        return value.decode("ascii")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def request_head(raw: list[tuple[bytes, bytes]]) -> RequestHead:
    """One pass over the ASGI headers (lower-case names): filter and pick out the interesting ones."""
    headers: list[tuple[bytes, bytes]] = []
    length = ctype = encoding = None
    chunked = False
    connection = None
    for pair in raw:
        name = pair[0]
        if name in HOP_BY_HOP:
            if name == b"content-length":
                try:
                    length = int(pair[1])
                except ValueError:
                    length = None
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                connection = pair[1]
            continue
        if name == b"content-type":
            ctype = pair[1].decode("latin-1")
        elif name == b"content-encoding":
            encoding = pair[1].decode("latin-1")
        headers.append(pair)
    if connection is not None:
        named = {t.strip().lower() for t in connection.split(b",")} - {b"keep-alive", b"close", b""}
        if named:
            headers = [(n, v) for n, v in headers if n not in named]
    return RequestHead(headers, length, ctype, encoding, chunked)


def request_target(scope: dict[str, Any]) -> bytes:
    """The path as received plus the query verbatim (both still percent-encoded)."""
    path = scope.get("raw_path") or scope["path"].encode()
    query = scope.get("query_string")
    return path + b"?" + query if query else path


class UpstreamError(Exception):
    def __init__(self, status: int, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind


def classify(exc: BaseException) -> UpstreamError:
    """Map a client-side failure to the status we answer with."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamError(504, "timeout", str(exc) or "timed out")
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(502, "connect", str(exc))
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        return UpstreamError(502, "disconnect", str(exc) or type(exc).__name__)
    if isinstance(exc, aiohttp.ClientError):
        return UpstreamError(502, "protocol", str(exc) or type(exc).__name__)
    return UpstreamError(502, "internal", repr(exc))


class Upstream:
    """The worker's connections to every upstream URL (opened in the ASGI lifespan)."""

    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.session: aiohttp.ClientSession | None = None
        t = config.upstream_timeout
        self.timeout = aiohttp.ClientTimeout(total=t)
        # Streamed bodies may take long as a whole: connecting is bounded here, the wait for the
        # headers and every read of the body in `open` and `read`. Not with aiohttp's sock_read: its
        # timer restarts when reading resumes after a pause, even once the body has ended, so it can
        # outlive the response and fail the next request on the pooled connection at once
        # ("Timeout on reading data from socket", answered 504 in a millisecond).
        self.stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=t)
        self.pools: dict[GrpcTarget, ChannelPool] = {}
        # Whatever edge accepts can be sent on: a request body, decoded, or a gRPC message.
        self.message_limit = max(config.max_body_size, config.max_decoded_bytes,
                                 config.grpc.message_limit(config.max_body_size))

    async def start(self) -> None:
        if self.session is not None:
            return
        verify = not self.config.tls_insecure_skip_verify  # True: the default context, certificates verified
        connector = aiohttp.TCPConnector(limit=max(1, self.config.max_connections), limit_per_host=0,
                                         ssl=verify, keepalive_timeout=30, ttl_dns_cache=60)
        self.session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                             skip_auto_headers=SKIP_AUTO_HEADERS, timeout=self.timeout,
                                             cookie_jar=aiohttp.DummyCookieJar(), raise_for_status=False)

    async def close(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()
        pools, self.pools = list(self.pools.values()), {}
        for pool in pools:
            await pool.close()

    def channel_pool(self, target: GrpcTarget) -> ChannelPool:
        """The worker's channels to a gRPC upstream, opened on first use (inside the event loop)."""
        pool = self.pools.get(target)
        if pool is None:
            pool = self.pools[target] = ChannelPool(target, self.message_limit)
        return pool

    async def exchange(self, base_url: str, method: str, scope: dict[str, Any], head: RequestHead,
                       body: bytes) -> Response:
        """A buffered request/response (the whole response body is read)."""
        return await self.exchange_at(url(base_url, request_target(scope)), method, head.pairs(), body)

    async def exchange_at(self, target: URL, method: str, headers: list[tuple[str, str]], body: bytes) -> Response:
        """`exchange` to a URL and with headers already made (a caller that sends many to the same one)."""
        try:
            response = await self.open(method, target, headers, body)
            try:
                data = await response.read()
            finally:
                response.release()
            return Response(response.status, list(response.raw_headers), data)
        except UpstreamError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure becomes a 502/504 answer
            raise self.failed(exc, target) from None

    async def open(self, method: str, target: URL, headers: list[tuple[str, str]], data: Any,
                   *, streaming: bool = False) -> aiohttp.ClientResponse:
        """Send the request through aiohttp and return the response with its body unread."""
        if self.session is None:  # no lifespan (e.g. a server without it): start lazily
            await self.start()
        assert self.session is not None
        sent = self.session.request(method, target, headers=headers, data=data, allow_redirects=False,
                                    compress=None, timeout=self.stream_timeout if streaming else self.timeout)
        try:
            if streaming:  # the headers within upstream_timeout (a buffered exchange has aiohttp's total)
                async with asyncio.timeout(self.config.upstream_timeout):
                    response = await sent
            else:
                response = await sent
        except Exception as exc:  # noqa: BLE001
            raise self.failed(exc, target) from None
        if response.status >= 500 or response.status == 413:
            answered(target, response.status)
        return response

    async def read(self, response: aiohttp.ClientResponse) -> bytes:
        """The next piece of a streamed body (b"" at its end); TimeoutError when the upstream is silent
        for `upstream_timeout`."""
        async with asyncio.timeout(self.config.upstream_timeout):
            return await response.content.readany()

    def failed(self, exc: BaseException, target: URL | None = None) -> UpstreamError:
        """Count and log (rate-limited, per upstream) a request that got no usable answer."""
        error = classify(exc)
        self.metrics.upstream_error(error.kind)
        where = origin(target, exc)
        if client_side(exc):  # the request's own body failed while it was streamed: not the upstream's doing
            log.debug("request to upstream %s abandoned (%s): %s", where, error.kind, error)
        elif not _troubles.log(logging.WARNING, where, "upstream %s failed (%s): %s", where, error.kind, error):
            log.debug("upstream %s failed (%s): %s", where, error.kind, error)  # folded into the next warning
        return error


def client_side(exc: BaseException | None) -> bool:
    """Whether a failure comes from the client's side of a streamed request (gone, late, refused)."""
    for _ in range(4):  # aiohttp may wrap what the body iterator raised
        if exc is None:
            return False
        if isinstance(exc, (ClientGone, BodyTimeout, Busy)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def origin(target: URL | None, exc: BaseException | None = None) -> str:
    """The upstream a line is about: scheme, host and port of the request (or of the failed connection)."""
    if target is not None and target.host:
        return str(target.origin())
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{exc.host}:{exc.port}"
    return "(unknown)"


def answered(target: URL, status: int) -> None:
    """An upstream's 5xx at warn and its 413 at info (the sender gets its answer as it is, logged here
    since its batches are lost or retried), one line per upstream and kind per 10 s."""
    where = origin(target)
    if status == 413:
        _troubles.log(logging.INFO, f"{where} 413", "upstream %s answered 413: a request body was too large for it",
                      where)
    else:
        _troubles.log(logging.WARNING, where, "upstream %s answered %d", where, status)


def url(base_url: str, target: bytes) -> URL:
    return URL(base_url + target.decode("latin-1"), encoded=True)


def relay_headers(resp: Any, status: int, raw_headers: Any, keep_length: bool) -> None:
    """Copy the upstream's status and end-to-end headers onto the Falcon response."""
    resp.status = status
    append = resp.append_header
    for raw_name, raw_value in raw_headers:
        lower = raw_name.lower()
        if lower in RESPONSE_NOT_RELAYED and not (keep_length and lower == b"content-length"):
            continue
        try:
            append(lower.decode("latin-1"), raw_value.decode("latin-1"))
        except Exception:  # noqa: BLE001 - an unrepresentable header is dropped, not fatal
            log.debug("dropping upstream header %r", raw_name)


BUSY_BODY = b'{"error":"too many requests in flight"}'
RETRY_AFTER_BUSY = "1"  # seconds: capacity frees up as soon as requests in flight finish


def busy_response(resp: Any) -> None:
    """503 with Retry-After: the proxy is at `max_connections`; the sender retries shortly."""
    resp.status = 503
    resp.content_type = JSON
    resp.set_header("Retry-After", RETRY_AFTER_BUSY)
    resp.data = BUSY_BODY


def late_body_response(resp: Any) -> None:
    """408 and a closed connection: the rest of a late body must not be read as a next request."""
    error_response(resp, 408)
    resp.set_header("Connection", "close")


def error_response(resp: Any, status: int) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = ERROR_BODIES.get(status, b'{"error":"proxy error"}')
