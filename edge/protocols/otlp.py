"""POST /v1/logs, /v1/metrics, /v1/traces: decode, evaluate the policies, forward what is left.

Fail-open everywhere: a body we cannot decode (unknown codec, corrupt, too large once
decoded, not OTLP) or an internal error forwards the original bytes untouched. A batch
whose every record was dropped is answered here with an empty OTLP response and never
reaches the upstream. Small batches are decoded and evaluated inline on the event loop (a
thread hop would cost more than it saves); from OFFLOAD_BYTES (estimated decoded size) on they
go to a small thread pool, so one big or hostile body never holds the loop, and with it every
other request of the worker and gunicorn's heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge.engine.engine import Engine
from edge.formats.errors import UndecodableBody
from edge.formats.evaluated import Evaluated
from edge.formats.otlp.body import evaluate, is_protobuf
from edge.protocols.body import client_gone
from edge.protocols.content_encoding import MAX_MEMBERS, codec_of, decode, encode
from edge.protocols.self_metrics import Metrics
from edge.protocols.upstream import JSON, RequestHead, Upstream, error_response, relay_headers, request_head
from edge.runtime import Runtime

log = logging.getLogger(__name__)

PROTOBUF = "application/x-protobuf"
EMPTY_JSON = b"{}"
EMPTY_PROTOBUF = b""
DROPPED = None  # `OtlpRoute.filter` result: every record was dropped
OFFLOAD_BYTES = 64 << 10  # bodies estimated to decode to this much or more are filtered in a thread
COMPRESSION_RATIO = 8  # a compressed body is estimated at this many times its size (telemetry: 5-20x)
FILTER_THREADS = 2  # per worker: zlib, zstandard and Hyperscan release the GIL; Python evaluation does not

_filter_pool: ThreadPoolExecutor | None = None


def filter_pool() -> ThreadPoolExecutor:
    """The worker's filter threads, created on first use (in the worker, after gunicorn forked it)."""
    global _filter_pool
    if _filter_pool is None:
        _filter_pool = ThreadPoolExecutor(FILTER_THREADS, thread_name_prefix="edge-filter")
    return _filter_pool


def offloaded(body: bytes, head: RequestHead) -> bool:
    """Whether a body is big enough to decode and evaluate off the event loop."""
    return len(body) * (COMPRESSION_RATIO if head.content_encoding else 1) >= OFFLOAD_BYTES


class OtlpRoute:
    """One signal's OTLP/HTTP endpoint."""

    def __init__(self, signal: str, base_url: str, runtime: Runtime, upstream: Upstream, metrics: Metrics) -> None:
        self.signal = signal
        self.route = f"otlp_{signal}s"
        self.base_url = base_url
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        self.max_body = runtime.config.max_body_size
        self.max_decoded = runtime.config.max_decoded_bytes
        self.all_dropped: bytes | None = None  # sent upstream when every record is dropped; None: answer here

    async def __call__(self, req: Any, resp: Any) -> None:
        scope = req.scope
        head = request_head(scope["headers"])
        limit = self.max_body
        if head.content_length is not None:
            if head.content_length > limit:
                return error_response(resp, 413)
            body = await req.stream.read()
        else:
            body = await req.stream.read(limit + 1)
        if len(body) > limit:
            return error_response(resp, 413)
        if client_gone(scope) or (head.content_length is not None and len(body) != head.content_length):
            return error_response(resp, 400)  # the client went away mid-body: never forward a part
        forward = await self.filter_off_loop(body, head)
        if forward is DROPPED:
            resp.status = 200
            if is_protobuf(head.content_type):
                resp.content_type = PROTOBUF
                resp.data = EMPTY_PROTOBUF
            else:
                resp.content_type = JSON
                resp.data = EMPTY_JSON
            return None
        response = await self.upstream.exchange(self.base_url, "POST", scope, head, forward)
        relay_headers(resp, response.status, response.headers, keep_length=False)
        resp.data = response.body
        return None

    async def filter_off_loop(self, body: bytes, head: RequestHead) -> bytes | None:
        """`filter`, in a worker thread for big bodies: while one is decoded and evaluated, the
        event loop goes on serving the worker's other requests."""
        if not offloaded(body, head):
            return self.filter(body, head)
        return await asyncio.get_running_loop().run_in_executor(filter_pool(), self.filter, body, head)

    def filters(self, head: RequestHead) -> bool:
        """Whether bodies of this kind are filtered at all (the others are forwarded raw)."""
        return True

    def evaluate(self, engine: Engine, decoded: bytes, head: RequestHead) -> Evaluated:
        """Decoded body in, what to forward out; raises UndecodableBody when it is not this protocol."""
        return evaluate(engine, self.signal, decoded, head.content_type)

    def filter(self, body: bytes, head: RequestHead) -> bytes | None:
        """The bytes to forward (the original ones whenever nothing changed), or DROPPED."""
        try:
            engine = self.runtime.engine()
            if engine is None or not engine.snapshot.targets(self.signal):
                return body  # nothing to do: never parse
            codec = codec_of(head.content_encoding)
            if codec is None or not self.filters(head):
                return body  # deflate, br, ...: forwarded raw and unfiltered
            decoded = decode(body, codec, self.max_decoded)
            if decoded is None:
                log.debug("%s body not decodable as %r within %d bytes and %d members: forwarded raw",
                          self.signal, codec, self.max_decoded, MAX_MEMBERS)
                return body
            try:
                result = self.evaluate(engine, decoded, head)
            except (UndecodableBody, RecursionError) as exc:  # RecursionError: JSON nested too deep to decode
                log.debug("forwarding an undecodable %s body raw: %s", self.signal, exc)
                return body
            outcome = result.outcome
            if outcome.total:
                self.metrics.records(self.signal, outcome.total, outcome.kept)
                if not outcome.kept:
                    return DROPPED if self.all_dropped is None else encode(self.all_dropped, codec)
            if result.body is decoded:
                return body  # unchanged: the original (still compressed) bytes
            return encode(result.body, codec)
        except Exception:  # noqa: BLE001 - fail-open: the original batch goes on
            log.exception("filtering a %s batch failed; forwarding it unmodified", self.signal)
            return body
