"""Where one signal's OTLP goes once filtered, and over what: an `UpstreamClient` chosen per signal.

Both receivers hand what is left of a batch to their signal's client: the OTLP/HTTP routes
call `forward_http` and relay the HTTP answer it returns, the OTLP/gRPC services call
`forward_grpc` and answer with the response message or status it returns. `otlp_client`
picks the client from the configuration: `GrpcClient` (`edge.protocols.grpc_upstream`) when
the signal's URL is `grpc://` or `grpcs://` or `upstream_protocol` is `grpc`, else
`HttpClient`, which posts OTLP/HTTP to the signal's URL.
"""

from __future__ import annotations

from typing import Any, Protocol

import grpc

from edge.config import Config
from edge.formats.otlp.services import HTTP_PATHS
from edge.protocols.grpc_channels import grpc_target
from edge.protocols.grpc_status import DEFAULT_RETRY_SECONDS, Failure, http_failure, retryable
from edge.protocols.grpc_upstream import CallMetadata, GrpcClient
from edge.protocols.upstream import HOP_BY_HOP, PROTOBUF, RequestHead, Response, Upstream, UpstreamError, url

PROTOBUF_TYPE = PROTOBUF.encode()
EMPTY_RESPONSE = b""  # an Export*ServiceResponse with no field set: full success
# gRPC's own metadata, and what describes the gRPC message rather than the forwarded HTTP body
SKIPPED_METADATA = frozenset({"content-type", "content-encoding", "accept-encoding", "user-agent"})
HOP_BY_HOP_TEXT = frozenset(name.decode("latin-1") for name in HOP_BY_HOP)


class UpstreamClient(Protocol):
    """One signal's way upstream, as both receivers use it."""

    async def forward_http(self, scope: dict[str, Any], head: RequestHead, body: bytes) -> Response:
        """An OTLP/HTTP request's filtered body (still in its Content-Encoding): the answer to relay."""
        ...

    async def forward_grpc(self, message: bytes, metadata: CallMetadata) -> bytes | Failure:
        """A gRPC call's filtered message: the response message, or the status to answer with."""
        ...


def otlp_client(config: Config, signal: str, url: str, upstream: Upstream) -> UpstreamClient:
    """The client for a signal whose OTLP goes to `url`."""
    if config.over_grpc(url):
        return GrpcClient(upstream, grpc_target(url), signal)
    return HttpClient(upstream, url, signal)


class HttpClient:
    """OTLP/HTTP to the signal's URL + the request's path (an OTLP/HTTP route) or the signal's path (gRPC)."""

    def __init__(self, upstream: Upstream, base_url: str, signal: str) -> None:
        self.upstream = upstream
        self.base_url = base_url
        self.grpc_url = url(base_url, HTTP_PATHS.get(signal, "/").encode())  # made once: the same for every call

    async def forward_http(self, scope: dict[str, Any], head: RequestHead, body: bytes) -> Response:
        return await self.upstream.exchange(self.base_url, "POST", scope, head, body)

    async def forward_grpc(self, message: bytes, metadata: CallMetadata) -> bytes | Failure:
        """As OTLP/HTTP protobuf; the upstream's HTTP answer as its gRPC equivalent."""
        try:
            response = await self.upstream.exchange_at(self.grpc_url, "POST", forwarded_headers(metadata), message)
        except UpstreamError as exc:
            what = "timed out" if exc.status == 504 else "unreachable"
            return retryable(grpc.StatusCode.UNAVAILABLE, f"upstream {what}", DEFAULT_RETRY_SECONDS)
        if 200 <= response.status < 300:
            return relayed(response.headers, response.body)
        return http_failure(response.status, response.headers)


def relayed(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The upstream's `Export*ServiceResponse` (partial success) when it answered protobuf; an answer in
    another format (a JSON `{}`) cannot be a gRPC message, and a 2xx means success: the empty response."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return body if value.split(b";")[0].strip().lower() == PROTOBUF_TYPE else EMPTY_RESPONSE
    return EMPTY_RESPONSE


def forwarded_headers(metadata: CallMetadata) -> list[tuple[str, str]]:
    """The call's metadata as HTTP headers (API keys such as `authorization` go on, like HTTP headers do).
    Text metadata is already `str`, as the HTTP client takes it: nothing to encode or decode per call."""
    headers = [("content-type", PROTOBUF)]
    for key, value in metadata or ():
        if key.startswith((":", "grpc-")) or key.endswith("-bin") or key in SKIPPED_METADATA or key in HOP_BY_HOP_TEXT:
            continue
        headers.append((key, value))
    return headers
