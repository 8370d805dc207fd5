"""POST /_edge/tail/v1/traces: spans a tail-sampling peer forwarded here, because this instance owns their traces.

Only a peer's forward is taken: uncompressed OTLP protobuf marked `X-Edge-Tail-Forwarded: 1`
(`edge.tailsampling.peers` sends nothing else). Anything else is 400 with a message saying
what is wrong, so a client that found the path by mistake learns to use `/v1/traces`.
Edge's own policies are NOT applied again: the instance the spans reached first did. The
spans go to this instance's sampler marked `forwarded`, so they are buffered here and never
forwarded on, whatever this instance's current view of the members says.

Answers: 200 (an empty `ExportTraceServiceResponse`) once the spans are in this instance's
write-ahead log; 503 with Retry-After when the log is full or the sampler cannot be reached
(the peer retries within its budget, then keeps the spans); 413 over `max_decoded_bytes`;
404 when tail sampling is off here (a peer that thinks otherwise keeps its spans).
"""

from __future__ import annotations

from typing import Any

import orjson

from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import is_protobuf
from edge.protocols.body import client_gone
from edge.protocols.otlp import sampler_busy
from edge.protocols.upstream import JSON, error_response, request_head
from edge.tailsampling.grouping import split_by_trace
from edge.tailsampling.interfaces import Ack, SamplerClient
from edge.tailsampling.peers import FORWARDED_HEADER, PROTOBUF

MARKER = (FORWARDED_HEADER.lower().encode(), b"1")
NOT_ENABLED = "tail sampling is not enabled on this instance"


def _error(resp: Any, status: int, message: str) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = orjson.dumps({"error": message})


def refusal(headers: list[tuple[bytes, bytes]], content_type: str | None, content_encoding: str | None) -> str:
    """Why a request is not a peer's forward ("" when it is one)."""
    if MARKER not in headers:
        return f"this route takes only spans forwarded by a tail-sampling peer ({FORWARDED_HEADER}: 1); send " \
               "traces to /v1/traces"
    if not is_protobuf(content_type):
        return f"a peer's forward is {PROTOBUF}, not {content_type or 'without a Content-Type'}"
    if content_encoding not in (None, "", "identity"):
        return f"a peer's forward is not compressed, got Content-Encoding {content_encoding}"
    return ""


class PeerTraces:
    """The internal route; `sampler` is None when tail sampling is off on this instance."""

    route = "tail_peers"

    def __init__(self, sampler: SamplerClient | None, max_body: int) -> None:
        self.sampler = sampler
        self.max_body = max_body

    async def __call__(self, req: Any, resp: Any) -> None:
        if self.sampler is None:
            return _error(resp, 404, NOT_ENABLED)
        scope = req.scope
        head = request_head(scope["headers"])
        problem = refusal(scope["headers"], head.content_type, head.content_encoding)
        if problem:
            return _error(resp, 400, problem)
        if head.content_length is not None and head.content_length > self.max_body:
            return error_response(resp, 413)
        body = await req.stream.read(self.max_body + 1)
        if len(body) > self.max_body:
            return error_response(resp, 413)
        if client_gone(scope) or (head.content_length is not None and len(body) != head.content_length):
            return error_response(resp, 400)  # cut short: the peer retries or keeps the spans, never a part here
        try:
            fragments = split_by_trace(body, head.content_type or PROTOBUF)
        except UndecodableBody as exc:
            return _error(resp, 400, str(exc))
        ack = await self.sampler.submit(fragments, forwarded=True) if fragments else Ack.ACCEPTED
        if ack is not Ack.ACCEPTED:
            return sampler_busy(resp, ack)
        resp.status = 200
        resp.content_type = PROTOBUF
        resp.data = b""
        return None
