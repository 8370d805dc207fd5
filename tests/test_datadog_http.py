"""The Datadog routes over HTTP: real gunicorn workers, real shared memory, a real upstream on loopback.

Covers `POST /api/v2/logs` and `POST /api/v2/series` as an agent uses them: forwarding to
`logs_url` / `metrics_url` with path and query, byte-exact kept records, encodings, the
API key passing through (and never reaching the log), everything dropped, fail-open on
malformed bodies, the error statuses, the proxy metrics, and the `edge-datadog` command.
"""

from __future__ import annotations

import gzip
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
import zstandard
from prometheus_client.parser import text_string_to_metric_families

from edge.proto.datadog.agentpayload.agent_payload_pb2 import MetricPayload
from tests.proxy_fixtures import EdgeStack, RecordingUpstream, Reply, distribution, request
from tests.waiting import wait_for

POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "name": "Drop debug logs",
     "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"}},
    {"id": "redact-secret", "name": "Redact secrets",
     "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
             "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+", "replacement": "<redacted>"}]}}},
    {"id": "drop-internal", "name": "Drop internal metrics",
     "metric": {"match": [{"metric_field": "name", "starts_with": "internal."}], "keep": False}},
    {"id": "drop-dev-gauges", "name": "Drop gauges of dev hosts",
     "metric": {"match": [{"datapoint_attribute": "env", "exact": "dev"}, {"metric_type": "METRIC_TYPE_GAUGE"}],
                "keep": False}},
]
MAX_BODY = 100_000
NOT_DATADOG_LINE = "not a Datadog log payload"
JSON_CT = {"Content-Type": "application/json"}

KEEP = b'{ "message" : "order 17 confirmed", "status":"info","service":"checkout", "n" : 1.50 }'
KEEP2 = b'{"message":"caf\\u00e9 \xc3\xa9","status":"warn","ddtags":"env:prod,team:core"}'
DEBUG = b'{"message":"cache miss","status":"debug"}'
SECRET = b'{"message":"token secret-abc123 used","status":"info","hostname":"web-1"}'
SERIES_OK = b'{ "metric":"app.requests","type":1,"points":[{"timestamp":1700000000,"value":3.0}],"tags":["env:prod"]}'
SERIES_GONE = b'{"metric":"internal.queue","type":3,"points":[{"timestamp":1700000000,"value":1}]}'


def logs(*records: bytes) -> bytes:
    return b"[\n  " + b",\n  ".join(records) + b"\n]"


def series(*items: bytes) -> bytes:
    return b'{"series": [' + b" , ".join(items) + b"]}"


# ── fixtures ──


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    stack = EdgeStack(upstream.url, POLICIES, workers=1, upstream_timeout=1.0, max_body_size=MAX_BODY,
                      logs_url=upstream.url + "/logs-intake", metrics_url=upstream.url + "/metrics-intake",
                      log_level="debug")
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset()


def post(edge: EdgeStack, path: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    return request(edge.port, "POST", path, body, {**JSON_CT, **(headers or {})})


def metric_value(edge: EdgeStack, name: str, **labels: str) -> float:
    text = request(edge.port, "GET", "/_edge/metrics").body.decode()
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()))


# ── logs ──


def test_kept_logs_go_to_logs_url_with_path_query_and_their_original_bytes(edge: EdgeStack,
                                                                           upstream: RecordingUpstream) -> None:
    reply = post(edge, "/api/v2/logs?ddsource=python&dd-request-id=7", logs(KEEP, DEBUG, KEEP2))
    assert reply.status == 200 and reply.header("x-upstream") == "recorder"
    [got] = upstream.received()
    assert (got.method, got.path, got.query) == ("POST", "/logs-intake/api/v2/logs", "ddsource=python&dd-request-id=7")
    assert got.body == b"[" + KEEP + b"," + KEEP2 + b"]"
    assert int(got.header("content-length")) == len(got.body)


def test_nothing_dropped_is_forwarded_byte_for_byte(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    body = logs(KEEP, KEEP2)
    assert post(edge, "/api/v2/logs", body).status == 200
    assert upstream.received()[0].body == body


def test_transformed_records_are_reencoded_and_the_rest_kept_as_bytes(edge: EdgeStack,
                                                                      upstream: RecordingUpstream) -> None:
    assert post(edge, "/api/v2/logs", logs(KEEP, SECRET, DEBUG)).status == 200
    body = upstream.received()[0].body
    prefix = b"[" + KEEP + b","
    assert body.startswith(prefix)
    assert msgspec.json.decode(b"[" + body[len(prefix):]) == [
        {"message": "token <redacted> used", "status": "info", "hostname": "web-1"}]


def test_everything_dropped_sends_empty_logs_and_answers_series_locally(edge: EdgeStack,
                                                                        upstream: RecordingUpstream) -> None:
    """docs/configuration.md "Routes": all logs dropped: `[]` upstream, answer relayed; all series dropped: 200 `{}`."""
    reply = post(edge, "/api/v2/logs", logs(DEBUG, DEBUG))
    assert reply.status == 200
    [got] = upstream.received()
    assert (got.path.endswith("/api/v2/logs"), got.body) == (True, b"[]")
    reply = post(edge, "/api/v2/series", series(SERIES_GONE))
    assert (reply.status, reply.body) == (200, b"{}")
    assert len(upstream.received()) == 1


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _unzstd(data: bytes) -> bytes:
    return zstandard.ZstdDecompressor().decompressobj().decompress(data)


@pytest.mark.parametrize(("encoding", "compress", "decompress"), [
    ("zstd", _zstd, _unzstd),
    ("gzip", gzip.compress, gzip.decompress),
    ("x-gzip", gzip.compress, gzip.decompress),
])
def test_compressed_bodies_are_decoded_filtered_and_reencoded(edge: EdgeStack, upstream: RecordingUpstream,
                                                              encoding: str, compress: Any, decompress: Any) -> None:
    headers = {"Content-Encoding": encoding}
    assert post(edge, "/api/v2/logs", compress(logs(KEEP, DEBUG, KEEP2)), headers).status == 200
    unchanged = compress(logs(KEEP, KEEP2))
    assert post(edge, "/api/v2/logs", unchanged, headers).status == 200
    filtered, untouched = upstream.received()
    assert filtered.header("content-encoding") == encoding
    assert decompress(filtered.body) == b"[" + KEEP + b"," + KEEP2 + b"]"
    assert untouched.body == unchanged  # nothing changed: the original compressed bytes


def test_api_key_and_headers_pass_through_and_are_never_logged(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    secret = f"dd-key-{uuid.uuid4().hex}"
    headers = {"DD-API-KEY": secret, "DD-EVP-ORIGIN": "agent", "User-Agent": "datadog-agent/7.50.0"}
    logged = NOT_DATADOG_LINE  # the debug line the second request writes
    before = edge.log_path.read_text(errors="replace").count(logged)
    assert post(edge, "/api/v2/logs", logs(KEEP, DEBUG), headers).status == 200
    assert post(edge, "/api/v2/logs", b"not json at all", headers).status == 200  # logged at debug
    assert post(edge, "/api/v2/series", series(SERIES_OK), headers).status == 200
    for got in upstream.received():
        assert got.header("dd-api-key") == secret
        assert (got.header("dd-evp-origin"), got.header("user-agent")) == ("agent", "datadog-agent/7.50.0")
    # the worker's lines reach the file on their own time: wait for the one this test caused
    assert wait_for(lambda: edge.log_path.read_text(errors="replace").count(logged) > before), (
        "debug logging must be on and captured for this test to mean anything")
    assert secret not in edge.log_path.read_text(errors="replace")


@pytest.mark.parametrize("body", [
    b"this is not json",
    b'{"message": "an object, not an array", "status": "debug"}',
    b'[{"message": "x", "status": "debug"}, "a string", 3]',
    b'[{"message": "truncated", "status": "debug"}',
])
def test_malformed_logs_are_forwarded_unchanged(edge: EdgeStack, upstream: RecordingUpstream, body: bytes) -> None:
    assert post(edge, "/api/v2/logs", body).status == 200
    assert upstream.received()[0].body == body


def test_undecodable_compression_is_forwarded_unchanged(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    for headers, body in [({"Content-Encoding": "zstd"}, b"\x28\xb5\x2f\xfd garbage"),
                          ({"Content-Encoding": "br"}, b"brotli bytes")]:
        assert post(edge, "/api/v2/logs", body, headers).status == 200
        got = upstream.received()[-1]
        assert (got.body, got.header("content-encoding")) == (body, headers["Content-Encoding"])


# ── series ──


def test_series_are_filtered_and_sent_to_metrics_url(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    assert post(edge, "/api/v2/series?api_key_in_query=no", series(SERIES_GONE, SERIES_OK)).status == 200
    unchanged = series(SERIES_OK)
    assert post(edge, "/api/v2/series", unchanged).status == 200
    filtered, untouched = upstream.received()
    assert (filtered.path, filtered.query) == ("/metrics-intake/api/v2/series", "api_key_in_query=no")
    assert filtered.body == b'{"series":[' + SERIES_OK + b"]}"
    assert untouched.body == unchanged


@pytest.mark.parametrize(("body", "headers"), [
    (b'[{"metric": "internal.a"}]', JSON_CT),
    (b'{"series": "internal.a"}', JSON_CT),
    (b"\x0a\x0binternal.a", {"Content-Type": "application/x-protobuf"}),  # a protobuf series cut short
    (b"\x0a\x03\x12\x01", {"Content-Type": "application/x-protobuf"}),  # a series whose name is cut short
    (b"\xff\xff\xff\xff", {"Content-Type": "application/x-protobuf"}),  # no protobuf at all
])
def test_malformed_series_are_forwarded_unchanged(edge: EdgeStack, upstream: RecordingUpstream,
                                                              body: bytes, headers: dict[str, str]) -> None:
    assert post(edge, "/api/v2/series", body, headers).status == 200
    assert upstream.received()[0].body == body


# ── protobuf series (the agent's MetricPayload) ──

PROTOBUF_CT = {"Content-Type": "application/x-protobuf"}
# MetricSeries.metadata (field 9: Metadata{origin: Origin{origin_product: 10}}), which edge does not declare
METADATA = b"\x4a\x04\x0a\x02\x20\x0a"


def proto_series(metric: str, kind: int, tags: list[str], metadata: bytes = b"") -> MetricPayload.MetricSeries:
    """A series as the agent writes it; `metadata`: raw fields the generated class does not know."""
    series = MetricPayload.MetricSeries(
        metric=metric, type=kind, tags=tags, unit="request", source_type_name="System", interval=10,
        resources=[MetricPayload.Resource(type="host", name="web-1")],
        points=[MetricPayload.MetricPoint(value=3.5, timestamp=1_700_000_000),
                MetricPayload.MetricPoint(value=4.0, timestamp=1_700_000_010)])
    series.MergeFromString(metadata)
    return series


def payload(*series: MetricPayload.MetricSeries) -> bytes:
    return MetricPayload(series=series).SerializeToString()


KEPT_COUNT = proto_series("app.requests", MetricPayload.COUNT, ["env:dev", "service:web"], METADATA)
KEPT_GAUGE = proto_series("app.queue", MetricPayload.GAUGE, ["env:prod"])
DEV_GAUGE = proto_series("app.queue", MetricPayload.GAUGE, ["service:web", "env:dev"], METADATA)
INTERNAL = proto_series("internal.gc", MetricPayload.RATE, ["env:prod"])


@pytest.mark.parametrize(("encoding", "compress", "decompress"), [
    ("deflate", zlib.compress, zlib.decompress),  # the agent's default
    ("gzip", gzip.compress, gzip.decompress),
    ("zstd", _zstd, _unzstd),
])
def test_protobuf_series_are_filtered_by_name_tags_and_type_and_reencoded(
        edge: EdgeStack, upstream: RecordingUpstream, encoding: str, compress: Any, decompress: Any) -> None:
    headers = {**PROTOBUF_CT, "Content-Encoding": encoding, "DD-API-KEY": "k"}
    body = compress(payload(INTERNAL, KEPT_COUNT, DEV_GAUGE, KEPT_GAUGE))
    reply = request(edge.port, "POST", "/api/v2/series?x=1", body, headers)
    assert reply.status == 200 and reply.header("x-upstream") == "recorder"
    [got] = upstream.received()
    assert (got.path, got.query, got.header("content-encoding")) == ("/metrics-intake/api/v2/series", "x=1", encoding)
    assert got.header("content-type") == "application/x-protobuf" and got.header("dd-api-key") == "k"
    forwarded = decompress(got.body)
    assert forwarded == payload(KEPT_COUNT, KEPT_GAUGE)  # points, interval, metadata: all as they came
    assert METADATA in forwarded
    assert [s.metric for s in MetricPayload.FromString(forwarded).series] == ["app.requests", "app.queue"]


def test_protobuf_series_nothing_dropped_are_forwarded_byte_for_byte(edge: EdgeStack,
                                                                     upstream: RecordingUpstream) -> None:
    body = zlib.compress(payload(KEPT_COUNT, KEPT_GAUGE))
    headers = {**PROTOBUF_CT, "Content-Encoding": "deflate"}
    assert request(edge.port, "POST", "/api/v2/series", body, headers).status == 200
    assert upstream.received()[0].body == body


def test_protobuf_series_all_dropped_are_answered_here(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    reply = request(edge.port, "POST", "/api/v2/series", payload(INTERNAL, DEV_GAUGE), PROTOBUF_CT)
    assert (reply.status, reply.body, reply.header("content-type")) == (200, b"", "application/x-protobuf")
    assert upstream.received() == []


def test_protobuf_series_are_counted_like_json_ones(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    before = (metric_value(edge, "edge_records_evaluated_total", signal="metric"),
              metric_value(edge, "edge_records_dropped_total", signal="metric"))
    request(edge.port, "POST", "/api/v2/series", payload(INTERNAL, KEPT_COUNT, DEV_GAUGE), PROTOBUF_CT)
    after = (metric_value(edge, "edge_records_evaluated_total", signal="metric"),
             metric_value(edge, "edge_records_dropped_total", signal="metric"))
    assert (after[0] - before[0], after[1] - before[1]) == (3, 2)


def test_protobuf_logs_are_not_datadog_logs_and_pass_unfiltered(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    body = payload(INTERNAL)
    assert request(edge.port, "POST", "/api/v2/logs", body, PROTOBUF_CT).status == 200
    assert upstream.received()[0].body == body


# ── statuses and metrics ──


def test_upstream_answer_is_relayed(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    upstream.reset(status=202, body=b"{}", headers={"Content-Type": "application/json", "X-Intake": "dd"})
    reply = post(edge, "/api/v2/logs", logs(KEEP, DEBUG))
    assert (reply.status, reply.body, reply.header("x-intake")) == (202, b"{}", "dd")


def test_body_over_max_body_size_is_413(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    record = b'{"message":"' + b"x" * 1000 + b'","status":"info"}'
    reply = post(edge, "/api/v2/logs", logs(*[record] * (MAX_BODY // 1000 + 1)))
    assert reply.status == 413 and b"too large" in reply.body
    assert post(edge, "/api/v2/series", b" " * (MAX_BODY + 1)).status == 413
    assert upstream.received() == []


def test_upstream_failures_are_502_and_504(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    upstream.reset(close=True)
    reply = post(edge, "/api/v2/logs", logs(KEEP))
    assert reply.status == 502 and orjson.loads(reply.body) == {"error": "upstream unreachable"}
    upstream.reset(delay=1.6)
    reply = post(edge, "/api/v2/series", series(SERIES_OK))
    assert reply.status == 504 and orjson.loads(reply.body) == {"error": "upstream timed out"}


def test_records_are_counted_in_the_proxy_metrics(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    def counts() -> dict[tuple[str, str], float]:
        return {(name, signal): metric_value(edge, f"edge_records_{name}_total", signal=signal)
                for name in ("evaluated", "dropped") for signal in ("log", "metric")}

    before = counts()
    post(edge, "/api/v2/logs", logs(KEEP, DEBUG, DEBUG))
    post(edge, "/api/v2/series", series(SERIES_OK, SERIES_GONE))
    after = counts()
    assert {key: after[key] - before[key] for key in before} == {
        ("evaluated", "log"): 3, ("dropped", "log"): 2, ("evaluated", "metric"): 2, ("dropped", "metric"): 1}
    text = request(edge.port, "GET", "/_edge/metrics").body.decode()
    assert 'route="datadog_logs"' in text and 'route="datadog_series"' in text


def test_other_methods_pass_through(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    assert request(edge.port, "GET", "/api/v2/logs?x=1").status == 200
    [got] = upstream.received()
    assert (got.method, got.path, got.query) == ("GET", "/api/v2/logs", "x=1")


# ── the edge-datadog command ──


def test_edge_datadog_serves_datadog_routes_and_passes_otlp_through(tmp_path: Path,
                                                                    upstream: RecordingUpstream) -> None:
    with distribution("edge-datadog", tmp_path, upstream.url, POLICIES) as port:
        assert request(port, "POST", "/api/v2/logs", logs(KEEP, DEBUG), JSON_CT).status == 200
        otlp = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"severityText": "debug"}]}]}]})
        assert request(port, "POST", "/v1/logs", otlp, JSON_CT).status == 200
        dd, passed = upstream.received()
        assert (dd.path, dd.body) == ("/api/v2/logs", b"[" + KEEP + b"]")
        assert (passed.path, passed.body) == ("/v1/logs", otlp)
