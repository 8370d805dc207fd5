"""Requests edge cannot filter are never unfiltered in silence: counted, logged, or refused on request.

Each reason of `edge.protocols.unfiltered` is produced by a real body sent to real workers:
with `unfiltered: forward` (the default) the body reaches the upstream byte for byte, is
counted in `edge_unfiltered_requests_total{route, signal, reason}` and logged at warn once
per route and reason per 10 s however many such requests come; with `unfiltered: reject`
the sender gets the reason's status and its one-line message, and the upstream nothing.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from edge.protocols.content_encoding import GZIP, encode
from edge.protocols.otlp import OtlpRoute
from edge.protocols.self_metrics import get_metrics
from edge.protocols.unfiltered import Refused
from edge.protocols.upstream import request_head
from tests.proxy_fixtures import EdgeStack, RecordingUpstream, request
from tests.test_http_app import metric_value

POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "drop-internal", "metric": {"match": [{"metric_field": "name", "starts_with": "internal_"}],
                                       "keep": False}},
]
PROTOBUF_EXPOSITION = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
MAX_DECODED = 50_000
BURST = 6
JSON_CT = {"Content-Type": "application/json"}
SMALL_LOGS = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"severityText": "INFO", "body": {"stringValue": "x" * 100}}]}]}]})
BIG_LOGS = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [
    {"severityText": "INFO", "body": {"stringValue": "x" * 100}}] * 1000}]}]})  # ~120 KB decoded

# reason -> (headers, body, status under reject)
CASES: dict[str, tuple[dict[str, str], bytes, int]] = {
    "decode_limit": ({"Content-Encoding": "gzip"}, gzip.compress(BIG_LOGS), 413),
    "unknown_codec": ({"Content-Encoding": "br"}, b"\x8b\x02\x80brotli-ish", 415),
    "undecodable": ({"Content-Encoding": "gzip"}, gzip.compress(SMALL_LOGS)[:-12], 400),
    "depth_limit": ({}, b'{"resourceLogs":' + b"[" * 2000 + b"]" * 2000 + b"}", 413),
}
MESSAGES = {
    "decode_limit": "the body is larger than max_decoded_bytes once decoded",
    "unknown_codec": "the Content-Encoding is not one edge decodes",
    "undecodable": "the body cannot be decoded as its Content-Encoding and Content-Type",
    "depth_limit": "the body nests deeper than edge parses",
    "unsupported_format": "the Content-Type is not one edge filters on this route",
}


def _stack(upstream: RecordingUpstream, mode: str) -> Iterator[EdgeStack]:
    stack = EdgeStack(upstream.url, POLICIES, workers=1, max_decoded_bytes=MAX_DECODED, unfiltered=mode)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(scope="module")
def forwarding(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    yield from _stack(upstream, "forward")


@pytest.fixture(scope="module")
def rejecting(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    yield from _stack(upstream, "reject")


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset()


def warnings(stack: EdgeStack, prefix: str) -> list[str]:
    """The messages of the JSON warn lines in the workers' log that start with `prefix`."""
    lines = [orjson.loads(line) for line in stack.log_path.read_text().splitlines() if line.startswith("{")]
    return [line["msg"] for line in lines if line["level"] == "warn" and line["msg"].startswith(prefix)]


@pytest.mark.parametrize("reason", CASES)
def test_unfiltered_bodies_are_forwarded_counted_and_logged_once_per_burst(
        forwarding: EdgeStack, upstream: RecordingUpstream, reason: str) -> None:
    headers, body, _ = CASES[reason]
    for _ in range(BURST):
        reply = request(forwarding.port, "POST", "/v1/logs", body, {**JSON_CT, **headers})
        assert reply.status == 200
    assert [r.body for r in upstream.received("/v1/logs")] == [body] * BURST  # byte for byte
    assert metric_value(forwarding, "edge_unfiltered_requests_total", route="otlp_logs", signal="log",
                        reason=reason) == BURST
    lines = warnings(forwarding, f"otlp_logs request forwarded unfiltered ({reason}): ")
    assert len(lines) == 1, lines  # one line per route and reason per 10 s, however many requests
    assert lines[0].startswith(f"otlp_logs request forwarded unfiltered ({reason}): {MESSAGES[reason]}; ")


def test_the_decode_limit_line_names_the_codec_and_the_limit(forwarding: EdgeStack) -> None:
    headers, body, _ = CASES["decode_limit"]
    request(forwarding.port, "POST", "/v1/logs", body, {**JSON_CT, **headers})
    assert warnings(forwarding, "otlp_logs request forwarded unfiltered (decode_limit)") == [
        "otlp_logs request forwarded unfiltered (decode_limit): the body is larger than max_decoded_bytes once "
        f"decoded; gzip: over {MAX_DECODED} bytes once decoded"]


@pytest.mark.parametrize("reason", CASES)
def test_with_unfiltered_reject_the_sender_gets_the_reason_and_the_upstream_nothing(
        rejecting: EdgeStack, upstream: RecordingUpstream, reason: str) -> None:
    headers, body, status = CASES[reason]
    reply = request(rejecting.port, "POST", "/v1/logs", body, {**JSON_CT, **headers})
    assert (reply.status, reply.header("content-type")) == (status, "text/plain; charset=utf-8")
    assert reply.body == f"refused unfiltered ({reason}): {MESSAGES[reason]}\n".encode()
    assert upstream.received() == []
    assert metric_value(rejecting, "edge_unfiltered_requests_total", route="otlp_logs", signal="log",
                        reason=reason) == 1
    assert len(warnings(rejecting, f"otlp_logs request refused ({reason}): {MESSAGES[reason]}")) == 1


def test_with_unfiltered_reject_filterable_bodies_still_go_through(rejecting: EdgeStack,
                                                                   upstream: RecordingUpstream) -> None:
    reply = request(rejecting.port, "POST", "/v1/logs", gzip.compress(SMALL_LOGS),
                    {**JSON_CT, "Content-Encoding": "gzip"})
    assert reply.status == 200 and len(upstream.received("/v1/logs")) == 1


def test_datadog_protobuf_logs_are_an_unsupported_format(forwarding: EdgeStack, rejecting: EdgeStack,
                                                        upstream: RecordingUpstream) -> None:
    body = b"\x0a\x05hello"
    headers = {"Content-Type": "application/x-protobuf"}
    assert request(forwarding.port, "POST", "/api/v2/logs", body, headers).status == 200
    assert [r.body for r in upstream.received("/api/v2/logs")] == [body]
    assert metric_value(forwarding, "edge_unfiltered_requests_total", route="datadog_logs", signal="log",
                        reason="unsupported_format") == 1
    reply = request(rejecting.port, "POST", "/api/v2/logs", body, headers)
    assert (reply.status, reply.body) == (415, b"refused unfiltered (unsupported_format): the Content-Type is not "
                                               b"one edge filters on this route\n")
    assert len(upstream.received()) == 1


@pytest.mark.parametrize(("headers", "reason", "status"), [
    ({"Content-Type": PROTOBUF_EXPOSITION}, "unsupported_format", 415),
    ({"Content-Type": "text/plain; version=0.0.4", "Content-Encoding": "br"}, "unknown_codec", 415),
])
def test_prometheus_scrapes_edge_cannot_filter_are_counted_or_refused(
        forwarding: EdgeStack, rejecting: EdgeStack, upstream: RecordingUpstream, headers: dict[str, str],
        reason: str, status: int) -> None:
    upstream.reset(headers=headers, body=b"\x00scrape bytes edge cannot read")
    relayed = request(forwarding.port, "GET", "/metrics")
    assert (relayed.status, relayed.body) == (200, b"\x00scrape bytes edge cannot read")
    assert metric_value(forwarding, "edge_unfiltered_requests_total", route="prometheus", signal="metric",
                        reason=reason) == 1
    assert len(warnings(forwarding, f"prometheus request forwarded unfiltered ({reason}): ")) == 1
    refused = request(rejecting.port, "GET", "/metrics")
    assert (refused.status, refused.body) == (status, f"refused unfiltered ({reason}): {MESSAGES[reason]}\n".encode())


class BrokenRuntime:
    """A runtime whose snapshot cannot be read: filtering fails inside edge, not in the body."""

    def engine(self) -> None:
        raise OSError("snapshot segment gone")


def broken_route(reject: bool) -> OtlpRoute:
    route = OtlpRoute.__new__(OtlpRoute)
    route.signal, route.route, route.runtime, route.max_decoded = "log", "otlp_logs", BrokenRuntime(), 1 << 20
    route.metrics, route.reject = get_metrics(), reject
    return route


def internal_errors() -> float:
    get_metrics()  # registered in this process's default registry (no multiprocess directory here)
    labels = {"route": "otlp_logs", "signal": "log", "reason": "internal_error"}
    return REGISTRY.get_sample_value("edge_unfiltered_requests_total", labels) or 0.0


def test_an_internal_error_is_counted_forwarded_or_refused() -> None:
    head = request_head([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    body = encode(SMALL_LOGS, GZIP)
    before = internal_errors()
    assert asyncio.run(broken_route(False).filter_off_loop(body, head)) == body
    assert internal_errors() == before + 1
    with pytest.raises(Refused) as refused:
        asyncio.run(broken_route(True).filter_off_loop(body, head))
    assert (refused.value.reason.status, refused.value.reason.message()) == (
        500, b"refused unfiltered (internal_error): evaluating the policies failed\n")
    assert internal_errors() == before + 2
