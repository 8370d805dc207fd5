"""Tail sampling with real clients and several instances: the OpenTelemetry SDK over OTLP/HTTP and
OTLP/gRPC (edge's own trace policies applied first), three edges sharing traces through static peers,
and what HTTP and gRPC senders are told while the sampler is down."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode

from tests.proxy_fixtures import free_port
from tests.tailsampling.harness import (
    ERRORS,
    PB,
    TailEdge,
    Upstream,
    accounted,
    log_bodies,
    log_request,
    request,
    span,
    tail_config,
)
from tests.waiting import wait_for

# edge's own policy, applied before the tail sampler: spans named drop-* never reach it
DROP_SPANS = {"id": "drop-spans", "name": "drop spans named drop-*",
              "trace": {"match": [{"trace_field": "name", "starts_with": "drop-"}], "keep": {"percentage": 0}}}


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream().start()
    yield up
    up.stop()


def sdk_traces(exporter: SpanExporter, traces: int) -> dict[str, set[str]]:
    """`traces` traces of 5 spans (an error in every third, a drop-* span in each), sent by the SDK in
    batches of 64 spans so a trace's spans go in several requests; the names that should be exported."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=64, schedule_delay_millis=50))
    tracer = provider.get_tracer("shop")
    expected: dict[str, set[str]] = {}
    for t in range(traces):
        with tracer.start_as_current_span(f"root-{t}") as root:
            names = {f"root-{t}"}
            for n in range(3):
                with tracer.start_as_current_span(f"child-{t}-{n}"):
                    names.add(f"child-{t}-{n}")
            with tracer.start_as_current_span(f"drop-{t}"):
                pass
            if t % 3 == 0:
                root.set_status(Status(StatusCode.ERROR))
                expected[f"{root.get_span_context().trace_id:032x}"] = names
    assert provider.force_flush(30_000)
    provider.shutdown()
    return expected


def exported_names(upstream: Upstream) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for message in upstream.messages():
        for rs in message.resource_spans:
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.setdefault(s.trace_id.hex(), set()).add(s.name)
    return out


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sdk_traces_are_filtered_by_edge_then_sampled_whole(tmp_path: Path, upstream: Upstream,
                                                           protocol: str) -> None:
    grpc_port = free_port()
    edge = TailEdge(tmp_path, upstream.url, tail_config(tmp_path, [ERRORS]), policies=[DROP_SPANS],
                    grpc={"enabled": protocol == "grpc", "listen_port": grpc_port})
    edge.start()
    try:
        if protocol == "http":
            exporter: SpanExporter = HttpSpanExporter(endpoint=f"{edge.base}/v1/traces",
                                                      compression=Compression.Gzip, timeout=30)
        else:
            exporter = GrpcSpanExporter(endpoint=f"http://127.0.0.1:{grpc_port}", insecure=True, timeout=30)
        expected = sdk_traces(exporter, traces=60)
        assert accounted(upstream, sent=60 * 4)  # the drop-* spans never reach the sampler
        assert exported_names(upstream) == expected
    finally:
        assert edge.stop() == 0


@contextmanager
def three_instances(tmp_path: Path, upstream: Upstream, policies: list[dict],
                    **keys: object) -> Iterator[list[TailEdge]]:
    """Three edges sharing traces through static peers, started and stopped together (each holds
    keep-alive connections to the others' workers, which their drain waits for)."""
    ports = [free_port() for _ in range(3)]
    members = [f"127.0.0.1:{p}" for p in ports]
    edges = [TailEdge(tmp_path / f"e{i}", upstream.url,
                      tail_config(tmp_path / f"e{i}", policies, peers={"static": members}, **keys), listen_port=port)
             for i, port in enumerate(ports)]
    with ThreadPoolExecutor(3) as starting:  # in parallel: each waits for its own readiness
        list(starting.map(TailEdge.start, edges))
    try:
        yield edges
    finally:
        with ThreadPoolExecutor(3) as stopping:
            assert list(stopping.map(TailEdge.stop, edges)) == [0, 0, 0]


def test_three_instances_with_static_peers_export_whole_traces(tmp_path: Path, upstream: Upstream) -> None:
    with three_instances(tmp_path, upstream, [ERRORS], decision_wait="2s") as edges:
        round_robin = itertools.cycle(edges)
        for t in range(1, 61):  # each span of a trace to the next instance: every trace touches all three
            for n in range(6):
                assert next(round_robin).post_spans([span(t, n, error=(t % 5 == 0 and n == 3))]).status == 200
        assert accounted(upstream, sent=60 * 6)
        traces = upstream.traces()
        assert set(traces) == {t for t in range(1, 61) if t % 5 == 0}
        for export in upstream.exports():
            assert all(len(ids) == 6 for ids in export.spans.values())  # decided whole, by its owner
        assert sum(upstream.spans().values()) == 12 * 6  # once each
        assert upstream.rolled_up_calls() == 48 * 6
        routed = "edge_tail_peer_spans_total{direction=routed}"
        received = "edge_tail_peer_spans_total{direction=received}"
        assert wait_for(lambda: sum(e.metric(routed) for e in edges) == sum(e.metric(received) for e in edges) > 0, 5)
        assert all(e.metric("edge_tail_peers") == 3 for e in edges)


def test_three_instances_keep_every_error_trace_and_ten_percent_of_the_rest(tmp_path: Path,
                                                                            upstream: Upstream) -> None:
    """2,000 traces, each span of a trace sent to another instance, in batches as an SDK sends them."""
    ten_percent = {"name": "ten", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
    with three_instances(tmp_path, upstream, [ERRORS, ten_percent], decision_wait="3s") as edges:
        errors = set(range(1, 2001, 50))
        for n in range(3):  # span n of trace t goes to instance (t + n) % 3
            for i, edge in enumerate(edges):
                mine = [t for t in range(1, 2001) if (t + n) % 3 == i]
                for first in range(0, len(mine), 250):
                    batch = [span(t, n, error=(t in errors and n == 2)) for t in mine[first:first + 250]]
                    assert edge.post_spans(batch).status == 200
        assert accounted(upstream, sent=2000 * 3, timeout=60)
        traces = upstream.traces()
        assert errors <= set(traces)
        assert all(len(ids) == 3 for ids in traces.values())  # whole: every span of each kept trace
        assert sum(upstream.spans().values()) == 3 * len(traces)  # and once
        share = len(set(traces) - errors) / (2000 - len(errors))
        assert 0.07 <= share <= 0.13, share


def test_logs_follow_their_traces_to_the_instance_that_owns_them(tmp_path: Path, upstream: Upstream) -> None:
    """Spans of every trace reach instance A, their log records B and C: each record must find its
    trace at the trace's owner, held and then exported or dropped with it, and late records too."""
    cache = {"sampled_cache_size": 100, "non_sampled_cache_size": 100}
    traces = range(1, 31)
    sampled = [t for t in traces if t % 5 == 0]

    def logs_of(which: str, only: list[int] | range = traces) -> list[str]:
        return [f"{which} {t}" for t in only]

    with three_instances(tmp_path, upstream, [ERRORS], decision_wait="2s", decision_cache=cache,
                         logs={"follow_traces": True}) as edges:
        a, b, c = edges
        for t in traces:
            assert a.post_spans([span(t, n, error=(t % 5 == 0 and n == 1)) for n in range(3)]).status == 200
        for edge, name in ((b, "b"), (c, "c")):
            reply = edge.request("POST", "/v1/logs", log_request(*((t, f"{name} {t}") for t in traces),
                                                                  (0, f"untraced in a batch to {name}")), PB)
            assert (reply.status, reply.body) == (200, b"")
        alone = b.request("POST", "/v1/logs", log_request((0, "untraced alone")), PB)
        assert (alone.status, alone.header("X-Upstream")) == (200, "recorder")  # forwarded as usual
        assert accounted(upstream, sent=30 * 3)  # every trace decided, by its owner
        assert set(upstream.traces()) == set(sampled)
        expected = ["untraced alone", "untraced in a batch to b", "untraced in a batch to c",
                    *logs_of("b", sampled), *logs_of("c", sampled)]
        assert wait_for(lambda: sorted(log_bodies(upstream)) == sorted(expected), 10, 0.05), log_bodies(upstream)
        late = c.request("POST", "/v1/logs", log_request(*((t, f"late {t}") for t in traces)), PB)
        assert late.status == 200  # after the decisions: each owner's decision cache still knows every trace
        expected += logs_of("late", sampled)
        dropped = "edge_tail_logs_total{outcome=dropped}"
        assert wait_for(lambda: sum(e.metric(dropped) for e in edges) == 3 * (30 - len(sampled)), 10, 0.05)
        assert wait_for(lambda: sorted(log_bodies(upstream)) == sorted(expected), 10, 0.05), log_bodies(upstream)
        routed = "edge_tail_peer_log_records_total{direction=routed}"
        received = "edge_tail_peer_log_records_total{direction=received}"
        assert wait_for(lambda: sum(e.metric(routed) for e in edges) == sum(e.metric(received) for e in edges) > 0, 5)
        assert sum(e.metric("edge_tail_peer_log_records_total{direction=kept}") for e in edges) == 0


class SamplerDown(TailEdge):
    """An edge whose sampler cannot open its log (its wal_dir is a file), so it never listens."""

    def _ready(self) -> bool:
        return super(TailEdge, self)._ready()


def test_a_sampler_that_is_down_makes_senders_retry(tmp_path: Path, upstream: Upstream) -> None:
    (tmp_path / "not-a-directory").write_text("")
    grpc_port = free_port()
    tail = tail_config(tmp_path, [ERRORS], wal_dir=str(tmp_path / "not-a-directory"))
    edge = SamplerDown(tmp_path, upstream.url, tail, grpc={"enabled": True, "listen_port": grpc_port}).start()
    try:
        reply = edge.post_spans([span(1, 0)])
        assert (reply.status, reply.header("Retry-After")) == (503, "1")
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                       request_serializer=None, response_deserializer=None)
            with pytest.raises(grpc.RpcError) as raised:
                stub(request([span(1, 0)]).SerializeToString(), timeout=30)
        error = raised.value
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "tail sampler unavailable")
        rpc_status = status_pb2.Status.FromString(dict(error.trailing_metadata())["grpc-status-details-bin"])
        info = error_details_pb2.RetryInfo()
        assert rpc_status.details[0].Unpack(info) and info.retry_delay.seconds == 1
        assert upstream.received() == []
        assert "tail sampler cannot open its write-ahead log" in edge.log()
    finally:
        assert edge.stop() == 0
