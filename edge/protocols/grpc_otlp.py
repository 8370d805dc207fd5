"""OTLP/gRPC: `LogsService`, `MetricsService` and `TraceService` `Export`, filtered as OTLP/HTTP is.

The services are registered methods on raw bytes: the request message goes
straight into the protobuf batch views (no generated message classes, no decode and
re-encode), through the very `OtlpRoute.filter` the HTTP route uses, and what is left goes
to the signal's `UpstreamClient` (`edge.protocols.otlp_upstream`): as OTLP/HTTP protobuf to
the signal's URL + `/v1/logs|metrics|traces`, or as the same gRPC call to a gRPC upstream.
grpcio has already undone the client's gzip compression, so the body is plain protobuf.

Status mapping (the OTLP specification's): an HTTP upstream's answer as
`edge.protocols.grpc_status.http_failure` maps it, a gRPC upstream's status as received.
A message that is not OTLP is `INVALID_ARGUMENT` whatever `unfiltered` says: a gRPC client
sent a message its own schema could not have produced, and the upstream could not read it
either. Everything dropped is an empty success, no upstream call.
"""

from __future__ import annotations

import logging
from time import perf_counter

import grpc

from edge.formats.otlp.services import SERVICES
from edge.protocols.grpc_status import Failure, retryable
from edge.protocols.grpc_upstream import CallMetadata
from edge.protocols.otlp import DROPPED, PROTOBUF, SAMPLER_RETRY_SECONDS, OtlpRoute
from edge.protocols.otlp_upstream import EMPTY_RESPONSE, UpstreamClient, otlp_client
from edge.protocols.self_metrics import Metrics
from edge.protocols.tail_handoff import SamplerConnection, handoffs
from edge.protocols.unfiltered import UNDECODABLE, Reason, Refused, note
from edge.protocols.upstream import RequestHead, Upstream
from edge.runtime import Runtime
from edge.tailsampling.interfaces import Ack

log = logging.getLogger(__name__)

REFUSED_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 413: grpc.StatusCode.RESOURCE_EXHAUSTED,
                 415: grpc.StatusCode.INVALID_ARGUMENT, 500: grpc.StatusCode.INTERNAL}
# What filtering looks at: a gRPC message is plain protobuf (the call's metadata goes upstream separately).
MESSAGE_HEAD = RequestHead([], None, PROTOBUF, None, False)


class GrpcRoute(OtlpRoute):
    """One signal's OTLP/gRPC `Export`: `OtlpRoute`'s filtering, gRPC's framing and statuses."""

    def __init__(self, signal: str, client: UpstreamClient, runtime: Runtime, upstream: Upstream,
                 metrics: Metrics) -> None:
        super().__init__(signal, "", runtime, upstream, metrics, client)
        self.route = f"grpc_{signal}s"
        self.service = SERVICES[signal]

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
            await context.abort(answer.code, answer.details, answer.trailing)
        self.metrics.grpc_request(self.service, grpc.StatusCode.OK.name, perf_counter() - start)
        return answer

    async def answer(self, body: bytes, metadata: CallMetadata) -> bytes | Failure:
        """The response message (the upstream's, or empty when nothing is left to send), or a Failure."""
        try:
            forward = await (self.filter_off_loop(body, MESSAGE_HEAD) if self.handoff is None
                             else self.sample(body, MESSAGE_HEAD))
        except Refused as refused:
            reason = refused.reason
            return Failure(REFUSED_CODES.get(reason.status, grpc.StatusCode.INVALID_ARGUMENT),
                           reason.message().decode().strip())
        if forward is DROPPED or forward is Ack.ACCEPTED:
            return EMPTY_RESPONSE
        if isinstance(forward, Ack):
            what = "unavailable" if forward is Ack.UNAVAILABLE else "full"
            return retryable(grpc.StatusCode.UNAVAILABLE, f"tail sampler {what}", SAMPLER_RETRY_SECONDS[forward])
        return await self.client.forward_grpc(forward, metadata)


Handlers = dict[str, dict[str, grpc.RpcMethodHandler]]


def otlp_services(runtime: Runtime, upstream: Upstream, metrics: Metrics,
                  sampler: SamplerConnection | None = None) -> Handlers:
    """Service name -> its `Export` on raw bytes, forwarding to the signal's upstream as the HTTP routes do.

    For `add_registered_method_handlers`: grpc-core matches registered methods itself, where a
    generic handler costs a Python lookup per call; no (de)serializer passes the bytes through
    without a call either. Any other method is UNIMPLEMENTED (grpcio's own answer). Traces (and
    logs under `logs.follow_traces`) go to the tail sampler instead when there is one."""
    config = runtime.config
    handoff = handoffs(config, sampler)
    routes = [GrpcRoute(signal, otlp_client(config, signal, url, upstream), runtime, upstream, metrics)
              for signal, url in config.otlp_urls().items()]
    for route in routes:
        route.handoff = handoff.get(route.signal)
    return {route.service: {"Export": grpc.unary_unary_rpc_method_handler(route.export)} for route in routes}
