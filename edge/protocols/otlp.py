"""POST /v1/logs, /v1/metrics, /v1/traces: decode, evaluate the policies, forward what is left.

Fail-open everywhere: a body we cannot decode (unknown codec, corrupt, too large once
decoded, not OTLP, nested too deep) or an internal error forwards the original bytes
untouched, counted and logged per reason, or is refused under `unfiltered: reject`
(`edge.protocols.unfiltered`). A batch
whose every record was dropped is answered here with an empty OTLP response and never
reaches the upstream. Evaluation runs inline on the event loop (it holds the GIL: a thread
would add memory, not speed). Decoding a compressed body estimated at OFFLOAD_BYTES or more
goes to a small thread pool (zlib and zstandard release the GIL), so one big or hostile body
never holds the loop, and with it every other request of the worker and gunicorn's heartbeat.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from edge.engine.engine import Engine
from edge.formats.errors import NestedTooDeep, UndecodableBody
from edge.formats.evaluated import Evaluated
from edge.formats.otlp.body import evaluate, is_protobuf
from edge.protocols.body import Unread, read_whole
from edge.protocols.content_encoding import DecodeFailed, TooLarge, codec_of, decode_or_raise, encode
from edge.protocols.otlp_upstream import HttpClient, UpstreamClient
from edge.protocols.self_metrics import Metrics
from edge.protocols.tail_handoff import Handoff
from edge.protocols.unfiltered import (
    DECODE_LIMIT,
    DEPTH_LIMIT,
    INTERNAL_ERROR,
    REJECT,
    UNDECODABLE,
    UNKNOWN_CODEC,
    UNSUPPORTED_FORMAT,
    Reason,
    Refused,
    note,
    refusal,
)
from edge.protocols.upstream import (
    JSON,
    PROTOBUF,
    RequestHead,
    Upstream,
    error_response,
    relay_headers,
    request_head,
)
from edge.runtime import Runtime
from edge.tailsampling.interfaces import Ack

log = logging.getLogger(__name__)

EMPTY_JSON = b"{}"
EMPTY_PROTOBUF = b""
DROPPED = None  # `OtlpRoute.filter` result: every record was dropped
OFFLOAD_BYTES = 64 << 10  # compressed bodies estimated to decode to this much or more are decoded in a thread
COMPRESSION_RATIO = 8  # a compressed body is estimated at this many times its size (telemetry: 5-20x)
# Per worker. zlib and zstandard release the GIL, so decoding in a thread frees the event loop;
# evaluation holds the GIL and stays on the loop (in threads it only added memory: the Python
# objects of a parsed batch then come from per-thread malloc arenas).
FILTER_THREADS = 2
# Retry-After (seconds) when the tail sampler cannot take a batch: a full write-ahead log drains at the
# upstream's pace, a sampler being restarted is back within about a second.
SAMPLER_RETRY_SECONDS = {Ack.WAL_FULL: 5, Ack.UNAVAILABLE: 1}

_decode_pool: ThreadPoolExecutor | None = None


def decode_pool() -> ThreadPoolExecutor:
    """The worker's decoding threads, created on first use (in the worker, after gunicorn forked it)."""
    global _decode_pool
    if _decode_pool is None:
        _decode_pool = ThreadPoolExecutor(FILTER_THREADS, thread_name_prefix="edge-decode")
    return _decode_pool


class Undecoded:
    """`OtlpRoute.filter`'s default: the body has not been decoded yet."""


UNDECODED = Undecoded()


def decoded_off_loop(body: bytes, head: RequestHead) -> bool:
    """Whether a compressed body is big enough to decode in a thread rather than on the event loop."""
    return head.content_encoding is not None and len(body) * COMPRESSION_RATIO >= OFFLOAD_BYTES


class OtlpRoute:
    """One signal's OTLP/HTTP endpoint."""

    def __init__(self, signal: str, base_url: str, runtime: Runtime, upstream: Upstream, metrics: Metrics,
                 client: UpstreamClient | None = None) -> None:
        self.signal = signal
        self.route = f"otlp_{signal}s"
        self.runtime = runtime
        self.upstream = upstream
        # Where what is left goes: OTLP/HTTP to `base_url` unless the signal's client says otherwise.
        self.client: UpstreamClient = client or HttpClient(upstream, base_url, signal)
        self.metrics = metrics
        self.max_body = runtime.config.max_body_size
        self.max_decoded = runtime.config.max_decoded_bytes
        self.reject = runtime.config.unfiltered == REJECT
        self.all_dropped: bytes | None = None  # sent upstream when every record is dropped; None: answer here
        self.handoff: Handoff | None = None  # set: batches go to the tail sampler instead of the upstream

    async def __call__(self, req: Any, resp: Any) -> None:
        scope = req.scope
        head = request_head(scope["headers"])
        try:
            body = await read_whole(req, head.content_length, self.max_body)
        except Unread as unread:
            return error_response(resp, unread.status)  # too large, or cut short: never forward a part
        try:
            forward = await (self.filter_off_loop(body, head) if self.handoff is None else self.sample(body, head))
        except Refused as refused:
            return refusal(resp, refused.reason)
        if forward is DROPPED or forward is Ack.ACCEPTED:
            resp.status = 200
            if is_protobuf(head.content_type):
                resp.content_type = PROTOBUF
                resp.data = EMPTY_PROTOBUF
            else:
                resp.content_type = JSON
                resp.data = EMPTY_JSON
            return None
        if isinstance(forward, Ack):
            return sampler_busy(resp, forward)
        response = await self.client.forward_http(scope, head, forward)
        relay_headers(resp, response.status, response.headers, keep_length=False)
        resp.data = response.body
        return None

    async def filter_off_loop(self, body: bytes, head: RequestHead) -> bytes | None:
        """`filter`, with a big compressed body decoded in a thread first: decoding releases the
        GIL, so meanwhile the event loop goes on serving the worker's other requests."""
        try:
            offload = decoded_off_loop(body, head) and self.filtered(head)
        except Exception:  # noqa: BLE001 - fail-open: `filter` decides, and forwards unmodified if it fails too
            log.exception("choosing where to decode a %s body failed", self.signal)
            offload = False
        if offload:
            return self.filter(body, head, await self.decode_in_thread(body, head))
        return self.filter(body, head)

    async def sample(self, body: bytes, head: RequestHead) -> Ack | bytes | None:
        """Tail sampling: the batch filtered by edge's policies as always, then split by trace and handed
        to the sampler, whose Ack is the answer; DROPPED when the policies left nothing. A body that
        cannot be decoded or split is unfiltered as without tail sampling, and a logs batch without a
        trace id is not the sampler's: the bytes to forward (or Refused under `unfiltered: reject`)."""
        codec = codec_of(head.content_encoding)
        if codec is None:
            self.unknown_codec(head)
            return body
        decoded = await self.decode_in_thread(body, head) if decoded_off_loop(body, head) else self.decode(body, head)
        if isinstance(decoded, DecodeFailed):
            self.undecodable(decoded, codec)
            return body
        plain = dataclasses.replace(head, content_encoding=None)
        kept = self.filter(decoded, plain, decoded)
        if kept is DROPPED:
            return DROPPED
        assert self.handoff is not None
        try:
            fragments = self.handoff.split(kept, head.content_type or "")
        except UndecodableBody as exc:
            if not self.filtered(plain):  # else `filter` has counted it already
                self.unfiltered(UNDECODABLE, str(exc))
            return body
        if self.handoff.bypasses(fragments):
            return body if kept is decoded else encode(kept, codec)
        return await self.handoff.submit(fragments) if fragments else Ack.ACCEPTED

    def filtered(self, head: RequestHead) -> bool:
        """Whether this body will be decoded and evaluated at all (else it is forwarded raw)."""
        engine = self.runtime.engine()
        return (engine is not None and engine.snapshot.targets(self.signal)
                and codec_of(head.content_encoding) is not None and self.filters(head))

    def decode(self, body: bytes, head: RequestHead) -> bytes | DecodeFailed:
        """The body without its (known) content encoding, within the limits; else why it cannot be."""
        try:
            return decode_or_raise(body, codec_of(head.content_encoding) or "", self.max_decoded)
        except DecodeFailed as exc:
            return exc

    async def decode_in_thread(self, body: bytes, head: RequestHead) -> bytes | DecodeFailed:
        """`decode` on the worker's decoding threads, the event loop free meanwhile."""
        return await asyncio.get_running_loop().run_in_executor(decode_pool(), self.decode, body, head)

    def unknown_codec(self, head: RequestHead) -> None:
        """Count and log a body in a Content-Encoding edge does not decode (`unfiltered`)."""
        self.unfiltered(UNKNOWN_CODEC, f"Content-Encoding {head.content_encoding!r}")

    def undecodable(self, failure: DecodeFailed, codec: str) -> None:
        """Count and log a body that `decode` could not decode (`unfiltered`)."""
        self.unfiltered(DECODE_LIMIT if isinstance(failure, TooLarge) else UNDECODABLE,
                        f"{codec or 'identity'}: {failure}")

    def unfiltered(self, reason: Reason, detail: str = "") -> None:
        """Count and log a body forwarded as received; raises Refused under `unfiltered: reject`."""
        note(self.metrics, self.route, self.signal, self.reject, reason, detail)

    def filters(self, head: RequestHead) -> bool:
        """Whether bodies of this kind are filtered at all (the others are forwarded raw)."""
        return True

    def evaluate(self, engine: Engine, decoded: bytes, head: RequestHead) -> Evaluated:
        """Decoded body in, what to forward out; raises UndecodableBody when it is not this protocol."""
        return evaluate(engine, self.signal, decoded, head.content_type)

    def filter(self, body: bytes, head: RequestHead,
               decoded: bytes | DecodeFailed | Undecoded = UNDECODED) -> bytes | None:
        """The bytes to forward (the original ones whenever nothing changed), or DROPPED.

        `decoded` is the body already decoded by `decode` (in a thread); by default it is
        decoded here. Raises Refused for a body it cannot filter under `unfiltered: reject`."""
        try:
            engine = self.runtime.engine()
            if engine is None or not engine.snapshot.targets(self.signal):
                return body  # nothing to do: never parse
            codec = codec_of(head.content_encoding)
            if codec is None:
                self.unknown_codec(head)
                return body  # br, compress, ...: forwarded raw
            if not self.filters(head):
                self.unfiltered(UNSUPPORTED_FORMAT, f"Content-Type {head.content_type!r}")
                return body
            if isinstance(decoded, Undecoded):
                decoded = self.decode(body, head)
            if isinstance(decoded, DecodeFailed):
                self.undecodable(decoded, codec)
                return body
            try:
                result = self.evaluate(engine, decoded, head)
            except (NestedTooDeep, RecursionError) as exc:  # RecursionError: JSON nested too deep to walk
                self.unfiltered(DEPTH_LIMIT, str(exc))
                return body
            except UndecodableBody as exc:
                self.unfiltered(UNDECODABLE, str(exc))
                return body
            if result.failed:
                self.unfiltered(INTERNAL_ERROR)
                return body
            outcome = result.outcome
            if outcome.total:
                self.metrics.records(self.signal, outcome.total, outcome.kept)
                if not outcome.kept:
                    return DROPPED if self.all_dropped is None else encode(self.all_dropped, codec)
            if result.body is decoded:
                return body  # unchanged: the original (still compressed) bytes
            return encode(result.body, codec)
        except Refused:
            raise
        except Exception:  # noqa: BLE001 - fail-open: the original batch goes on
            log.exception("filtering a %s batch failed; forwarding it unmodified", self.signal)
        self.unfiltered(INTERNAL_ERROR)
        return body


def sampler_busy(resp: Any, ack: Ack) -> None:
    """503 with Retry-After: the tail sampler could not take the batch (its log is full, or it is down)."""
    resp.status = 503
    resp.content_type = JSON
    resp.set_header("Retry-After", str(SAMPLER_RETRY_SECONDS[ack]))
    resp.data = b'{"error":"tail sampler unavailable"}' if ack is Ack.UNAVAILABLE else b'{"error":"tail sampler full"}'
