"""OTLP/gRPC through the real `edge` command: the OpenTelemetry SDK's gRPC exporters as clients.

A real edge (supervisor, gunicorn, the gRPC worker processes) forwards to a real recording
HTTP upstream. The SDK's `OTLPLogExporter`, `OTLPSpanExporter` and `OTLPMetricExporter`
(gRPC, plain and gzip) export through it, and their batches arrive filtered; the same
request bytes sent over gRPC and over OTLP/HTTP protobuf leave edge as the same bytes.
Raw calls on a grpcio channel check statuses word for word: bad input, upstream answers,
the retry information SDKs read. Processes are killed and stopped for real.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import orjson
import psutil
import pytest
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edge.config import ConfigError, build
from tests.grpc_fixtures import (
    LOGS,
    METRICS,
    POLICIES,
    TRACES,
    GrpcEdge,
    accepts,
    call,
    export_checkout_logs,
    failed_call,
    log_bodies,
    logs_request,
    metrics_request,
    self_signed,
    traces_request,
)
from tests.proxy_fixtures import RecordingUpstream, Reply, free_port, request
from tests.reliability.harness import EDGE_SCRIPT, EdgeProcess, PolicyServer
from tests.sdk_senders import emit_order_metrics, emit_spans
from tests.waiting import wait_for

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
PROTOBUF_ANSWER = {"Content-Type": "application/x-protobuf"}  # what an OTLP/HTTP protobuf upstream answers
MESSAGE_LIMIT = 64 << 10


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GrpcEdge]:
    """Two gRPC workers (the HTTP workers' count) with a small message limit; SIGTERM'd at the end."""
    process = GrpcEdge(tmp_path_factory.mktemp("grpc"), upstream.url, POLICIES, workers=2,
                       grpc={"max_recv_msg_size": MESSAGE_LIMIT})
    try:
        yield process.start()
    finally:
        assert process.stop() == 0, process.log()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset(headers=PROTOBUF_ANSWER, body=b"")


# ── the SDK's gRPC exporters as clients ──


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip],
                         ids=["plain", "gzip"])
def test_sdk_logs_over_grpc_arrive_filtered(edge: GrpcEdge, upstream: RecordingUpstream,
                                            compression: grpc.Compression) -> None:
    exporter = OTLPLogExporter(endpoint=f"http://{edge.target}", insecure=True, compression=compression, timeout=30)
    kept = export_checkout_logs(exporter)
    received = upstream.received()
    assert {r.path for r in received} == {"/v1/logs"}
    assert {r.header("content-type") for r in received} == {"application/x-protobuf"}
    bodies = [b for r in received for b in log_bodies(r.body)]
    assert sorted(bodies) == kept  # DEBUG dropped, secrets redacted, every other record once


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip],
                         ids=["plain", "gzip"])
def test_sdk_spans_over_grpc_arrive_filtered(edge: GrpcEdge, upstream: RecordingUpstream,
                                             compression: grpc.Compression) -> None:
    exporter = OTLPSpanExporter(endpoint=f"http://{edge.target}", insecure=True, compression=compression, timeout=30)
    emit_spans(exporter, 200)
    received = upstream.received()
    assert {r.path for r in received} == {"/v1/traces"}
    names = [s.name for r in received for rs in ExportTraceServiceRequest.FromString(r.body).resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(f"keep-{n}" for n in range(200) if n % 4)


@pytest.mark.parametrize("compression", [grpc.Compression.NoCompression, grpc.Compression.Gzip],
                         ids=["plain", "gzip"])
def test_sdk_metrics_over_grpc_arrive_filtered(edge: GrpcEdge, upstream: RecordingUpstream,
                                               compression: grpc.Compression) -> None:
    exporter = OTLPMetricExporter(endpoint=f"http://{edge.target}", insecure=True, compression=compression,
                                  timeout=30)
    emit_order_metrics(exporter)
    received = upstream.received()
    assert received and {r.path for r in received} == {"/v1/metrics"}
    names = {m.name for r in received for rm in ExportMetricsServiceRequest.FromString(r.body).resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert names == {"orders.placed", "orders.latency"}


# ── the same evaluation as OTLP/HTTP ──


@pytest.mark.parametrize(("method", "path", "body"), [
    (LOGS, "/v1/logs", logs_request(("INFO", "a secret-1x b"), ("DEBUG", "gone"), ("WARN", "plain"))),
    (TRACES, "/v1/traces", traces_request(200)),
    (METRICS, "/v1/metrics", metrics_request("drop.a", "kept.b", "drop.c")),
], ids=["logs", "traces", "metrics"])
def test_grpc_forwards_the_same_bytes_as_otlp_http(edge: GrpcEdge, upstream: RecordingUpstream, method: str,
                                                   path: str, body: bytes) -> None:
    """Drop, redact and sample: what leaves edge for a gRPC call is what leaves it for the same HTTP request."""
    reply = request(edge.port, "POST", path, body, {"Content-Type": "application/x-protobuf"})
    assert reply.status == 200
    assert call(edge.target, method, body) == b""
    via_http, via_grpc = upstream.received()
    assert via_grpc.path == via_http.path == path
    assert via_grpc.body == via_http.body != body  # filtered, identically


def test_everything_dropped_is_an_empty_success_without_upstream_call(edge: GrpcEdge,
                                                                     upstream: RecordingUpstream) -> None:
    assert call(edge.target, LOGS, logs_request(("DEBUG", "a"), ("DEBUG", "b"))) == b""
    assert upstream.received() == []


def test_metadata_goes_upstream_as_headers(edge: GrpcEdge, upstream: RecordingUpstream) -> None:
    call(edge.target, LOGS, logs_request(("INFO", "x")), metadata=(("authorization", "Bearer t0ken"),))
    (forwarded,) = upstream.received()
    assert forwarded.header("authorization") == "Bearer t0ken"
    assert forwarded.header("content-type") == "application/x-protobuf"


# ── upstream answers ──


def test_partial_success_is_relayed(edge: GrpcEdge, upstream: RecordingUpstream) -> None:
    answer = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(
        rejected_log_records=1, error_message="one record too old")).SerializeToString()
    upstream.reset(headers=PROTOBUF_ANSWER, body=answer)
    assert call(edge.target, LOGS, logs_request(("INFO", "x"), ("INFO", "y"))) == answer


def test_a_json_answer_is_an_empty_success(edge: GrpcEdge, upstream: RecordingUpstream) -> None:
    upstream.reset()  # 200 with a JSON body: not a gRPC message
    assert call(edge.target, LOGS, logs_request(("INFO", "x"))) == b""


@pytest.mark.parametrize(("status", "headers", "code", "retry"), [
    (503, {"Retry-After": "7"}, grpc.StatusCode.UNAVAILABLE, 7),
    (429, {}, grpc.StatusCode.UNAVAILABLE, 1),
    (400, {}, grpc.StatusCode.INVALID_ARGUMENT, None),
])
def test_upstream_status_maps_to_the_otlp_grpc_status(edge: GrpcEdge, upstream: RecordingUpstream, status: int,
                                                      headers: dict[str, str], code: grpc.StatusCode,
                                                      retry: int | None) -> None:
    upstream.reset(status=status, headers=headers, body=b"no")
    error = failed_call(edge.target, LOGS, logs_request(("INFO", "x")))
    assert error.code() == code
    assert error.details() == f"upstream answered {status}"
    details = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if retry is None:
        assert details is None
        return
    rpc_status = status_pb2.Status.FromString(details)
    assert (rpc_status.code, rpc_status.message) == (code.value[0], f"upstream answered {status}")
    info = error_details_pb2.RetryInfo()
    assert rpc_status.details[0].Unpack(info)
    assert info.retry_delay.seconds == retry


# ── bad input: the right status, nothing forwarded, the server stays up ──


def test_bad_input_gets_its_status_and_nothing_is_forwarded(edge: GrpcEdge, upstream: RecordingUpstream) -> None:
    too_big = logs_request(("INFO", "x" * MESSAGE_LIMIT))
    error = failed_call(edge.target, LOGS, too_big)
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    error = failed_call(edge.target, LOGS, b"\xff\xff\xff\xff garbage")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == ("refused unfiltered (undecodable): the body cannot be decoded as its "
                               "Content-Encoding and Content-Type")
    error = failed_call(edge.target, "/opentelemetry.proto.collector.profiles.v1development.ProfilesService/Export",
                        b"")
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert upstream.received() == []
    assert call(edge.target, LOGS, logs_request(("INFO", "still up"))) == b""
    assert [log_bodies(r.body) for r in upstream.received()] == [["still up"]]


def frame(kind: int, flags: int, stream: int, payload: bytes) -> bytes:
    """One HTTP/2 frame (RFC 9113 section 4.1)."""
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big") + payload


def literal_headers(headers: list[tuple[str, str]]) -> bytes:
    """An HPACK block of literal fields without indexing, new names, no Huffman (RFC 7541 section 6.2.2)."""
    block = b""
    for name, value in headers:
        assert len(name) < 127 and len(value) < 127
        block += b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()
    return block


def test_a_stream_closed_mid_message_forwards_nothing_and_the_server_stays_up(edge: GrpcEdge,
                                                                              upstream: RecordingUpstream) -> None:
    """A client that goes away after part of its message: the part never goes upstream."""
    message = logs_request(("INFO", "half of me"))
    headers = literal_headers([(":method", "POST"), (":scheme", "http"), (":path", LOGS),
                               (":authority", edge.target), ("content-type", "application/grpc"), ("te", "trailers")])
    prefixed = b"\x00" + len(message).to_bytes(4, "big") + message
    with socket.create_connection(("127.0.0.1", edge.grpc_port), timeout=10) as conn:
        conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")  # preface, empty SETTINGS
                     + frame(1, 4, 1, headers)  # HEADERS, END_HEADERS, stream 1
                     + frame(0, 0, 1, prefixed[:len(prefixed) // 2]))  # DATA: half the message, no END_STREAM
    assert call(edge.target, LOGS, logs_request(("INFO", "after"))) == b""
    assert [log_bodies(r.body) for r in upstream.received()] == [["after"]]


def test_grpc_calls_are_counted_per_service_and_status(edge: GrpcEdge) -> None:
    failed_call(edge.target, LOGS, b"\xff\xff not protobuf")
    call(edge.target, LOGS, logs_request(("INFO", "counted")))
    text = request(edge.port, "GET", "/_edge/metrics").body.decode()
    ok = f'edge_grpc_requests_total{{code="OK",service="{LOGS_SERVICE}"}}'
    invalid = f'edge_grpc_requests_total{{code="INVALID_ARGUMENT",service="{LOGS_SERVICE}"}}'
    lines = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line.startswith("edge_grpc")}
    assert lines[ok] >= 1 and lines[invalid] >= 1
    assert lines[f'edge_grpc_request_duration_seconds_count{{service="{LOGS_SERVICE}"}}'] >= 2


# ── processes ──


def test_match_statistics_of_grpc_calls_reach_the_policy_server(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """The gRPC workers hand their match counts to the supervisor as the HTTP workers do."""
    server = PolicyServer(free_port(), POLICIES[:1]).start()
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES[:1], workers=1, policy_providers=[
        {"id": "tero", "type": "http", "url": server.url, "poll_interval": 1}]).start()
    try:
        call(edge.target, LOGS, logs_request(("DEBUG", "a"), ("DEBUG", "b"), ("INFO", "c")))

        def hits() -> int:
            reported = [orjson.loads(body).get("policyStatuses") or [] for _, _, body in list(server.seen)]
            return sum(int(s.get("matchHits", 0)) for statuses in reported for s in statuses
                       if s["id"] == "drop-debug")
        assert wait_for(lambda: hits() == 2, 30, 0.2), (hits(), edge.log())
    finally:
        assert edge.stop() == 0
        server.stop()


def test_unreachable_upstream_is_unavailable_with_retry_info(tmp_path: Path) -> None:
    edge = GrpcEdge(tmp_path, f"http://127.0.0.1:{free_port()}", POLICIES, workers=1).start()
    try:
        error = failed_call(edge.target, LOGS, logs_request(("INFO", "x")))
    finally:
        assert edge.stop() == 0
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAVAILABLE, "upstream unreachable")
    assert dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")


def test_a_killed_grpc_worker_is_replaced(tmp_path: Path, upstream: RecordingUpstream) -> None:
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES, workers=1).start()
    try:
        (old,) = edge.grpc_pids()
        os.kill(old, signal.SIGKILL)
        assert wait_for(lambda: len(edge.grpc_pids() - {old}) == 1, 30, 0.1), edge.log()

        def serving() -> bool:
            try:
                return call(edge.target, LOGS, logs_request(("INFO", "again"))) == b""
            except grpc.RpcError:
                return False
        assert wait_for(serving, 30, 0.2), edge.log()
        messages = [orjson.loads(line)["msg"] for line in edge.log().splitlines() if line.startswith("{")]
        assert f"gRPC worker 0 (pid {old}) exited with status -9; restarting it" in messages
    finally:
        assert edge.stop() == 0


def test_sigterm_under_load_answers_the_calls_in_flight(tmp_path: Path, upstream: RecordingUpstream) -> None:
    release = threading.Event()
    upstream.reset(headers=PROTOBUF_ANSWER, body=b"", hold=release)
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES, workers=2).start()
    calls = 8
    try:
        with ThreadPoolExecutor(calls) as pool:
            futures = [pool.submit(call, edge.target, LOGS, logs_request(("INFO", f"in flight {n}")))
                       for n in range(calls)]
            assert wait_for(lambda: len(upstream.received()) == calls, 30, 0.05)
            assert edge.proc is not None
            edge.proc.send_signal(signal.SIGTERM)
            assert wait_for(lambda: not accepts(edge.grpc_port), 30, 0.05), edge.log()  # draining, not dead
            release.set()
            assert [f.result(30) for f in futures] == [b""] * calls
        assert edge.proc.wait(30) == 0
    finally:
        release.set()
        edge.stop()


def test_calls_beyond_max_connections_are_resource_exhausted(tmp_path: Path, upstream: RecordingUpstream) -> None:
    release = threading.Event()
    upstream.reset(headers=PROTOBUF_ANSWER, body=b"", hold=release)
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES, workers=1, max_connections=2).start()
    try:
        with ThreadPoolExecutor(2) as pool:
            held = [pool.submit(call, edge.target, LOGS, logs_request(("INFO", f"held {n}"))) for n in range(2)]
            assert wait_for(lambda: len(upstream.received()) == 2, 30, 0.05)
            error = failed_call(edge.target, LOGS, logs_request(("INFO", "one too many")))
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            release.set()
            assert [f.result(30) for f in held] == [b"", b""]
        assert len(upstream.received()) == 2
    finally:
        release.set()
        assert edge.stop() == 0


def test_grpc_port_in_use_is_one_error_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        config = tmp_path / "config.json"
        config.write_text(orjson.dumps({"listen_port": free_port(), "workers": 1,
                                        "grpc": {"listen_port": port}}).decode())
        result = subprocess.run([str(EDGE_SCRIPT), str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = (result.stdout + result.stderr).splitlines()
    assert orjson.loads(line)["msg"] == (
        f"cannot listen on 127.0.0.1:{port}: the port is already in use (config key grpc.listen_port)")


def test_a_second_edge_on_the_same_grpc_port_is_refused_not_sharing_it(edge: GrpcEdge, tmp_path: Path) -> None:
    """SO_REUSEPORT would let it bind and take half of the first edge's calls: it exits 2 instead."""
    config = tmp_path / "second.json"
    config.write_text(orjson.dumps({"listen_port": free_port(), "workers": 1,
                                    "grpc": {"listen_port": edge.grpc_port}}).decode())
    result = subprocess.run([str(EDGE_SCRIPT), str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    (line,) = (result.stdout + result.stderr).splitlines()
    assert orjson.loads(line)["msg"] == (f"cannot listen on 127.0.0.1:{edge.grpc_port}: the port is already "
                                         "in use (config key grpc.listen_port)")
    assert edge.proc is not None and edge.proc.poll() is None


def test_grpc_can_be_disabled(tmp_path: Path, upstream: RecordingUpstream) -> None:
    edge = EdgeProcess(tmp_path, upstream.url, POLICIES, workers=1, grpc={"enabled": False}).start()
    try:
        assert not [p for p in psutil.Process(edge.pid).children() if "workers.grpc" in p.cmdline()]  # none started
        reply: Reply = edge.request("GET", "/_health")
        assert reply.status == 200
    finally:
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGTERM)
        assert edge.proc.wait(30) == 0


# ── configuration ──


def test_grpc_settings_come_from_tero_variables() -> None:
    config = build({}, env={"TERO_GRPC_LISTEN_PORT": "14317", "TERO_GRPC_ENABLED": "false",
                            "TERO_GRPC_MAX_RECV_MSG_SIZE": "1000"})
    assert (config.grpc.listen_port, config.grpc.enabled, config.grpc.max_recv_msg_size) == (14317, False, 1000)
    assert build({"max_body_size": 5000}, env={}).grpc.message_limit(5000) == 5000  # 0: max_body_size


@pytest.mark.parametrize(("grpc_section", "message"), [
    ({"tls_cert_file": "cert.pem"}, "config key grpc: tls_cert_file and tls_key_file must be set together"),
    ({"tls_cert_file": "/nonexistent/cert.pem", "tls_key_file": "/nonexistent/key.pem"},
     "config key grpc.tls_cert_file: cannot read '/nonexistent/cert.pem'"),
    ({"listen_port": 70000}, "config key grpc.listen_port: expected 0..65535, got 70000"),
])
def test_bad_grpc_settings_are_one_config_error(grpc_section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build({"grpc": grpc_section}, env={})
    assert str(info.value) == message


def test_grpc_over_tls(tmp_path: Path, upstream: RecordingUpstream) -> None:
    cert, key = self_signed(tmp_path)
    edge = GrpcEdge(tmp_path, upstream.url, POLICIES, workers=1,
                    grpc={"tls_cert_file": str(cert), "tls_key_file": str(key)})
    edge.start()
    try:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(edge.target, credentials) as channel:
            stub = channel.unary_unary(LOGS, request_serializer=None, response_deserializer=None)
            assert stub(logs_request(("INFO", "over tls"), ("DEBUG", "no")), timeout=30) == b""
        assert [log_bodies(r.body) for r in upstream.received()] == [["over tls"]]
        assert failed_call(edge.target, LOGS, logs_request(("INFO", "plaintext"))).code() == \
            grpc.StatusCode.UNAVAILABLE  # a plaintext client cannot talk to it
    finally:
        assert edge.stop() == 0
