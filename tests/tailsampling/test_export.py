"""The OTLP/HTTP exporter against a real loopback upstream: batches, gzip, retries, refusals, bounds.

Each test runs the exporter on its own event loop (`asyncio.run`) while the recording upstream
answers from its thread; switching the upstream's answer mid-test is how a test makes it fail
first and recover later.
"""

from __future__ import annotations

import asyncio
import email.utils
import gzip
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from edge.tailsampling.export import OtlpHttpExporter
from edge.tailsampling.interfaces import TraceExporter, TraceId
from tests.proxy_fixtures import Recorded, RecordingUpstream
from tests.test_declared_interfaces import assert_implements


def tid(n: int) -> TraceId:
    return n.to_bytes(16, "big")


def trace_payload(n: int, spans: int = 2) -> bytes:
    """One trace's spans as a serialised ExportTraceServiceRequest, as the sampler buffers them."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for s in range(spans):
        scope.spans.add(trace_id=tid(n), span_id=(s + 1).to_bytes(8, "big"), name=f"span {s}",
                        kind=Span.SPAN_KIND_SERVER)
    return request.SerializeToString()


def trace_ids_in(recorded: Recorded) -> list[TraceId]:
    request = ExportTraceServiceRequest.FromString(gzip.decompress(recorded.body))
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    return list(dict.fromkeys(span.trace_id for span in spans))


async def until(condition: Callable[[], object], timeout: float = 20.0) -> bool:
    """Poll without blocking the loop the exporter runs on; False when `timeout` passed first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class Acks:
    """The `on_acked` callback: every trace id settled, in order, and when."""

    def __init__(self) -> None:
        self.ids: list[TraceId] = []
        self.at: list[float] = []

    def __call__(self, trace_ids: Sequence[TraceId]) -> None:
        self.ids += trace_ids
        self.at.append(time.monotonic())


def run(scenario: Callable[[], Coroutine[object, object, None]]) -> None:
    asyncio.run(scenario())


@pytest.fixture
def up(upstream: RecordingUpstream) -> Iterator[RecordingUpstream]:
    upstream.reset()
    yield upstream
    upstream.reset()


def exporter(url: str, acks: Acks, **options: object) -> OtlpHttpExporter:
    options = {"first_backoff": 0.01, **options}
    return OtlpHttpExporter(url, acks, **options)  # type: ignore[arg-type]


def test_it_is_a_trace_exporter() -> None:
    assert_implements(OtlpHttpExporter("http://127.0.0.1:9/v1/traces", Acks()), TraceExporter)


def test_payloads_go_out_batched_and_gzipped(up: RecordingUpstream) -> None:
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=0.3)
        await ex.start()
        for n in range(50):
            assert ex.submit([tid(n)], trace_payload(n), items=2)
        assert await until(lambda: len(acks.ids) == 50)
        assert ex.counters.exported_traces == 50 and ex.counters.exported_items == 100
        assert ex.counters.exported_bytes == sum(len(trace_payload(n)) for n in range(50))
        assert ex.queue_bytes == 0
        await ex.close(1)

    run(scenario)
    [request] = up.received("/v1/traces")  # one batch: everything was queued within the delay
    assert request.method == "POST"
    assert request.header("Content-Encoding") == "gzip"
    assert request.header("Content-Type") == "application/x-protobuf"
    assert trace_ids_in(request) == [tid(n) for n in range(50)]
    assert acks.ids == [tid(n) for n in range(50)]


def test_a_batch_holds_at_most_batch_bytes(up: RecordingUpstream) -> None:
    acks = Acks()
    size = len(trace_payload(0))

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_bytes=size * 4, batch_delay=2)
        await ex.start()
        submitted = time.monotonic()
        for n in range(10):
            ex.submit([tid(n)], trace_payload(n))
        assert await until(lambda: len(acks.ids) == 10)
        assert acks.at[1] - submitted < 2  # two full batches left at once
        assert acks.at[2] - submitted >= 2  # the rest waited for the delay
        await ex.close(1)

    run(scenario)
    batches = [trace_ids_in(r) for r in up.received()]
    assert sorted(len(b) for b in batches) == [2, 4, 4]
    assert sorted(t for b in batches for t in b) == [tid(n) for n in range(10)]


def test_rollup_metrics_go_out_the_same_way(up: RecordingUpstream) -> None:
    acks = Acks()
    metrics = ExportMetricsServiceRequest()
    metrics.resource_metrics.add().scope_metrics.add().metrics.add(name="traces.span.metrics.calls")

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/metrics", acks, what="rollup metrics")
        await ex.start()
        ex.submit([tid(1), tid(2)], metrics.SerializeToString(), items=1)
        assert await until(lambda: len(acks.ids) == 2)
        await ex.close(1)

    run(scenario)
    [request] = up.received("/v1/metrics")
    assert ExportMetricsServiceRequest.FromString(gzip.decompress(request.body)) == metrics


@pytest.mark.parametrize(("status", "form"), [(503, "seconds"), (429, "seconds"), (503, "date")])
def test_retry_after_is_honoured(up: RecordingUpstream, status: int, form: str) -> None:
    # An HTTP date has whole seconds: two seconds ahead is at least one second away.
    after = "1" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)
    up.reset(status=status, headers={"Retry-After": after})
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=0)
        await ex.start()
        submitted = time.monotonic()
        ex.submit([tid(1)], trace_payload(1))
        assert await until(lambda: up.received())
        up.reset()  # answers 200 from now on
        assert await until(lambda: acks.ids == [tid(1)])
        assert acks.at[0] - submitted >= 1.0  # not the 10 ms backoff: the upstream's second
        assert ex.counters.retries == 1 and ex.counters.exported_traces == 1
        await ex.close(1)

    run(scenario)
    [retried] = up.received()
    assert trace_ids_in(retried) == [tid(1)]


def test_a_timeout_is_retried(up: RecordingUpstream) -> None:
    up.reset(delay=1)
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=0, timeout=0.3)
        await ex.start()
        ex.submit([tid(1)], trace_payload(1))
        assert await until(lambda: ex.counters.retries >= 1)
        up.reset()
        assert await until(lambda: acks.ids == [tid(1)])
        await ex.close(1)

    run(scenario)


def test_a_refused_connection_is_retried_until_the_upstream_starts() -> None:
    later = RecordingUpstream()  # its port is chosen, nothing listens there yet
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(later.url + "/v1/traces", acks, batch_delay=0, first_backoff=0.05)
        await ex.start()
        ex.submit([tid(7)], trace_payload(7))
        assert await until(lambda: ex.counters.retries >= 2)
        assert acks.ids == []
        await asyncio.to_thread(later.start)
        assert await until(lambda: acks.ids == [tid(7)])
        await ex.close(1)

    try:
        run(scenario)
        [request] = later.received()
        assert trace_ids_in(request) == [tid(7)]
    finally:
        if later._thread.is_alive():
            later.stop()


def test_a_refusal_is_settled_counted_and_logged_once(up: RecordingUpstream, caplog: pytest.LogCaptureFixture) -> None:
    up.reset(status=400, body=b'{"error": "bad"}')
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=0.1)
        await ex.start()
        ex.submit([tid(1)], trace_payload(1), items=2)
        ex.submit([tid(2)], trace_payload(2), items=2)
        assert await until(lambda: len(acks.ids) == 2)  # let go of: sending them again cannot help
        ex.submit([tid(3)], trace_payload(3), items=2)
        assert await until(lambda: len(acks.ids) == 3)
        assert not await until(lambda: len(up.received()) > 2, timeout=0.5)  # never retried
        c = ex.counters
        assert (c.rejected_traces, c.rejected_items, c.exported_traces, c.retries) == (3, 6, 0, 0)
        assert ex.queue_bytes == 0
        await ex.close(1)

    with caplog.at_level(logging.WARNING, logger="edge.tailsampling.export"):
        run(scenario)
    assert [r.getMessage() for r in caplog.records] == [
        f"{up.url}/v1/traces refused 2 traces (HTTP 400); they are dropped, not retried"]


def test_the_queue_is_bounded_until_payloads_are_settled(up: RecordingUpstream) -> None:
    release = threading.Event()
    up.reset(hold=release)
    acks = Acks()
    payload = b"\n\x00" * 500  # an empty ResourceSpans, 1000 bytes

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, queue_bytes=10_000, batch_bytes=3000, batch_delay=0)
        await ex.start()
        accepted = 0
        while ex.submit([tid(accepted)], payload):
            accepted += 1
        assert accepted == 10 and ex.queue_bytes == 10_000
        assert await until(lambda: up.received())
        assert not ex.submit([tid(99)], payload)  # in flight still counts
        release.set()
        assert await until(lambda: len(acks.ids) == 10)
        assert ex.queue_bytes == 0
        assert ex.submit([tid(100)], b"\n\x00" * 20_000)  # an empty queue takes even an oversized payload
        assert await until(lambda: len(acks.ids) == 11)
        await ex.close(1)

    run(scenario)


def test_close_flushes_without_waiting_for_the_batch_delay(up: RecordingUpstream) -> None:
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=60)
        await ex.start()
        ex.submit([tid(1)], trace_payload(1))
        started = time.monotonic()
        assert await ex.close(10) == 0
        assert time.monotonic() - started < 5
        assert not ex.submit([tid(2)], trace_payload(2))  # closed

    run(scenario)
    assert acks.ids == [tid(1)]
    assert len(up.received()) == 1


def test_close_gives_up_after_its_drain_time(up: RecordingUpstream) -> None:
    up.reset(status=503)
    acks = Acks()

    async def scenario() -> None:
        ex = exporter(up.url + "/v1/traces", acks, batch_delay=0)
        await ex.start()
        ex.submit([tid(1), tid(2)], trace_payload(1) + trace_payload(2))
        started = time.monotonic()
        assert await ex.close(0.5) == 2  # left for the write-ahead log to bring back
        assert time.monotonic() - started < 3

    run(scenario)
    assert acks.ids == []
