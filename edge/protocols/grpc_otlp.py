"""OTLP/gRPC: `LogsService`, `MetricsService` and `TraceService` `Export`, filtered as OTLP/HTTP is.

The services are registered as generic handlers on raw bytes: the request message goes
straight into the protobuf batch views (no generated message classes, no decode and
re-encode), through the very `OtlpRoute.filter` the HTTP route uses, and what is left is
forwarded as OTLP/HTTP protobuf to the signal's URL + `/v1/logs|metrics|traces`. grpcio
has already undone the client's gzip compression, so the body is plain protobuf.

Status mapping (the OTLP specification's): an upstream 2xx relays its protobuf
`Export*ServiceResponse` body (partial success included; an answer in another format is
an empty response); 429, 502, 503 and 504 are
`UNAVAILABLE` with a `google.rpc.RetryInfo` (the upstream's `Retry-After`, else 1 s), so
SDKs retry; 400 is `INVALID_ARGUMENT`; an unreachable or too slow upstream is
`UNAVAILABLE`. A message that is not OTLP is `INVALID_ARGUMENT` whatever `unfiltered`
says: a gRPC client sent a message its own schema could not have produced, and the
upstream could not read it either. Everything dropped is an empty success, no upstream call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import grpc
from google.protobuf.duration_pb2 import Duration

from edge.protocols.otlp import DROPPED, PROTOBUF, SAMPLER_RETRY_SECONDS, OtlpRoute
from edge.protocols.self_metrics import Metrics
from edge.protocols.tail_handoff import SamplerConnection, handoffs
from edge.protocols.unfiltered import UNDECODABLE, Reason, Refused, note
from edge.protocols.upstream import HOP_BY_HOP, RequestHead, Upstream, UpstreamError
from edge.runtime import Runtime
from edge.tailsampling.interfaces import Ack

log = logging.getLogger(__name__)

SERVICES = {
    "log": "opentelemetry.proto.collector.logs.v1.LogsService",
    "metric": "opentelemetry.proto.collector.metrics.v1.MetricsService",
    "trace": "opentelemetry.proto.collector.trace.v1.TraceService",
}
UPSTREAM_PATHS = {"log": "/v1/logs", "metric": "/v1/metrics", "trace": "/v1/traces"}
PROTOBUF_TYPE = PROTOBUF.encode()
EMPTY_RESPONSE = b""  # an Export*ServiceResponse with no field set: full success
DEFAULT_RETRY_SECONDS = 1
RETRYABLE_UPSTREAM = frozenset({429, 502, 503, 504})
UPSTREAM_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                  403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                  413: grpc.StatusCode.RESOURCE_EXHAUSTED}
REFUSED_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                 415: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL}
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# gRPC's own metadata, and what describes the gRPC message rather than the forwarded HTTP body
SKIPPED_METADATA = frozenset({"content-type", "content-encoding", "accept-encoding", "user-agent"})


@dataclass(frozen=True, slots=True)
class Failure:
    """A call answered with a non-OK status instead of a response message."""

    code: grpc.StatusCode
    details: str
    retry_seconds: int | None = None  # set: retryable, with this delay as RetryInfo

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        if self.retry_seconds is None:
            return ()
        return ((STATUS_DETAILS_KEY, status_details(self.code, self.details, self.retry_seconds)),)


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (the hand-written `google.rpc` messages below need no schema)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def status_details(code: grpc.StatusCode, details: str, retry_seconds: int) -> bytes:
    """`google.rpc.Status{code, message, details: [Any(RetryInfo{retry_delay})]}`, as SDKs read it."""
    retry_info = _field(1, Duration(seconds=retry_seconds).SerializeToString())
    any_message = _field(1, RETRY_INFO_TYPE.encode()) + _field(2, retry_info)
    return _varint(1 << 3) + _varint(code.value[0]) + _field(2, details.encode()) + _field(3, any_message)


def retry_after(headers: list[tuple[bytes, bytes]]) -> int:
    """The upstream's `Retry-After` in whole seconds (a date or nonsense: the default)."""
    for name, value in headers:
        if name.lower() == b"retry-after" and value.strip().isdigit():
            return max(1, int(value))
    return DEFAULT_RETRY_SECONDS


def upstream_failure(status: int, headers: list[tuple[bytes, bytes]]) -> Failure:
    """The gRPC answer to an upstream's non-2xx HTTP status."""
    details = f"upstream answered {status}"
    if status in RETRYABLE_UPSTREAM:
        return Failure(grpc.StatusCode.UNAVAILABLE, details, retry_after(headers))
    return Failure(UPSTREAM_CODES.get(status, grpc.StatusCode.UNKNOWN), details)


def relayed(headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """The upstream's `Export*ServiceResponse` (partial success) when it answered protobuf; an answer in
    another format (a JSON `{}`) cannot be a gRPC message, and a 2xx means success: the empty response."""
    for name, value in headers:
        if name.lower() == b"content-type":
            return body if value.split(b";")[0].strip().lower() == PROTOBUF_TYPE else EMPTY_RESPONSE
    return EMPTY_RESPONSE


def forwarded_metadata(metadata: Any) -> list[tuple[bytes, bytes]]:
    """The call's metadata as HTTP headers (API keys such as `authorization` go on, like HTTP headers do)."""
    headers = [(b"content-type", PROTOBUF_TYPE)]
    for key, value in metadata or ():
        if key.startswith((":", "grpc-")) or key.endswith("-bin") or key in SKIPPED_METADATA:
            continue
        name = key.encode("latin-1")
        if name not in HOP_BY_HOP:
            headers.append((name, value.encode("utf-8") if isinstance(value, str) else value))
    return headers


class GrpcRoute(OtlpRoute):
    """One signal's OTLP/gRPC `Export`: `OtlpRoute`'s filtering, gRPC's framing and statuses."""

    def __init__(self, signal: str, base_url: str, runtime: Runtime, upstream: Upstream, metrics: Metrics) -> None:
        super().__init__(signal, base_url, runtime, upstream, metrics)
        self.route = f"grpc_{signal}s"
        self.service = SERVICES[signal]
        path = UPSTREAM_PATHS[signal]
        self.scope = {"path": path, "raw_path": path.encode(), "query_string": b""}

    def unfiltered(self, reason: Reason, detail: str = "") -> None:
        """As on HTTP, except that a message which is not OTLP is refused (INVALID_ARGUMENT) in any mode."""
        note(self.metrics, self.route, self.signal, self.reject or reason is UNDECODABLE, reason, detail)

    async def export(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        """The `Export` method: answer, count, and abort with the status when it is not OK."""
        start = perf_counter()
        try:
            answer = await self.answer(request, context.invocation_metadata())
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("%s Export failed", self.service)
            answer = Failure(grpc.StatusCode.INTERNAL, "internal error")
        if isinstance(answer, Failure):
            self.metrics.grpc_request(self.service, answer.code.name, perf_counter() - start)
            await context.abort(answer.code, answer.details, answer.trailing_metadata())
        self.metrics.grpc_request(self.service, grpc.StatusCode.OK.name, perf_counter() - start)
        return answer

    async def answer(self, body: bytes, metadata: Any) -> bytes | Failure:
        """The response message (the upstream's, or empty when nothing is left to send), or a Failure."""
        head = RequestHead(forwarded_metadata(metadata), len(body), PROTOBUF, None, False)
        try:
            forward = await (self.filter_off_loop(body, head) if self.handoff is None else self.sample(body, head))
        except Refused as refused:
            reason = refused.reason
            return Failure(REFUSED_CODES.get(reason.status, grpc.StatusCode.INVALID_ARGUMENT),
                           reason.message().decode().strip())
        if forward is DROPPED or forward is Ack.ACCEPTED:
            return EMPTY_RESPONSE
        if isinstance(forward, Ack):
            what = "unavailable" if forward is Ack.UNAVAILABLE else "full"
            return Failure(grpc.StatusCode.UNAVAILABLE, f"tail sampler {what}", SAMPLER_RETRY_SECONDS[forward])
        try:
            response = await self.upstream.exchange(self.base_url, "POST", self.scope, head, forward)
        except UpstreamError as exc:
            what = "timed out" if exc.status == 504 else "unreachable"
            return Failure(grpc.StatusCode.UNAVAILABLE, f"upstream {what}", DEFAULT_RETRY_SECONDS)
        if 200 <= response.status < 300:
            return relayed(response.headers, response.body)
        return upstream_failure(response.status, response.headers)


def _identity(message: bytes) -> bytes:
    return message


class OtlpServices(grpc.GenericRpcHandler):
    """The three OTLP services on raw bytes; any other method is left to grpcio (UNIMPLEMENTED)."""

    def __init__(self, routes: list[GrpcRoute]) -> None:
        self.methods = {f"/{route.service}/Export": grpc.unary_unary_rpc_method_handler(
            route.export, request_deserializer=_identity, response_serializer=_identity) for route in routes}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        return self.methods.get(handler_call_details.method)


def otlp_services(runtime: Runtime, upstream: Upstream, metrics: Metrics,
                  sampler: SamplerConnection | None = None) -> OtlpServices:
    """Every signal's service, forwarding to the signal's URL as the HTTP routes do (traces, and logs
    under `logs.follow_traces`, to the tail sampler instead, when there is one)."""
    config = runtime.config
    urls = {"log": config.logs_url, "metric": config.metrics_url, "trace": config.upstream_url}
    handoff = handoffs(config, sampler)
    routes = [GrpcRoute(signal, url, runtime, upstream, metrics) for signal, url in urls.items()]
    for route in routes:
        route.handoff = handoff.get(route.signal)
    return OtlpServices(routes)
