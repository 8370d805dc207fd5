"""The tail-sampling peers' internal routes: what a peer forwarded here, because this instance owns its traces.

`POST /_edge/tail/v1/traces` takes spans; `POST /_edge/tail/v1/logs` takes log records
carrying a trace id (`logs.follow_traces`), so they meet their trace where it is buffered.
Only a peer's forward is taken: uncompressed OTLP protobuf marked `X-Edge-Tail-Forwarded: 1`
(`edge.tailsampling.peers` sends nothing else). Anything else is 400 with a message saying
what is wrong, so a client that found the path by mistake learns to use `/v1/traces` or
`/v1/logs`. Edge's own policies are NOT applied again: the instance the data reached first
did. It goes to this instance's sampler marked `forwarded`, so it is buffered (or held with
its trace) here and never forwarded on, whatever this instance's current view of the members says.

Answers: 200 (an empty `ExportTraceServiceResponse`) once the spans are in this instance's
write-ahead log; 503 with Retry-After when the log is full or the sampler cannot be reached
(the peer retries within its budget, then keeps the spans); 413 over `max_decoded_bytes`;
404 when tail sampling (for logs: `logs.follow_traces`) is off here (a peer that thinks
otherwise keeps what it sent).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, NamedTuple

import orjson

from edge.formats.errors import UndecodableBody
from edge.formats.otlp.body import is_protobuf
from edge.protocols.body import Unread, read_whole
from edge.protocols.otlp import sampler_busy
from edge.protocols.tail_handoff import SamplerConnection
from edge.protocols.upstream import JSON, error_response, request_head
from edge.tailsampling.grouping import split_by_trace, split_logs_by_trace
from edge.tailsampling.interfaces import Ack, TraceFragment
from edge.tailsampling.peers import FORWARDED_HEADER, PEER_LOGS_PATH, PEER_PATH, PROTOBUF, Signal

MARKER = (FORWARDED_HEADER.lower().encode(), b"1")
NOT_ENABLED = "tail sampling is not enabled on this instance"
LOGS_NOT_FOLLOWING = "tail sampling's logs.follow_traces is not enabled on this instance"


class Forwarded(NamedTuple):
    """What one internal route takes: how its body splits by trace id, how it is named to a lost client."""

    split: Callable[[bytes, str], list[TraceFragment]]
    what: str  # "spans", "log records"
    public_path: str  # where such data should be sent instead


FORWARDED = {Signal.TRACES: Forwarded(split_by_trace, "spans", "/v1/traces"),
             Signal.LOGS: Forwarded(split_logs_by_trace, "log records", "/v1/logs")}


def _error(resp: Any, status: int, message: str) -> None:
    resp.status = status
    resp.content_type = JSON
    resp.data = orjson.dumps({"error": message})


def refusal(headers: list[tuple[bytes, bytes]], content_type: str | None, content_encoding: str | None,
            signal: Signal = Signal.TRACES) -> str:
    """Why a request is not a peer's forward ("" when it is one)."""
    if MARKER not in headers:
        forwarded = FORWARDED[signal]
        return f"this route takes only {forwarded.what} forwarded by a tail-sampling peer ({FORWARDED_HEADER}: 1); " \
               f"send {signal.value} to {forwarded.public_path}"
    if not is_protobuf(content_type):
        return f"a peer's forward is {PROTOBUF}, not {content_type or 'without a Content-Type'}"
    if content_encoding not in (None, "", "identity"):
        return f"a peer's forward is not compressed, got Content-Encoding {content_encoding}"
    return ""


class PeerForwards:
    """One internal route, for `signal`; `submit` is None when this instance does not take that signal
    from peers (tail sampling off; for logs, `logs.follow_traces` off too): 404 with `not_enabled`."""

    def __init__(self, signal: Signal, submit: Callable[[list[TraceFragment]], Awaitable[Ack]] | None,
                 max_body: int, not_enabled: str = NOT_ENABLED) -> None:
        self.signal = signal
        self.route = "tail_peers" if signal is Signal.TRACES else "tail_peers_logs"
        self.submit = submit
        self.max_body = max_body
        self.not_enabled = not_enabled

    async def __call__(self, req: Any, resp: Any) -> None:
        if self.submit is None:
            return _error(resp, 404, self.not_enabled)
        scope = req.scope
        head = request_head(scope["headers"])
        problem = refusal(scope["headers"], head.content_type, head.content_encoding, self.signal)
        if problem:
            return _error(resp, 400, problem)
        try:
            body = await read_whole(req, head.content_length, self.max_body)
        except Unread as unread:  # too large, or cut short: the peer retries or keeps its data, never a part here
            return error_response(resp, unread.status)
        try:
            fragments = FORWARDED[self.signal].split(body, head.content_type or PROTOBUF)
        except UndecodableBody as exc:
            return _error(resp, 400, str(exc))
        ack = await self.submit(fragments) if fragments else Ack.ACCEPTED
        if ack is not Ack.ACCEPTED:
            return sampler_busy(resp, ack)
        resp.status = 200
        resp.content_type = PROTOBUF
        resp.data = b""
        return None


def peer_routes(sampler: SamplerConnection | None, follow_traces: bool, max_body: int) -> dict[str, PeerForwards]:
    """Both internal routes by path; they exist wherever OTLP is served, so a peer's forward is never
    passed through to the upstream."""

    if sampler is None:
        return {PEER_PATH: PeerForwards(Signal.TRACES, None, max_body),
                PEER_LOGS_PATH: PeerForwards(Signal.LOGS, None, max_body)}
    records = partial(sampler.submit_logs, forwarded=True) if follow_traces else None
    return {PEER_PATH: PeerForwards(Signal.TRACES, partial(sampler.submit, forwarded=True), max_body),
            PEER_LOGS_PATH: PeerForwards(Signal.LOGS, records, max_body, LOGS_NOT_FOLLOWING)}
