"""The peers' internal routes, POST /_edge/tail/v1/traces and /_edge/tail/v1/logs, in the real app on loopback.

The app is edge's own (`create_app` on a `LocalRuntime`, served by uvicorn in a thread); the
sampler behind it is a recording `SamplerClient` that answers a chosen `Ack`, so each answer
of the route can be checked without a sampler process (the tests with real instances and
their samplers are the sampler's end-to-end tests). The last test forwards through a real
`Peers` router to this app, both halves of the peer protocol together.
"""

from __future__ import annotations

import asyncio
import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from email.message import Message

import orjson
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

from edge.config import build
from edge.lambda_extension.runtime import LocalRuntime
from edge.lambda_extension.server import ProxyServer
from edge.protocols.app import create_app
from edge.tailsampling.interfaces import Ack, SamplerClient, Signal, TraceFragment
from edge.tailsampling.membership import StaticMembers
from edge.tailsampling.peers import FORWARDED_HEADER, PEER_LOGS_PATH, PEER_PATH, Peers
from tests.proxy_fixtures import RecordingUpstream, compile_snapshot, free_port
from tests.test_declared_interfaces import assert_implements

TRACE_A, TRACE_B = b"\x0a" * 16, b"\x0b" * 16
PEER_HEADERS = {"Content-Type": "application/x-protobuf", FORWARDED_HEADER: "1"}
MAX_DECODED = 64 << 10
# Edge's own trace policy: the route must not apply it again (the first instance did).
DROP_DEBUG_SPANS = {"id": "drop-debug-spans", "name": "Drop debug spans",
                    "trace": {"match": [{"trace_field": "name", "exact": "debug"}], "keep": {"percentage": 0}}}


@dataclass
class RecordingSampler:
    """A `SamplerClient` that records what it is handed and answers `ack`."""

    ack: Ack = Ack.ACCEPTED
    submissions: list[tuple[list[TraceFragment], bool]] = field(default_factory=list)
    log_submissions: list[tuple[list[TraceFragment], bool]] = field(default_factory=list)

    async def submit(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        self.submissions.append((list(fragments), forwarded))
        return self.ack

    async def submit_logs(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        self.log_submissions.append((list(fragments), forwarded))
        return self.ack


def spans_request(*spans: tuple[bytes, str]) -> bytes:
    request = ExportTraceServiceRequest(resource_spans=[ResourceSpans(scope_spans=[ScopeSpans(spans=[
        Span(trace_id=trace_id, span_id=bytes([i + 1]) * 8, name=name) for i, (trace_id, name) in enumerate(spans)])])])
    return request.SerializeToString()


def span_names(payload: bytes) -> list[str]:
    request = ExportTraceServiceRequest.FromString(payload)
    return [s.name for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


BODY = spans_request((TRACE_A, "debug"), (TRACE_B, "checkout"), (TRACE_A, "db"))


def logs_request(*records: tuple[bytes, str]) -> bytes:
    request = ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(trace_id=trace_id, severity_text=text) for trace_id, text in records])])])
    return request.SerializeToString()


def log_texts(payload: bytes) -> list[str]:
    request = ExportLogsServiceRequest.FromString(payload)
    return [r.severity_text for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]


LOGS_BODY = logs_request((TRACE_A, "a1"), (TRACE_B, "b1"), (TRACE_A, "a2"), (b"", "untraced"))


@dataclass
class Served:
    """An app on loopback, its sampler (None: tail sampling off) and its upstream."""

    url: str
    sampler: RecordingSampler | None
    upstream: RecordingUpstream

    def post(self, body: bytes, headers: dict[str, str], path: str = PEER_PATH) -> tuple[int, Message, bytes]:
        """Status, headers (looked up in any case) and body of a POST to an internal route."""
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers, error.read()


def serve(upstream: RecordingUpstream, sampler: RecordingSampler | None, follow_traces: bool = True
          ) -> Iterator[Served]:
    port = free_port()
    config = build({"listen_port": port, "upstream_url": upstream.url, "max_decoded_bytes": MAX_DECODED,
                    "tail_sampling": {"logs": {"follow_traces": follow_traces}}}, env={})
    runtime = LocalRuntime(config)
    runtime.snapshots.publish(compile_snapshot([DROP_DEBUG_SPANS]))
    server = ProxyServer(create_app(runtime, "edge", sampler), "127.0.0.1", port, config.max_connections)
    server.start(10)
    try:
        yield Served(f"http://127.0.0.1:{port}", sampler, upstream)
    finally:
        server.stop(10)


@pytest.fixture(scope="module")
def served(upstream: RecordingUpstream) -> Iterator[Served]:
    yield from serve(upstream, RecordingSampler())


@pytest.fixture
def app(served: Served) -> Served:
    assert served.sampler is not None
    served.sampler.ack = Ack.ACCEPTED
    served.sampler.submissions.clear()
    served.sampler.log_submissions.clear()
    served.upstream.reset()
    return served


def test_a_forward_goes_to_the_sampler_whole_and_marked(app: Served) -> None:
    status, headers, body = app.post(BODY, PEER_HEADERS)
    assert (status, body) == (200, b"") and headers["Content-Type"] == "application/x-protobuf"
    assert app.sampler is not None
    ((fragments, forwarded),) = app.sampler.submissions
    assert forwarded is True
    assert {f.trace_id: f.spans for f in fragments} == {TRACE_A: 2, TRACE_B: 1}
    # Edge's own policies are not applied again: the debug span the policy drops is still there.
    assert sorted(span_names(b"".join(f.payload for f in fragments))) == ["checkout", "db", "debug"]
    assert app.upstream.requests == []  # the sampler exports, not the route


@pytest.mark.parametrize(("headers", "message"), [
    ({"Content-Type": "application/x-protobuf"}, "send traces to /v1/traces"),
    ({FORWARDED_HEADER: "1", "Content-Type": "application/json"}, "not application/json"),
    ({FORWARDED_HEADER: "yes", "Content-Type": "application/x-protobuf"}, f"({FORWARDED_HEADER}: 1)"),
], ids=["unmarked", "json", "bad-marker"])
def test_anything_but_a_peers_forward_is_refused(app: Served, headers: dict[str, str], message: str) -> None:
    status, _, body = app.post(BODY, headers)
    assert status == 400 and message in body.decode()
    assert app.sampler is not None and app.sampler.submissions == []
    assert app.upstream.requests == []


def test_a_compressed_forward_is_refused(app: Served) -> None:
    status, _, body = app.post(gzip.compress(BODY), {**PEER_HEADERS, "Content-Encoding": "gzip"})
    assert status == 400 and "not compressed" in body.decode()


def test_a_body_that_is_not_otlp_is_refused(app: Served) -> None:
    status, _, body = app.post(b"\x0a\xff\xff\xff", PEER_HEADERS)
    assert status == 400 and "not an OTLP traces request" in body.decode()
    assert app.sampler is not None and app.sampler.submissions == []


def test_a_body_over_max_decoded_bytes_is_413(app: Served) -> None:
    big = spans_request(*[(TRACE_A, "x" * 1000)] * (MAX_DECODED // 1000 + 1))
    status, _, _ = app.post(big, PEER_HEADERS)
    assert status == 413


@pytest.mark.parametrize(("ack", "retry_after"), [(Ack.WAL_FULL, "5"), (Ack.UNAVAILABLE, "1")])
def test_a_sampler_that_cannot_take_the_spans_gives_503(app: Served, ack: Ack, retry_after: str) -> None:
    assert app.sampler is not None
    app.sampler.ack = ack
    status, headers, _ = app.post(BODY, PEER_HEADERS)
    assert status == 503 and headers["Retry-After"] == retry_after


def test_an_empty_forward_is_accepted_without_the_sampler(app: Served) -> None:
    assert app.post(b"", PEER_HEADERS)[0] == 200
    assert app.sampler is not None and app.sampler.submissions == []


def test_without_tail_sampling_a_forward_is_404_and_never_passed_through(upstream: RecordingUpstream) -> None:
    upstream.reset()
    for off in serve(upstream, None):
        status, _, body = off.post(BODY, PEER_HEADERS)
        assert status == 404 and "not enabled" in body.decode()
    assert upstream.requests == []


def test_the_recording_sampler_is_a_sampler_client() -> None:
    assert_implements(RecordingSampler(), SamplerClient)


def test_a_router_delivers_to_the_owners_route(app: Served) -> None:
    """Both halves together: `Peers.route` on one side, the route and its sampler on the other."""
    owner = app.url.removeprefix("http://")
    fragments = [TraceFragment(TRACE_A, spans_request((TRACE_A, "a1"), (TRACE_A, "a2")), 2),
                 TraceFragment(TRACE_B, spans_request((TRACE_B, "b1")), 1)]

    async def forward() -> list[TraceFragment]:
        peers = Peers(StaticMembers([owner]), "127.0.0.1:1")
        await peers.start()
        try:
            return await peers.route(fragments)
        finally:
            await peers.close()

    assert asyncio.run(forward()) == []  # nothing kept: the owner took it all
    assert app.sampler is not None
    ((received, forwarded),) = app.sampler.submissions
    assert forwarded is True
    assert [(f.trace_id, f.spans, sorted(span_names(f.payload))) for f in received] == [
        (TRACE_A, 2, ["a1", "a2"]), (TRACE_B, 1, ["b1"])]


# ── the logs route (`logs.follow_traces`) ──


def test_a_logs_forward_goes_to_the_sampler_as_log_records_marked(app: Served) -> None:
    status, headers, body = app.post(LOGS_BODY, PEER_HEADERS, PEER_LOGS_PATH)
    assert (status, body) == (200, b"") and headers["Content-Type"] == "application/x-protobuf"
    assert app.sampler is not None and app.sampler.submissions == []
    ((fragments, forwarded),) = app.sampler.log_submissions
    assert forwarded is True
    assert [(f.trace_id, f.spans, log_texts(f.payload)) for f in fragments] == [
        (TRACE_A, 2, ["a1", "a2"]), (TRACE_B, 1, ["b1"]), (bytes(16), 1, ["untraced"])]
    assert app.upstream.requests == []


@pytest.mark.parametrize(("headers", "message"), [
    ({"Content-Type": "application/x-protobuf"}, "this route takes only log records forwarded by a tail-sampling "
     "peer (X-Edge-Tail-Forwarded: 1); send logs to /v1/logs"),
    ({FORWARDED_HEADER: "1", "Content-Type": "application/json"},
     "a peer's forward is application/x-protobuf, not application/json"),
    ({FORWARDED_HEADER: "1", "Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
     "a peer's forward is not compressed, got Content-Encoding gzip"),
], ids=["unmarked", "json", "gzip"])
def test_anything_but_a_peers_logs_forward_is_refused(app: Served, headers: dict[str, str], message: str) -> None:
    status, _, body = app.post(LOGS_BODY, headers, PEER_LOGS_PATH)
    assert (status, orjson.loads(body)) == (400, {"error": message})
    assert app.sampler is not None and app.sampler.log_submissions == []
    assert app.upstream.requests == []


def test_a_logs_forward_that_is_not_otlp_logs_is_refused(app: Served) -> None:
    status, _, body = app.post(b"\x0a\xff\xff\xff", PEER_HEADERS, PEER_LOGS_PATH)
    assert status == 400 and orjson.loads(body)["error"].startswith("not an OTLP logs request: ")
    assert app.sampler is not None and app.sampler.log_submissions == []


def test_a_sampler_that_cannot_take_the_records_gives_503(app: Served) -> None:
    assert app.sampler is not None
    app.sampler.ack = Ack.WAL_FULL
    status, headers, _ = app.post(LOGS_BODY, PEER_HEADERS, PEER_LOGS_PATH)
    assert status == 503 and headers["Retry-After"] == "5"


@pytest.mark.parametrize(("sampler", "message"), [
    (RecordingSampler(), "tail sampling's logs.follow_traces is not enabled on this instance"),
    (None, "tail sampling is not enabled on this instance")], ids=["logs-not-following", "tail-sampling-off"])
def test_where_logs_do_not_follow_traces_a_logs_forward_is_404(upstream: RecordingUpstream,
                                                              sampler: RecordingSampler | None, message: str) -> None:
    upstream.reset()
    for off in serve(upstream, sampler, follow_traces=False):
        status, _, body = off.post(LOGS_BODY, PEER_HEADERS, PEER_LOGS_PATH)
        assert (status, orjson.loads(body)) == (404, {"error": message})
    assert upstream.requests == [] and (sampler is None or sampler.log_submissions == [])


def test_a_router_delivers_log_records_to_the_owners_logs_route(app: Served) -> None:
    owner = app.url.removeprefix("http://")
    fragments = [TraceFragment(TRACE_A, logs_request((TRACE_A, "a1")), 1),
                 TraceFragment(TRACE_B, logs_request((TRACE_B, "b1"), (TRACE_B, "b2")), 2)]

    async def forward() -> list[TraceFragment]:
        peers = Peers(StaticMembers([owner]), "127.0.0.1:1")
        await peers.start()
        try:
            return await peers.route(fragments, Signal.LOGS)
        finally:
            await peers.close()

    assert asyncio.run(forward()) == []
    assert app.sampler is not None and app.sampler.submissions == []
    ((received, forwarded),) = app.sampler.log_submissions
    assert forwarded is True
    assert [(f.trace_id, f.spans, log_texts(f.payload)) for f in received] == [
        (TRACE_A, 1, ["a1"]), (TRACE_B, 2, ["b1", "b2"])]
