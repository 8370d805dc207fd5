"""GET /metrics and /metrics/* over HTTP: real gunicorn workers, a real upstream on loopback.

Covers what a Prometheus server sees through the proxy: the filtered exposition from
`metrics_url` + path and query, headers forwarded (hop-by-hop dropped, identity encoding
asked for), the upstream's Content-Type kept, gzip/zstd bodies decoded, OpenMetrics, error
statuses relayed, 502/504, untouched relaying without metric policies or for bodies that
are not a text exposition, an aborted (never corrupted) response on undecodable bytes, the
byte limits with their counter, and records and match statistics in the proxy's metrics.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import json
import uuid
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import zstandard
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from edge.channels.stats_spool import StatsSpool
from edge.protocols.gzip_response import gzip_stream
from edge.protocols.prometheus import DECODE_STEP, CorruptStream, StreamDecoder
from tests.proxy_fixtures import EdgeStack, RecordingUpstream, distribution, request
from tests.test_prometheus import EXPOSITION, drop, sample_lines
from tests.waiting import wait_for

POLICIES: list[dict[str, Any]] = [
    drop("drop-options", {"datapoint_attribute": "method", "exact": "OPTIONS"}),
    drop("drop-temp", {"metric_field": "name", "exact": "process_temp_celsius"}),
    drop("drop-health", {"metric_field": "name", "starts_with": "http_latency"},
         {"datapoint_attribute": "handler", "exact": "/healthz"}),
    {"id": "drop-debug-logs", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
]
EXPECTED = [line for line in sample_lines(EXPOSITION)
            if b"OPTIONS" not in line and b"process_temp" not in line and b"/healthz" not in line]
TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    stack = EdgeStack(upstream.url, POLICIES, workers=1, upstream_timeout=1.0,
                      metrics_url=upstream.url + "/scrape")
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset(headers={"Content-Type": TEXT, "X-Upstream": "recorder"}, body=EXPOSITION)


def metric_value(port: int, name: str, **labels: str) -> float:
    text = request(port, "GET", "/_edge/metrics").body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


def test_the_scrape_is_filtered_with_path_query_and_headers(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    reply = request(edge.port, "GET", "/metrics/federate?match[]=up&x=%2F",
                    headers={"Authorization": "Bearer t0k", "Accept-Encoding": "gzip", "Connection": "keep-alive",
                             "Accept": "text/plain;version=0.0.4"})
    assert reply.status == 200
    assert reply.header("content-encoding") == "gzip" and reply.header("content-length") is None
    body = gzip.decompress(reply.body)
    assert sample_lines(body) == EXPECTED
    assert b"process_temp" not in body and b"# TYPE http_latency_seconds histogram" in body
    assert [f.name for f in text_string_to_metric_families(body.decode())] == [
        "http_requests", "rpc_duration_seconds", "http_latency_seconds", "untyped_thing"]
    assert reply.header("content-type") == TEXT and reply.header("x-upstream") == "recorder"
    [got] = upstream.received()
    assert (got.method, got.path, got.query) == ("GET", "/scrape/metrics/federate", "match[]=up&x=%2F")
    assert got.header("authorization") == "Bearer t0k" and got.header("accept") == "text/plain;version=0.0.4"
    assert got.header("accept-encoding") == "identity" and got.header("connection") != "keep-alive"


def test_metrics_route_and_prefix_only(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    assert sample_lines(request(edge.port, "GET", "/metrics").body) == EXPECTED
    assert request(edge.port, "GET", "/metricsfoo").body == EXPOSITION  # passthrough to upstream_url
    assert request(edge.port, "POST", "/metrics", b"x").body == EXPOSITION
    assert [(r.method, r.path) for r in upstream.received()] == [
        ("GET", "/scrape/metrics"), ("GET", "/metricsfoo"), ("POST", "/metrics")]


def scrape_like_prometheus(port: int, path: str = "/metrics") -> tuple[http.client.HTTPResponse, bytes]:
    """A scrape as Prometheus sends it (it always asks for gzip), read off the wire: (response, raw body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Accept": "text/plain;version=0.0.4;q=1,*/*;q=0.1",
                                           "Accept-Encoding": "gzip", "X-Prometheus-Scrape-Timeout-Seconds": "10"})
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_a_scraper_that_accepts_gzip_gets_the_filtered_scrape_gzipped(edge: EdgeStack,
                                                                     upstream: RecordingUpstream) -> None:
    upstream.reset(headers={"Content-Type": TEXT, "Vary": "Origin"}, body=EXPOSITION * 50, chunked=True)
    response, raw = scrape_like_prometheus(edge.port)
    assert response.status == 200
    assert response.getheader("Content-Encoding") == "gzip" and response.getheader("Vary") == "Origin, Accept-Encoding"
    assert response.getheader("Content-Length") is None and response.getheader("Transfer-Encoding") == "chunked"
    assert raw[:2] == b"\x1f\x8b" and len(raw) < len(EXPOSITION * 50) // 5
    text = gzip.decompress(raw)
    assert sample_lines(text) == EXPECTED * 50
    assert {f.name for f in text_string_to_metric_families(text.decode())} == {
        "http_requests", "rpc_duration_seconds", "http_latency_seconds", "untyped_thing"}
    assert upstream.received()[0].header("accept-encoding") == "identity"


@pytest.mark.parametrize("accept", [None, "identity", "gzip;q=0", "br", "*;q=0"])
def test_a_scraper_that_does_not_accept_gzip_gets_identity(edge: EdgeStack, accept: str | None) -> None:
    reply = request(edge.port, "GET", "/metrics", headers={"Accept-Encoding": accept} if accept else {})
    assert reply.header("content-encoding") is None and reply.header("vary") == "Accept-Encoding"
    assert sample_lines(reply.body) == EXPECTED


@pytest.mark.parametrize("accept", ["gzip", "deflate, gzip;q=0.5", "x-gzip", "*", "GZIP"])
def test_every_spelling_of_accepting_gzip_gets_gzip(edge: EdgeStack, accept: str) -> None:
    reply = request(edge.port, "GET", "/metrics", headers={"Accept-Encoding": accept})
    assert reply.header("content-encoding") == "gzip"
    assert sample_lines(gzip.decompress(reply.body)) == EXPECTED


def test_head_answers_the_headers_of_the_get_without_a_body(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    headers = {"Accept-Encoding": "gzip"}
    get = request(edge.port, "GET", "/metrics/job?x=1", headers=headers)
    head = request(edge.port, "HEAD", "/metrics/job?x=1", headers=headers)
    assert (head.status, head.body) == (200, b"")
    same = ("content-type", "content-encoding", "vary", "x-upstream", "content-length")
    assert [head.header(name) for name in same] == [get.header(name) for name in same]
    assert head.header("content-encoding") == "gzip" and head.header("content-length") is None
    # HEAD goes upstream as a GET (exporters such as prometheus_client answer HEAD with 501), its body unread
    assert [(r.method, r.path, r.query) for r in upstream.received()] == [("GET", "/scrape/metrics/job", "x=1")] * 2
    upstream.reset(headers={"Content-Type": TEXT}, body=EXPOSITION * 5000, chunked=True)  # ~8 MB never read
    assert request(edge.port, "HEAD", "/metrics").body == b""
    upstream.reset(headers={"Content-Type": TEXT}, body=EXPOSITION)
    assert sample_lines(request(edge.port, "GET", "/metrics").body) == EXPECTED  # the worker goes on serving


def test_head_without_metric_policies_relays_the_upstreams_headers(edge: EdgeStack,
                                                                   upstream: RecordingUpstream) -> None:
    edge.publish([p for p in POLICIES if "metric" not in p])
    try:
        head = request(edge.port, "HEAD", "/metrics")
        assert (head.status, head.body, head.header("content-length")) == (200, b"", str(len(EXPOSITION)))
        assert head.header("x-upstream") == "recorder" and upstream.received()[0].method == "GET"
    finally:
        edge.publish(POLICIES)


def test_scrapes_go_to_their_own_target_when_scrape_url_is_set(upstream: RecordingUpstream) -> None:
    stack = EdgeStack(upstream.url + "/passthrough", POLICIES, workers=1, metrics_url=upstream.url + "/otlp",
                      prometheus={"scrape_url": upstream.url + "/exporter"})
    try:
        stack.start()
        assert sample_lines(request(stack.port, "GET", "/metrics/a?b=c").body) == EXPECTED
        otlp = b'{"resourceMetrics":[]}'
        request(stack.port, "POST", "/v1/metrics", otlp, {"Content-Type": "application/json"})
        assert [(r.method, r.path, r.query) for r in upstream.received()] == [
            ("GET", "/exporter/metrics/a", "b=c"), ("POST", "/otlp/v1/metrics", "")]
    finally:
        stack.close()


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_a_compressed_upstream_body_is_decoded_and_filtered(edge: EdgeStack, upstream: RecordingUpstream,
                                                            encoding: str) -> None:
    body = gzip.compress(EXPOSITION) if encoding == "gzip" else zstandard.ZstdCompressor().compress(EXPOSITION)
    upstream.reset(headers={"Content-Type": TEXT, "Content-Encoding": encoding}, body=body, chunked=True)
    reply = request(edge.port, "GET", "/metrics")
    assert reply.status == 200 and reply.header("content-encoding") is None
    assert sample_lines(reply.body) == EXPECTED


def test_openmetrics_keeps_its_content_type_and_eof(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    body = (b"# TYPE served_bytes counter\n# UNIT served_bytes bytes\n# HELP served_bytes Bytes served.\n"
            b'served_bytes_total{method="GET"} 3.0\nserved_bytes_created{method="GET"} 1.7e+09\n'
            b'served_bytes_total{method="OPTIONS"} 1.0\nserved_bytes_created{method="OPTIONS"} 1.7e+09\n# EOF\n')
    upstream.reset(headers={"Content-Type": OPENMETRICS}, body=body)
    reply = request(edge.port, "GET", "/metrics")
    assert reply.header("content-type") == OPENMETRICS
    assert reply.body == body.replace(b'served_bytes_total{method="OPTIONS"} 1.0\n'
                                      b'served_bytes_created{method="OPTIONS"} 1.7e+09\n', b"")
    [family] = list(parse_openmetrics(reply.body.decode()))
    assert [s.name for s in family.samples] == ["served_bytes_total", "served_bytes_created"]


def test_upstream_errors_are_relayed_and_unreadable_answers_502_504(edge: EdgeStack,
                                                                    upstream: RecordingUpstream) -> None:
    upstream.reset(status=503, headers={"Content-Type": "text/plain", "Retry-After": "3"}, body=b"down for a bit")
    reply = request(edge.port, "GET", "/metrics")
    assert (reply.status, reply.body, reply.header("retry-after")) == (503, b"down for a bit", "3")
    upstream.reset(close=True)
    assert request(edge.port, "GET", "/metrics").status == 502
    upstream.reset(delay=2.0)  # the proxy's upstream_timeout is 1 s: a 504 means it gave up first
    assert request(edge.port, "GET", "/metrics").status == 504


def test_bodies_that_are_not_a_text_exposition_pass_untouched(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    proto = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited"
    upstream.reset(headers={"Content-Type": proto}, body=EXPOSITION)
    assert request(edge.port, "GET", "/metrics").body == EXPOSITION
    upstream.reset(headers={"Content-Type": TEXT, "Content-Encoding": "br"}, body=b"\x8b\x00not-brotli")
    reply = request(edge.port, "GET", "/metrics")
    assert (reply.body, reply.header("content-encoding")) == (b"\x8b\x00not-brotli", "br")


def test_an_undecodable_body_aborts_the_response_instead_of_corrupting_it(edge: EdgeStack,
                                                                          upstream: RecordingUpstream) -> None:
    upstream.reset(headers={"Content-Type": TEXT, "Content-Encoding": "gzip"},
                   body=gzip.compress(EXPOSITION)[:-40] + b"garbage" * 9, chunked=True)
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        with pytest.raises(http.client.IncompleteRead):
            response.read()
    finally:
        conn.close()


def test_without_metric_policies_the_scrape_is_relayed_untouched(edge: EdgeStack,
                                                                 upstream: RecordingUpstream) -> None:
    edge.publish([p for p in POLICIES if "metric" not in p])
    try:
        body = gzip.compress(EXPOSITION)
        upstream.reset(headers={"Content-Type": TEXT, "Content-Encoding": "gzip"}, body=body)
        reply = request(edge.port, "GET", "/metrics", headers={"Accept-Encoding": "gzip"})
        assert (reply.body, reply.header("content-encoding"), reply.header("content-length")) == (
            body, "gzip", str(len(body)))
        assert upstream.received()[0].header("accept-encoding") == "gzip"
    finally:
        edge.publish(POLICIES)


def test_records_and_match_statistics_are_counted(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    # Policy ids no other test uses: hits that earlier scrapes left in the worker cannot count here.
    suffix = f"-{uuid.uuid4().hex[:8]}"
    edge.publish([{**p, "id": p["id"] + suffix} for p in POLICIES])
    try:
        _count_records_and_hits(edge, suffix)
    finally:
        edge.publish(POLICIES)


def _count_records_and_hits(edge: EdgeStack, suffix: str) -> None:
    spool = StatsSpool(edge.paths.stats_spool)
    evaluated = metric_value(edge.port, "edge_records_evaluated_total", signal="metric")
    dropped = metric_value(edge.port, "edge_records_dropped_total", signal="metric")
    for _ in range(2):
        assert request(edge.port, "GET", "/metrics").status == 200
    samples = len(sample_lines(EXPOSITION))
    assert metric_value(edge.port, "edge_records_evaluated_total", signal="metric") - evaluated == 2 * samples
    assert metric_value(edge.port, "edge_records_dropped_total", signal="metric") - dropped == 2 * (
        samples - len(EXPECTED))
    hits: dict[str, int] = {}

    def collected() -> bool:
        for pid, counts in spool.collect().items():
            if pid.endswith(suffix):
                hits[pid.removesuffix(suffix)] = hits.get(pid.removesuffix(suffix), 0) + counts.hits
        return hits.get("drop-health", 0) >= 10

    assert wait_for(collected, 20, 0.1), hits
    assert hits == {"drop-options": 2, "drop-temp": 2, "drop-health": 10}


def test_byte_limits_end_the_scrape_at_a_line_boundary_and_are_counted() -> None:
    upstream = RecordingUpstream().start()
    body = EXPOSITION * 40
    upstream.reset(headers={"Content-Type": TEXT}, body=body, chunked=True)
    stack = EdgeStack(upstream.url, POLICIES, workers=1, upstream_timeout=1.0,
                      prometheus={"max_input_bytes_per_scrape": 5000, "max_output_bytes_per_scrape": 3000})
    try:
        stack.start()
        before = metric_value(stack.port, "edge_prometheus_scrapes_truncated_total", limit="output")
        reply = request(stack.port, "GET", "/metrics")
        assert reply.status == 200 and 2900 < len(reply.body) <= 3000 and reply.body.endswith(b"\n")
        assert sample_lines(reply.body) == (EXPECTED * 40)[:len(sample_lines(reply.body))]
        assert metric_value(stack.port, "edge_prometheus_scrapes_truncated_total", limit="output") - before == 1
        stack.publish([drop("all", {"metric_field": "name", "regex": "^h"})])
        before = metric_value(stack.port, "edge_prometheus_scrapes_truncated_total", limit="input")
        reply = request(stack.port, "GET", "/metrics")
        kept = [line for line in sample_lines(body[:body.rindex(b"\n", 0, 5000) + 1]) if not line.startswith(b"h")]
        assert sample_lines(reply.body) == kept
        assert metric_value(stack.port, "edge_prometheus_scrapes_truncated_total", limit="input") - before == 1
        assert "max_input_bytes_per_scrape reached" in stack.log()
        upstream.stop()
        assert request(stack.port, "GET", "/metrics").status == 502  # nobody listens any more
    finally:
        stack.close()
        upstream.stop()


def test_a_limit_inside_a_long_line_is_logged_as_truncated_and_counted() -> None:
    """The input limit falls inside a 1 MB line already partly forwarded: the response is aborted,
    and the scrape is still reported as truncated (log line and counter), like at a line boundary."""
    upstream = RecordingUpstream().start()
    lines = EXPOSITION * (100_000 // len(EXPOSITION))  # the proxy reads the upstream in pieces of 256 KiB or more
    body = lines + b'long{v="' + b"x" * 1_000_000 + b'"} 1\n' + EXPOSITION
    upstream.reset(headers={"Content-Type": TEXT}, body=body, chunked=True)
    stack = EdgeStack(upstream.url, POLICIES, workers=1,
                      prometheus={"max_input_bytes_per_scrape": len(lines) + 800_000})
    try:
        stack.start()
        conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            with pytest.raises(http.client.IncompleteRead):
                response.read()
        finally:
            conn.close()
        assert wait_for(lambda: "aborting the scrape" in stack.log(), 10, 0.05)
        assert (f"scrape of {upstream.url}/metrics truncated: prometheus.max_input_bytes_per_scrape reached"
                in stack.log())
        assert metric_value(stack.port, "edge_prometheus_scrapes_truncated_total", limit="input") == 1
    finally:
        stack.close()
        upstream.stop()


def test_edge_prometheus_serves_the_scrape_proxy_and_passes_otlp_through(tmp_path: Path,
                                                                          upstream: RecordingUpstream) -> None:
    with distribution("edge-prometheus", tmp_path, upstream.url, POLICIES) as port:
        assert sample_lines(request(port, "GET", "/metrics").body) == EXPECTED
        otlp = json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "process_temp_celsius",
                                                                               "gauge": {}}]}]}]}).encode()
        assert request(port, "POST", "/v1/metrics", otlp, {"Content-Type": "application/json"}).status == 200
        scrape, passed = upstream.received()
        assert scrape.path == "/metrics" and (passed.path, passed.body) == ("/v1/metrics", otlp)


# ── the streaming decoders ──

DATA = EXPOSITION * 300


def decode_all(codec: str, body: bytes, piece: int) -> list[bytes]:
    decoder = StreamDecoder(codec)
    out = [part for i in range(0, len(body), piece) for part in decoder.decode(body[i:i + piece])]
    decoder.finish()
    return out


def test_gzip_members_and_zstd_frames_decode_in_any_pieces() -> None:
    gz = gzip.compress(DATA[:999]) + gzip.compress(DATA[999:]) + b"\0\0"
    zs = zstandard.ZstdCompressor().compress(DATA[:999]) + zstandard.ZstdCompressor().compress(DATA[999:])
    for piece in (1, 7, 4096, len(gz)):
        assert b"".join(decode_all("gzip", gz, piece)) == DATA
        assert b"".join(decode_all("zstd", zs, piece)) == DATA
    assert decode_all("", DATA, 5000)[0] == DATA[:5000]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_decompression_bomb_inflates_one_bounded_step_at_a_time(codec: str) -> None:
    data = b"0 0\n" * (16 << 20)  # 64 MB of lines in a few hundred KB
    bomb = gzip.compress(data) if codec == "gzip" else zstandard.ZstdCompressor().compress(data)
    del data
    steps = StreamDecoder(codec).decode(bomb)
    assert all(len(next(steps)) <= DECODE_STEP for _ in range(20))  # consumed lazily, never all at once


def test_a_zstd_frame_asking_for_a_huge_window_is_refused() -> None:
    params = zstandard.ZstdCompressionParameters.from_level(19, window_log=27)
    body = zstandard.ZstdCompressor(compression_params=params).compress(DATA * 40)
    with pytest.raises(CorruptStream):
        decode_all("zstd", body, 4096)


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_cut_or_corrupt_bodies_are_refused(codec: str) -> None:
    body = gzip.compress(DATA) if codec == "gzip" else zstandard.ZstdCompressor().compress(DATA)
    with pytest.raises(CorruptStream):
        decode_all(codec, body[:-30], 1000)
    with pytest.raises(CorruptStream):
        decode_all(codec, body[:100] + b"\xff" * 200 + body[300:], 1000)


def test_the_gzip_response_is_compressed_as_it_is_produced_not_held_back() -> None:
    """Output comes out while the input is still being produced: memory is bounded by zlib, not the scrape."""
    pieces = [EXPOSITION * 2000 for _ in range(4)]  # ~1 MB each, mostly incompressible repetition aside
    produced: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            produced.append(len(piece))
            yield piece

    async def consume() -> list[tuple[int, bytes]]:
        return [(len(produced), out) async for out in gzip_stream(body())]

    out = asyncio.run(consume())
    # each piece is compressed and decodable by the client as soon as it is produced, before the next one
    assert [produced_so_far for produced_so_far, _ in out] == [1, 2, 3, 4, 4]
    client = zlib.decompressobj(31)
    for i, (_, data) in enumerate(out[:-1]):
        assert client.decompress(data) == pieces[i]
    assert gzip.decompress(b"".join(data for _, data in out)) == b"".join(pieces)
