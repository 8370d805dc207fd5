"""The OpenTelemetry Python SDK as the sender: its default batches reach the upstream filtered, none lost.

The SDK's batch processors export 512 records at a time; with records of ~3 KB that is
~1.5 MiB of protobuf, more once decoded than the 1 MiB limits edge used to have: such a
batch was refused with 413 (the SDK does not retry a 413: all 512 records lost) or, gzip-
or deflate-compressed, forwarded unfiltered. Here the SDK's own `OTLPLogExporter` and
`OTLPSpanExporter` post to a real edge with its default limits, uncompressed and with each
of the SDK's compressions, and the real loopback upstream checks every batch: redacted,
the dropped records gone, every kept record there. One more test points the SDK at an
endpoint with a path prefix (`otlp.logs_path`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.proxy_fixtures import EdgeStack, Recorded, RecordingUpstream
from tests.sdk_senders import emit_checkout_logs, emit_spans

BATCH = 512  # the SDK batch processors' default max_export_batch_size
PADDING = "p" * 3000  # ~3 KB per record
POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "redact-secret", "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
                                    "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+",
                                                              "replacement": "<redacted>"}]}}},
    {"id": "drop-spans", "trace": {"match": [{"trace_field": "name", "starts_with": "drop-"}],
                                   "keep": {"percentage": 0}}},
]
COMPRESSIONS = [Compression.NoCompression, Compression.Gzip, Compression.Deflate]
PREFIXED_LOGS = "/otel/tenant-a/v1/logs"


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    """Default body limits (the point of these tests); one worker is enough for one sender."""
    stack = EdgeStack(upstream.url, POLICIES, workers=1)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset()


def decoded(request: Recorded) -> bytes:
    """The body as the upstream reads it: gzip and zlib (HTTP deflate) are both inflated."""
    encoding = request.header("content-encoding")
    return zlib.decompress(request.body, 47) if encoding in ("gzip", "deflate") else request.body


def export_logs(endpoint: str, compression: Compression) -> set[str]:
    """512 records of ~3 KB through the SDK's batch processor in one export; the ids of the kept ones.

    Every third record is DEBUG (dropped by policy); the others carry a secret to redact."""
    exporter = OTLPLogExporter(endpoint=endpoint, compression=compression, timeout=30)
    return {f"rec-{n}" for n in emit_checkout_logs(exporter, BATCH, padding=f" {PADDING}", batch_size=BATCH)}


def assert_logs_filtered(received: list[Recorded], kept: set[str]) -> None:
    """Every batch arrived filtered: no DEBUG record, no secret, every kept record exactly once."""
    bodies = []
    for request in received:
        message = ExportLogsServiceRequest.FromString(decoded(request))
        bodies += [r.body.string_value for rl in message.resource_logs for sl in rl.scope_logs
                   for r in sl.log_records]
    assert not [b for b in bodies if "secret-" in b]
    ids = [b.split(" ", 1)[0] for b in bodies]
    assert sorted(ids) == sorted(kept)  # nothing lost, nothing dropped that policy keeps, no duplicate
    assert all(b.endswith(f"token <redacted> used {PADDING}") for b in bodies)


@pytest.mark.parametrize("compression", COMPRESSIONS, ids=lambda c: c.value)
def test_sdk_log_batches_of_default_size_arrive_filtered(edge: EdgeStack, upstream: RecordingUpstream,
                                                         compression: Compression) -> None:
    kept = export_logs(f"http://127.0.0.1:{edge.port}/v1/logs", compression)
    received = upstream.received("/v1/logs")
    assert len(received) == 1  # one SDK batch, one request
    encoding = None if compression is Compression.NoCompression else compression.value
    assert received[0].header("content-encoding") == encoding  # re-encoded as it came
    assert_logs_filtered(received, kept)


def test_sdk_span_batches_of_default_size_arrive_filtered(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    exporter = OTLPSpanExporter(endpoint=f"http://127.0.0.1:{edge.port}/v1/traces", compression=Compression.Gzip,
                                timeout=30)
    kept = emit_spans(exporter, BATCH, service="checkout", attributes={"payload": PADDING}, batch_size=BATCH)
    received = upstream.received("/v1/traces")
    assert len(received) == 1 and received[0].header("content-encoding") == "gzip"
    message = ExportTraceServiceRequest.FromString(decoded(received[0]))
    names = [s.name for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert sorted(names) == sorted(kept)


def test_sdk_endpoint_with_a_path_prefix_is_filtered_and_forwarded_to_the_same_path(
        upstream: RecordingUpstream) -> None:
    """`otlp.logs_path` names the prefixed path: filtered there, and forwarded upstream on that same path."""
    stack = EdgeStack(upstream.url, POLICIES, workers=1, otlp={"logs_path": PREFIXED_LOGS}).start()
    try:
        kept = export_logs(f"http://127.0.0.1:{stack.port}{PREFIXED_LOGS}", Compression.Gzip)
    finally:
        stack.close()
    received = upstream.received()
    assert [r.path for r in received] == [PREFIXED_LOGS]
    assert_logs_filtered(received, kept)
