"""OTLP forwarded to a gRPC upstream, from both receivers, through the real `edge` command.

A real recording gRPC upstream (`RecordingGrpcUpstream`: grpc.aio in a background thread,
the three OTLP `Export` services, answers set per test) takes every signal of one edge
(`logs_url`, `metrics_url`, `traces_url` are `grpc://`); passthrough and Datadog still go to
the recording HTTP upstream. The SDK's exporters (gRPC and HTTP, plain and gzip, batch
processors and a periodic metric reader) export through edge; the same requests sent to a
second edge with an HTTP upstream show that drop, sample and redact leave the same records
either way. Each upstream status is checked as a gRPC client and an OTLP/HTTP client (protobuf
and JSON) see it; the upstream is stopped and started again under the same worker's channels.
"""

from __future__ import annotations

import base64
import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edge.config import ConfigError, build
from edge.protocols.grpc_channels import GrpcTarget, grpc_target
from edge.protocols.grpc_status import retry_delay
from edge.protocols.grpc_upstream import GrpcClient
from edge.protocols.otlp_upstream import otlp_client
from edge.protocols.self_metrics import get_metrics
from edge.protocols.upstream import Upstream
from tests.grpc_fixtures import (
    LOGS,
    METRICS,
    POLICIES,
    STATUS_DETAILS_KEY,
    TRACES,
    GrpcAnswer,
    GrpcEdge,
    RecordingGrpcUpstream,
    call,
    export_checkout_logs,
    failed_call,
    log_bodies,
    logs_request,
    metrics_request,
    self_signed,
    traces_request,
)
from tests.proxy_fixtures import RecordingUpstream, Reply, request
from tests.sdk_senders import emit_order_metrics, emit_spans
from tests.waiting import wait_for

UPSTREAM_TIMEOUT = 2  # seconds: edge's deadline for a never-answering upstream
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
MESSAGES = {LOGS: ExportLogsServiceRequest, METRICS: ExportMetricsServiceRequest, TRACES: ExportTraceServiceRequest}
PATHS = {LOGS: "/v1/logs", METRICS: "/v1/metrics", TRACES: "/v1/traces"}
PARTIAL = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
    rejected_log_records=1, error_message="one record too old")).SerializeToString()


@pytest.fixture(scope="module")
def grpc_upstream() -> Iterator[RecordingGrpcUpstream]:
    server = RecordingGrpcUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def edge(grpc_upstream: RecordingGrpcUpstream, upstream: RecordingUpstream,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcEdge]:
    """Every signal to the gRPC upstream; passthrough to the HTTP one. One worker: one pool per receiver."""
    url = grpc_upstream.url
    process = GrpcEdge(tmp_path_factory.mktemp("grpc-up"), upstream.url, POLICIES, workers=1, logs_url=url,
                       metrics_url=url, traces_url=url, upstream_timeout=UPSTREAM_TIMEOUT)
    try:
        yield process.start()
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture(scope="module")
def http_edge(upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcEdge]:
    """The same policies with the HTTP upstream: what OTLP/HTTP forwarding leaves, to compare with."""
    process = GrpcEdge(tmp_path_factory.mktemp("http-up"), upstream.url, POLICIES, workers=1)
    try:
        yield process.start()
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture(autouse=True)
def _fresh_upstreams(grpc_upstream: RecordingGrpcUpstream, upstream: RecordingUpstream) -> None:
    grpc_upstream.reset()
    upstream.reset(headers=PROTOBUF, body=b"")


def messages(upstream: RecordingGrpcUpstream, method: str) -> list[Any]:
    calls = upstream.received()
    assert {c.method for c in calls} <= {method}
    return [MESSAGES[method].FromString(c.message) for c in calls]


def post(edge: GrpcEdge, path: str, body: bytes, headers: dict[str, str]) -> Reply:
    return request(edge.port, "POST", path, body, headers, timeout=30)


def otlp_json(method: str, body: bytes) -> bytes:
    """The OTLP/JSON spelling of a protobuf request: proto3 JSON with hex trace and span ids."""
    doc = json_format.MessageToDict(MESSAGES[method].FromString(body))
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            if key in ("traceId", "spanId", "parentSpanId"):
                node[key] = base64.b64decode(value).hex()
            elif isinstance(value, (dict, list)):
                stack.append(value)
    return orjson.dumps(doc)


# ── the SDK's exporters through edge to the gRPC upstream ──

EXPORTERS = ["grpc", "http"]
GZIP = [False, True]


def exporter_args(kind: str, edge: GrpcEdge, path: str, gzipped: bool) -> dict[str, Any]:
    if kind == "grpc":
        return {"endpoint": f"http://{edge.target}", "insecure": True, "timeout": 30,
                "compression": grpc.Compression.Gzip if gzipped else grpc.Compression.NoCompression}
    return {"endpoint": f"{edge.base}{path}", "timeout": 30,
            "compression": Compression.Gzip if gzipped else Compression.NoCompression}


@pytest.mark.parametrize("gzipped", GZIP, ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", EXPORTERS)
def test_sdk_logs_arrive_filtered(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream, kind: str,
                                  gzipped: bool) -> None:
    exporter_class = GrpcLogExporter if kind == "grpc" else HttpLogExporter
    kept = export_checkout_logs(exporter_class(**exporter_args(kind, edge, "/v1/logs", gzipped)))
    bodies = [b for c in grpc_upstream.received() for b in log_bodies(c.message)]
    assert {c.method for c in grpc_upstream.received()} == {LOGS}
    assert sorted(bodies) == kept  # DEBUG dropped, secrets redacted, every other record once


@pytest.mark.parametrize("gzipped", GZIP, ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", EXPORTERS)
def test_sdk_spans_arrive_filtered(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream, kind: str,
                                   gzipped: bool) -> None:
    exporter_class = GrpcSpanExporter if kind == "grpc" else HttpSpanExporter
    emit_spans(exporter_class(**exporter_args(kind, edge, "/v1/traces", gzipped)), 200)
    names = [s.name for m in messages(grpc_upstream, TRACES) for rs in m.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(f"keep-{n}" for n in range(200) if n % 4)


@pytest.mark.parametrize("gzipped", GZIP, ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", EXPORTERS)
def test_sdk_metrics_arrive_filtered(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream, kind: str,
                                     gzipped: bool) -> None:
    exporter_class = GrpcMetricExporter if kind == "grpc" else HttpMetricExporter
    emit_order_metrics(exporter_class(**exporter_args(kind, edge, "/v1/metrics", gzipped)))
    names = {m.name for message in messages(grpc_upstream, METRICS) for rm in message.resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert names == {"orders.placed", "orders.latency"}


# ── the same evaluation as with an HTTP upstream ──

REQUESTS = [
    (LOGS, logs_request(("INFO", "a secret-1x b"), ("DEBUG", "gone"), ("WARN", "plain"))),
    (TRACES, traces_request(200)),  # about half sampled
    (METRICS, metrics_request("drop.a", "kept.b", "drop.c")),
]


@pytest.mark.parametrize(("method", "body"), REQUESTS, ids=["logs", "traces", "metrics"])
def test_drop_sample_and_redact_leave_what_the_http_upstream_gets(edge: GrpcEdge, http_edge: GrpcEdge,
                                                                 grpc_upstream: RecordingGrpcUpstream,
                                                                 upstream: RecordingUpstream, method: str,
                                                                 body: bytes) -> None:
    """gRPC client, OTLP/HTTP protobuf (plain and gzip) and OTLP/JSON: the upstream gets what HTTP forwarding leaves."""
    assert call(http_edge.target, method, body) == b""
    (via_http,) = upstream.received()
    assert via_http.body != body  # filtered
    path = PATHS[method]
    assert call(edge.target, method, body) == b""
    assert post(edge, path, body, PROTOBUF).status == 200
    assert post(edge, path, gzip.compress(body), {**PROTOBUF, "Content-Encoding": "gzip"}).status == 200
    assert [c.message for c in grpc_upstream.received()] == [via_http.body] * 3
    grpc_upstream.reset()
    reply = post(edge, path, otlp_json(method, body), JSON)
    assert (reply.status, reply.header("content-type"), reply.body) == (200, "application/json", b"{}")
    (from_json,) = messages(grpc_upstream, method)
    assert from_json == MESSAGES[method].FromString(via_http.body)


def test_everything_dropped_is_an_empty_success_without_upstream_call(edge: GrpcEdge,
                                                                     grpc_upstream: RecordingGrpcUpstream) -> None:
    body = logs_request(("DEBUG", "a"), ("DEBUG", "b"))
    assert call(edge.target, LOGS, body) == b""
    reply = post(edge, "/v1/logs", body, PROTOBUF)
    assert (reply.status, reply.body) == (200, b"")
    assert grpc_upstream.received() == []


def test_metadata_and_headers_go_upstream_as_metadata(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream) -> None:
    call(edge.target, LOGS, logs_request(("INFO", "x")), metadata=(("authorization", "Bearer t0ken"),))
    post(edge, "/v1/logs", logs_request(("INFO", "y")), {**PROTOBUF, "Authorization": "Bearer h77p",
                                                         "X-Tenant": "a"})
    from_grpc, from_http = (c.metadata for c in grpc_upstream.received())
    assert from_grpc["authorization"] == "Bearer t0ken"
    assert (from_http["authorization"], from_http["x-tenant"]) == ("Bearer h77p", "a")
    assert "content-encoding" not in from_http


def test_passthrough_and_datadog_keep_the_http_upstream(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream,
                                                        upstream: RecordingUpstream) -> None:
    """A gRPC `logs_url` cannot take Datadog logs: they go to `upstream_url`, as passthrough does."""
    assert edge.request("GET", "/anything").status == 200
    assert post(edge, "/api/v2/logs", b'[{"message": "hi", "status": "info"}]', JSON).status == 200
    assert [r.path for r in upstream.received()] == ["/anything", "/api/v2/logs"]
    assert grpc_upstream.received() == []


# ── answers ──


def test_partial_success_is_relayed_to_every_client(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream) -> None:
    grpc_upstream.reset(GrpcAnswer(body=PARTIAL))
    body = logs_request(("INFO", "x"), ("INFO", "y"))
    assert call(edge.target, LOGS, body) == PARTIAL
    reply = post(edge, "/v1/logs", body, PROTOBUF)
    assert (reply.status, reply.header("content-type"), reply.body) == (200, "application/x-protobuf", PARTIAL)
    reply = post(edge, "/v1/logs", otlp_json(LOGS, body), JSON)
    assert reply.status == 200
    assert orjson.loads(reply.body) == {"partialSuccess": {"rejectedLogRecords": "1",
                                                           "errorMessage": "one record too old"}}


STATUSES = [
    (GrpcAnswer(grpc.StatusCode.UNAVAILABLE, details="collector overloaded", retry_seconds=7), 503, "7"),
    (GrpcAnswer(grpc.StatusCode.RESOURCE_EXHAUSTED, details="slow down", retry_seconds=3), 429, "3"),
    (GrpcAnswer(grpc.StatusCode.RESOURCE_EXHAUSTED, details="quota"), 429, None),
    (GrpcAnswer(grpc.StatusCode.INVALID_ARGUMENT, details="bad record"), 400, None),
    (GrpcAnswer(grpc.StatusCode.PERMISSION_DENIED, details="no"), 502, None),
]


@pytest.mark.parametrize(("answer", "status", "retry_after"), STATUSES,
                         ids=["unavailable", "exhausted-retry", "exhausted", "invalid", "other"])
def test_upstream_status_reaches_grpc_and_http_clients(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream,
                                                       answer: GrpcAnswer, status: int,
                                                       retry_after: str | None) -> None:
    """gRPC clients get the status as received; OTLP/HTTP clients its HTTP equivalent and a Status body."""
    grpc_upstream.reset(answer)
    body = logs_request(("INFO", "x"))
    error = failed_call(edge.target, LOGS, body)
    assert (error.code(), error.details()) == (answer.code, answer.details)
    assert dict(error.trailing_metadata() or ())[STATUS_DETAILS_KEY] == answer.status_details()
    reply = post(edge, "/v1/logs", body, PROTOBUF)
    assert (reply.status, reply.header("retry-after")) == (status, retry_after)
    assert (reply.header("content-type"), reply.body) == ("application/x-protobuf", answer.status_details())
    reply = post(edge, "/v1/logs", otlp_json(LOGS, body), JSON)
    assert (reply.status, reply.header("retry-after")) == (status, retry_after)
    assert orjson.loads(reply.body) == {"code": answer.code.value[0], "message": answer.details}
    assert len(grpc_upstream.received()) == 3


def test_an_upstream_that_never_answers_is_a_deadline(edge: GrpcEdge, grpc_upstream: RecordingGrpcUpstream) -> None:
    grpc_upstream.reset(GrpcAnswer(never=True))
    body = logs_request(("INFO", "x"))
    assert failed_call(edge.target, LOGS, body).code() == grpc.StatusCode.DEADLINE_EXCEEDED
    reply = post(edge, "/v1/logs", body, PROTOBUF)
    assert reply.status == 504
    assert status_pb2.Status.FromString(reply.body).code == grpc.StatusCode.DEADLINE_EXCEEDED.value[0]


@pytest.mark.parametrize(("headers", "body", "status"), [
    (JSON, b'{"resourceLogs": "not a list"}', 400),
    (JSON, b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"traceId": "not hex"}]}]}]}', 400),
    ({**PROTOBUF, "Content-Encoding": "br"}, b"\x0b\x01\x80", 415),
])
def test_a_body_that_cannot_be_a_message_is_answered_without_a_call(edge: GrpcEdge,
                                                                   grpc_upstream: RecordingGrpcUpstream,
                                                                   headers: dict[str, str], body: bytes,
                                                                   status: int) -> None:
    """Fail-open forwards it as received, but a gRPC upstream takes only an OTLP message."""
    assert post(edge, "/v1/logs", body, headers).status == status
    assert grpc_upstream.received() == []


# ── the upstream goes away and comes back (last: it restarts the module's upstream) ──


def test_upstream_down_is_unavailable_and_the_channels_recover(edge: GrpcEdge,
                                                               grpc_upstream: RecordingGrpcUpstream) -> None:
    body = logs_request(("INFO", "x"))
    assert call(edge.target, LOGS, body) == b""  # both pools connected
    assert post(edge, "/v1/logs", body, PROTOBUF).status == 200
    grpc_upstream.stop()
    try:
        assert failed_call(edge.target, LOGS, body).code() == grpc.StatusCode.UNAVAILABLE
        reply = post(edge, "/v1/logs", body, PROTOBUF)
        assert reply.status == 503
        assert status_pb2.Status.FromString(reply.body).code == grpc.StatusCode.UNAVAILABLE.value[0]
    finally:
        grpc_upstream.start()
    grpc_upstream.reset()

    def through(send: Callable[[], bool]) -> Callable[[], bool]:
        def attempt() -> bool:
            try:
                return send()
            except grpc.RpcError:
                return False
        return attempt
    assert wait_for(through(lambda: call(edge.target, LOGS, logs_request(("INFO", "grpc again"))) == b""), 20, 0.2)
    assert wait_for(through(lambda: post(edge, "/v1/logs", logs_request(("INFO", "http again")),
                                         PROTOBUF).status == 200), 20, 0.2)
    bodies = [b for c in grpc_upstream.received() for b in log_bodies(c.message)]
    assert {"grpc again", "http again"} <= set(bodies)


# ── TLS and the global key ──


def test_grpcs_and_upstream_protocol_grpc_over_tls(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """`grpcs://` and, under `upstream_protocol: grpc`, `https://` are TLS verified against the system's CA
    bundle (here `SSL_CERT_FILE`, holding the upstream's self-signed certificate)."""
    cert, key = self_signed(tmp_path)
    secure = RecordingGrpcUpstream()
    secure.credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    secure.start()
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES, workers=1, upstream_protocol="grpc",
                    logs_url=f"grpcs://127.0.0.1:{secure.port}", traces_url=f"https://127.0.0.1:{secure.port}",
                    metrics_url=f"grpcs://127.0.0.1:{secure.port}", env={"SSL_CERT_FILE": str(cert)})
    try:
        edge.start()
        assert call(edge.target, LOGS, logs_request(("INFO", "over tls"), ("DEBUG", "no"))) == b""
        assert post(edge, "/v1/traces", traces_request(20), PROTOBUF).status == 200
        methods = [c.method for c in secure.received()]
        assert methods == [LOGS, TRACES]
        assert log_bodies(secure.received()[0].message) == ["over tls"]
    finally:
        assert edge.stop() == 0, edge.log()
        secure.stop()


# ── configuration and the pieces, in process ──


@pytest.mark.parametrize(("doc", "env", "grpc_signals"), [
    ({}, {}, set()),
    ({"traces_url": "grpc://collector:4317"}, {}, {"trace"}),
    ({"logs_url": "grpcs://collector"}, {"TERO_UPSTREAM_PROTOCOL": "http"}, {"log"}),
    ({"upstream_url": "http://collector:4317"}, {"TERO_UPSTREAM_PROTOCOL": "grpc"}, {"log", "metric", "trace"}),
])
def test_a_signal_goes_over_grpc_by_its_scheme_or_the_global_key(doc: dict[str, Any], env: dict[str, str],
                                                                 grpc_signals: set[str]) -> None:
    config = build(doc, env=env)
    upstream = Upstream(config, get_metrics())
    clients = {signal: otlp_client(config, signal, url, upstream) for signal, url in config.otlp_urls().items()}
    assert {signal for signal, client in clients.items() if isinstance(client, GrpcClient)} == grpc_signals


@pytest.mark.parametrize(("url", "address", "tls"), [
    ("grpc://collector", "collector:4317", False),
    ("grpcs://collector:4443", "collector:4443", True),
    ("http://collector", "collector:80", False),
    ("https://collector", "collector:443", True),
    ("grpc://[::1]:4317", "[::1]:4317", False),
])
def test_grpc_targets(url: str, address: str, tls: bool) -> None:
    assert grpc_target(url) == GrpcTarget(address, tls)


@pytest.mark.parametrize(("doc", "message"), [
    ({"traces_url": "grpc://collector:4317/v1/traces"},
     "config key traces_url: expected grpc(s)://host:port without a path, got 'grpc://collector:4317/v1/traces'"),
    ({"upstream_protocol": "h2"}, "config key upstream_protocol: expected http or grpc, got 'h2'"),
    ({"upstream_protocol": "grpc", "logs_url": "http://collector:4317/otlp"},
     "config key logs_url: a gRPC upstream (upstream_protocol grpc) takes no path, got 'http://collector:4317/otlp'"),
    ({"upstream_url": "grpc://collector:4317"}, "config key upstream_url: expected an http(s) URL"),
])
def test_bad_grpc_upstream_settings_are_one_config_error(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build(doc, env={})
    assert str(info.value).startswith(message)


def test_retry_info_is_read_from_any_status_and_garbage_is_no_delay() -> None:
    answer = GrpcAnswer(grpc.StatusCode.UNAVAILABLE, details="x", retry_seconds=12)
    assert retry_delay(answer.status_details()) == 12
    assert retry_delay(GrpcAnswer(grpc.StatusCode.UNAVAILABLE, details="x").status_details()) is None
    assert retry_delay(b"\x1a\x05\x0a\x03abc") is None  # an Any of another type
    assert retry_delay(b"\x1a\xff\xff") is None  # truncated
    assert retry_delay(None) is None
