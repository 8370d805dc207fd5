"""One signal's OTLP forwarded to a gRPC upstream: its service's `Export`, on the worker's channel pool.

From the gRPC receiver the filtered message goes as it is, with the call's metadata, and the
upstream's answer comes back as it is: the response message (partial success included), or
its status code, message and trailing metadata (the `google.rpc.Status` with its RetryInfo),
an unreachable upstream being grpcio's own `UNAVAILABLE`.

From an OTLP/HTTP route the body is first made a protobuf message: its Content-Encoding
undone (within `max_decoded_bytes`), OTLP/JSON converted. The request headers go as metadata,
and the call is gzip-compressed when the client's body was compressed. The answer is the
response message (as OTLP/JSON for a JSON client), or the status as an HTTP error
(`edge.protocols.grpc_status`). A body that cannot be made a message is answered here and
never sent: 413 decoded over the limit, 415 an unknown encoding, 400 not OTLP.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from typing import Any

import grpc

from edge.formats.otlp.body import is_protobuf
from edge.formats.otlp.json_protobuf import NotConvertible, request_to_protobuf, response_to_json
from edge.formats.otlp.services import export_method
from edge.logs import RateLimitedLog
from edge.protocols.content_encoding import DecodeFailed, TooLarge, codec_of, decode_or_raise
from edge.protocols.grpc_channels import GrpcTarget
from edge.protocols.grpc_status import Failure, Metadata, error_body, http_status, retry_after_header
from edge.protocols.upstream import JSON, PROTOBUF, RequestHead, Response, Upstream

log = logging.getLogger(__name__)
_troubles = RateLimitedLog(log)  # keyed by the upstream's address

# Metadata gRPC sets itself, or that describes the HTTP body rather than the call.
SKIPPED_HEADERS = frozenset({b"content-type", b"content-encoding", b"accept-encoding", b"accept", b"user-agent",
                             b"te"})
SKIPPED_METADATA = frozenset({"content-type", "user-agent", "te"})
METADATA_KEY = re.compile(rb"[0-9a-z_.-]+")
METADATA_VALUE = re.compile(rb"[\x20-\x7e]*")
UPSTREAM_ERROR_KINDS = {grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.DEADLINE_EXCEEDED: "timeout"}
CallMetadata = Sequence[tuple[str, Any]]  # a call's invocation metadata: str values, bytes for `-bin` keys


class BadBody(Exception):
    """An OTLP/HTTP body that cannot become an `Export` message: answered with `status`, never sent."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


def relayed_metadata(metadata: CallMetadata) -> Metadata:
    """The gRPC client's metadata for the upstream call (API keys such as `authorization` go on)."""
    return tuple((key, value) for key, value in metadata
                 if key not in SKIPPED_METADATA and not key.startswith((":", "grpc-")))


def header_metadata(headers: list[tuple[bytes, bytes]]) -> Metadata:
    """An HTTP client's end-to-end headers as metadata; what metadata cannot carry as text is left out."""
    out = []
    for name, value in headers:
        if (name in SKIPPED_HEADERS or name.startswith(b"grpc-") or name.endswith(b"-bin")
                or not METADATA_KEY.fullmatch(name) or not METADATA_VALUE.fullmatch(value)):
            continue
        out.append((name.decode("ascii"), value.decode("ascii")))
    return tuple(out)


class GrpcClient:
    """OTLP of one signal to one gRPC upstream (`edge.protocols.otlp_upstream.UpstreamClient`)."""

    def __init__(self, upstream: Upstream, target: GrpcTarget, signal: str) -> None:
        self.upstream = upstream
        self.target = target
        self.signal = signal
        self.method = export_method(signal)
        self.timeout = upstream.config.upstream_timeout
        self.max_decoded = upstream.config.max_decoded_bytes
        self._calls: Iterator[grpc.aio.UnaryUnaryMultiCallable] | None = None

    def next_call(self) -> grpc.aio.UnaryUnaryMultiCallable:
        """The `Export` callable on the pool's next channel (the pool is opened on the first call)."""
        if self._calls is None:
            self._calls = self.upstream.channel_pool(self.target).rotation(self.method)
        return next(self._calls)

    async def forward_grpc(self, message: bytes, metadata: CallMetadata) -> bytes | Failure:
        """The upstream's response message, or its status as a Failure to relay."""
        try:
            return await self.next_call()(message, timeout=self.timeout, metadata=relayed_metadata(metadata))
        except grpc.aio.AioRpcError as exc:
            return self.failed(exc)

    async def forward_http(self, scope: dict[str, Any], head: RequestHead, body: bytes) -> Response:
        """The HTTP answer for an OTLP/HTTP request: the response message, or the status's HTTP error."""
        protobuf = is_protobuf(head.content_type)
        try:
            message = self.message(body, head, protobuf)
        except BadBody as bad:
            return error(Failure(grpc.StatusCode.INVALID_ARGUMENT, str(bad)), protobuf, bad.status)
        compression = grpc.Compression.Gzip if head.content_encoding else None
        try:
            answer = await self.next_call()(message, timeout=self.timeout, metadata=header_metadata(head.raw),
                                            compression=compression)
        except grpc.aio.AioRpcError as exc:
            return error(self.failed(exc), protobuf)
        if protobuf:
            return Response(200, [(b"content-type", PROTOBUF.encode())], answer)
        return Response(200, [(b"content-type", JSON.encode())], response_to_json(self.signal, answer))

    def message(self, body: bytes, head: RequestHead, protobuf: bool) -> bytes:
        """The body as an `Export*ServiceRequest` message; raises BadBody."""
        codec = codec_of(head.content_encoding)
        if codec is None:
            raise BadBody(415, f"Content-Encoding {head.content_encoding!r} cannot be decoded for a gRPC upstream")
        try:
            decoded = decode_or_raise(body, codec, self.max_decoded) if codec else body
        except DecodeFailed as exc:
            raise BadBody(413 if isinstance(exc, TooLarge) else 400, f"{codec}: {exc}") from None
        if protobuf:
            return decoded
        try:
            return request_to_protobuf(self.signal, decoded)
        except NotConvertible as exc:
            raise BadBody(400, str(exc)) from None

    def failed(self, exc: grpc.aio.AioRpcError) -> Failure:
        """The upstream's status as received; unavailable and timed-out calls counted, troubles logged."""
        code = exc.code()
        kind = UPSTREAM_ERROR_KINDS.get(code)
        if kind is not None:
            self.upstream.metrics.upstream_error(kind)
        if kind is not None or code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
            _troubles.log(logging.WARNING, self.target.address, "gRPC upstream %s answered %s: %s",
                          self.target.address, code.name, exc.details())
        trailing = tuple((key, value) for key, value in exc.trailing_metadata() or ()
                         if not key.startswith("grpc-") or key.endswith("-bin"))
        return Failure(code, exc.details() or code.name, trailing)


def error(failure: Failure, protobuf: bool, status: int | None = None) -> Response:
    """An OTLP/HTTP error answer: the status's HTTP equivalent, Retry-After, a `google.rpc.Status` body."""
    headers = [(b"content-type", (PROTOBUF if protobuf else JSON).encode())]
    retry = retry_after_header(failure)
    if retry is not None:
        headers.append(retry)
    return Response(status or http_status(failure.code), headers, error_body(failure, protobuf))
