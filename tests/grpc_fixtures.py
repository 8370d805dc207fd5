"""OTLP/gRPC test helpers: edge with its gRPC receiver, raw calls, OTLP requests, a recording gRPC upstream.

`GrpcEdge` is the real `edge` command with the gRPC receiver on a free port. `call` makes one
unary call on raw bytes on a fresh channel. `RecordingGrpcUpstream` is a grpc.aio server in a
background thread implementing the three OTLP `Export` services on raw bytes: it records every
call (method, message, metadata) and answers as the test sets it (`GrpcAnswer`: OK with a
response message, a status with or without RetryInfo, or never); it can be stopped and started
again on the same port.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import signal
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf.duration_pb2 import Duration
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource as ProtoResource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from opentelemetry.sdk._logs.export import LogExporter

from tests.proxy_fixtures import free_port
from tests.reliability.harness import EdgeProcess
from tests.sdk_senders import emit_checkout_logs
from tests.waiting import wait_for

POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "redact-secret", "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
                                    "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+",
                                                              "replacement": "<redacted>"}]}}},
    {"id": "sample-checkout", "trace": {"match": [{"resource_attribute": "service.name", "exact": "checkout"}],
                                        "keep": {"percentage": 50}}},
    {"id": "drop-spans", "trace": {"match": [{"trace_field": "name", "starts_with": "drop-"}],
                                   "keep": {"percentage": 0}}},
    {"id": "drop-metrics", "metric": {"match": [{"metric_field": "name", "starts_with": "drop."}], "keep": False}},
]
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"


class GrpcEdge(EdgeProcess):
    """`edge` with its gRPC receiver on a free port; ready once a gRPC call can connect."""

    def __init__(self, tmp: Path, upstream_url: str, policies: list[dict[str, Any]], **config: Any) -> None:
        self.grpc_port = free_port()
        grpc_config = {"listen_port": self.grpc_port, **config.pop("grpc", {})}
        super().__init__(tmp, upstream_url, policies, grpc=grpc_config, **config)
        self.target = f"127.0.0.1:{self.grpc_port}"

    def start(self, timeout: float = 30.0) -> GrpcEdge:
        super().start(timeout)
        assert wait_for(lambda: accepts(self.grpc_port), timeout, 0.05), self.log()
        return self

    def grpc_pids(self) -> set[int]:
        """The live gRPC workers (an exited one, not yet reaped, is not)."""
        pids = set()
        for child in psutil.Process(self.pid).children():
            try:
                if "workers.grpc" in child.cmdline():
                    pids.add(child.pid)
            except psutil.Error:
                continue
        return pids

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(30)




def call(target: str, method: str, body: bytes, compression: grpc.Compression | None = None,
         metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    """One unary call on raw bytes (a fresh channel: calls spread over the workers)."""
    with grpc.insecure_channel(target) as channel:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        return stub(body, timeout=30, compression=compression, metadata=metadata)


def failed_call(target: str, method: str, body: bytes) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(target, method, body)
    return info.value


def logs_request(*records: tuple[str, str]) -> bytes:
    """An ExportLogsServiceRequest with (severity, body) records of service `checkout`."""
    resource = ProtoResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))])
    logs = [LogRecord(severity_text=severity, body=AnyValue(string_value=body)) for severity, body in records]
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=resource, scope_logs=[ScopeLogs(log_records=logs)])]).SerializeToString()


def traces_request(count: int) -> bytes:
    """Spans of service `checkout` with distinct trace ids: about half survive the 50% sampling policy."""
    resource = ProtoResource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))])
    spans = [Span(trace_id=hashlib.sha256(b"%d" % n).digest()[:16], span_id=(n + 1).to_bytes(8, "big"), name=f"op-{n}")
             for n in range(count)]
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=resource, scope_spans=[ScopeSpans(spans=spans)])]).SerializeToString()


def metrics_request(*names: str) -> bytes:
    metrics = [Metric(name=name, gauge=Gauge(data_points=[NumberDataPoint(as_int=1)])) for name in names]
    return ExportMetricsServiceRequest(resource_metrics=[ResourceMetrics(
        scope_metrics=[ScopeMetrics(metrics=metrics)])]).SerializeToString()


def export_checkout_logs(exporter: LogExporter) -> list[str]:
    """300 records sent through the SDK's `exporter`, a third of them DEBUG, each naming a secret; the
    bodies POLICIES leave (DEBUG dropped, secrets redacted), sorted."""
    return sorted(f"rec-{n} token <redacted> used" for n in emit_checkout_logs(exporter, 300))


def log_bodies(data: bytes) -> list[str]:
    message = ExportLogsServiceRequest.FromString(data)
    return [r.body.string_value for rl in message.resource_logs for sl in rl.scope_logs for r in sl.log_records]




def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False




def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edge test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path




# ── a recording gRPC upstream ──

HOLD_LIMIT = 60.0  # seconds a never-answering upstream holds a call at most (edge's deadline ends it first)
STATUS_DETAILS_KEY = "grpc-status-details-bin"


@dataclass(frozen=True)
class GrpcAnswer:
    """How the upstream answers: OK with `body`, or `code` with `details` (and RetryInfo), or never."""

    code: grpc.StatusCode = grpc.StatusCode.OK
    body: bytes = b""
    details: str = ""
    retry_seconds: int | None = None
    never: bool = False

    def status_details(self) -> bytes:
        """The `google.rpc.Status` sent in the trailing metadata (with RetryInfo when `retry_seconds` is set)."""
        status = status_pb2.Status(code=self.code.value[0], message=self.details)
        if self.retry_seconds is not None:
            status.details.add().Pack(error_details_pb2.RetryInfo(retry_delay=Duration(seconds=self.retry_seconds)))
        return status.SerializeToString()


@dataclass(frozen=True)
class GrpcCall:
    method: str
    message: bytes
    metadata: dict[str, str | bytes]


@dataclass
class RecordingGrpcUpstream:
    port: int = field(default_factory=free_port)
    answer: GrpcAnswer = field(default_factory=GrpcAnswer)
    calls: list[GrpcCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.url = f"grpc://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._release = threading.Event()  # ends the calls held by a never-answering upstream
        self.credentials: grpc.ServerCredentials | None = None

    def start(self) -> RecordingGrpcUpstream:
        self._ready.clear()
        self._release.clear()
        self._thread = threading.Thread(target=self._run, name="recording-grpc-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording gRPC upstream did not start")
        return self

    def stop(self) -> None:
        """Stop serving (calls in flight are cancelled) and free the port."""
        self._release.set()
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None

    def reset(self, answer: GrpcAnswer | None = None) -> None:
        self._release.set()  # a call still held from the previous test ends now
        with self._lock:
            self.calls.clear()
            self.answer = answer or GrpcAnswer()
            self._release = threading.Event()

    def received(self) -> list[GrpcCall]:
        with self._lock:
            return list(self.calls)

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._serve())
        self._loop.close()

    async def _serve(self) -> None:
        server = grpc.aio.server()
        server.add_generic_rpc_handlers((_Recorder(self),))
        address = f"127.0.0.1:{self.port}"
        if self.credentials is None:
            server.add_insecure_port(address)
        else:
            server.add_secure_port(address, self.credentials)
        await server.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await server.stop(0)

    async def handle(self, method: str, message: bytes, context: grpc.aio.ServicerContext) -> bytes:
        with self._lock:
            self.calls.append(GrpcCall(method, message, dict(context.invocation_metadata() or ())))
            answer, release = self.answer, self._release
        if answer.never:
            await asyncio.to_thread(release.wait, HOLD_LIMIT)
            await context.abort(grpc.StatusCode.ABORTED, "held call released")
        if answer.code != grpc.StatusCode.OK:
            await context.abort(answer.code, answer.details, ((STATUS_DETAILS_KEY, answer.status_details()),))
        return answer.body


class _Recorder(grpc.GenericRpcHandler):
    """The three OTLP `Export` methods on raw bytes."""

    METHODS = (LOGS, METRICS, TRACES)

    def __init__(self, upstream: RecordingGrpcUpstream) -> None:
        self.upstream = upstream

    def service(self, details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method = details.method
        if method not in self.METHODS:
            return None

        async def export(message: bytes, context: grpc.aio.ServicerContext) -> bytes:
            return await self.upstream.handle(method, message, context)
        return grpc.unary_unary_rpc_method_handler(export, request_deserializer=None, response_serializer=None)
