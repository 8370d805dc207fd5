"""The HTTP workers end to end: real gunicorn workers, real shared memory, a real upstream.

Covers the routes and statuses of docs/configuration.md (forwarded, all dropped, 413, 502, 504, relayed
upstream errors), content encodings, JSON/protobuf parity, header and path handling,
passthrough, the admin endpoints, metrics summed over workers, live policy swaps, the
instance-wide rate limit and match statistics reaching the spool.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import orjson
import pytest
import zstandard
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from edge.channels.stats_spool import StatsSpool
from tests.proxy_fixtures import EdgeStack, RecordingUpstream, free_port, request
from tests.waiting import wait_for

BASE_POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "name": "Drop debug logs",
     "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "redact-secret", "name": "Redact secrets",
     "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
             "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+", "replacement": "<redacted>"}]}}},
    {"id": "drop-internal", "name": "Drop internal metrics",
     "metric": {"match": [{"metric_field": "name", "starts_with": "internal."}], "keep": False}},
]
MAX_BODY = 200_000
MAX_DECODED = 300_000
JSON_CT = {"Content-Type": "application/json"}
PB_CT = {"Content-Type": "application/x-protobuf"}


# ── OTLP documents ──


def S(text: str) -> dict[str, str]:
    return {"stringValue": text}


def logs_doc(*records: tuple[str, str]) -> dict[str, Any]:
    return {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": S("checkout")}]},
                              "scopeLogs": [{"scope": {"name": "test"}, "logRecords": [
                                  {"severityText": sev, "body": S(body)} for sev, body in records]}]}]}


def metrics_doc(*names: str) -> dict[str, Any]:
    return {"resourceMetrics": [{"resource": {}, "scopeMetrics": [{"scope": {"name": "test"}, "metrics": [
        {"name": name, "gauge": {"dataPoints": [{"asDouble": 1.0}]}} for name in names]}]}]}


def log_bodies(data: bytes, protobuf: bool = False) -> list[str]:
    if protobuf:
        msg = ExportLogsServiceRequest.FromString(data)
        return [r.body.string_value for rl in msg.resource_logs for sl in rl.scope_logs for r in sl.log_records]
    doc = orjson.loads(data)
    return [r["body"]["stringValue"] for rl in doc.get("resourceLogs", []) for sl in rl.get("scopeLogs", [])
            for r in sl.get("logRecords", [])]


def metric_names(data: bytes, protobuf: bool = False) -> list[str]:
    if protobuf:
        msg = ExportMetricsServiceRequest.FromString(data)
        return [m.name for rm in msg.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]
    doc = orjson.loads(data)
    return [m["name"] for rm in doc.get("resourceMetrics", []) for sm in rm.get("scopeMetrics", [])
            for m in sm.get("metrics", [])]


def to_protobuf(doc: dict[str, Any], message: Any) -> bytes:
    return json_format.ParseDict(doc, message()).SerializeToString()


MIXED = logs_doc(("DEBUG", "cache miss"), ("INFO", "order 17 confirmed"), ("WARN", "token secret-abc123 used"))
MIXED_KEPT = ["order 17 confirmed", "token <redacted> used"]


# ── fixtures ──


def _stack(upstream_url: str, **config: Any) -> Iterator[EdgeStack]:
    stack = EdgeStack(upstream_url, BASE_POLICIES, **config)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    yield from _stack(upstream.url, upstream_timeout=1.0, max_body_size=MAX_BODY, max_decoded_bytes=MAX_DECODED)


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset()


def post(edge: EdgeStack, path: str, body: bytes, headers: dict[str, str] | None = None, **kw: Any):
    return request(edge.port, "POST", path, body, {**JSON_CT, **(headers or {})}, **kw)


def in_parallel(calls: list[Any], threads: int = 8) -> list[Any]:
    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(lambda call: call(), calls))


def metric_value(edge: EdgeStack, name: str, **labels: str) -> float:
    text = request(edge.port, "GET", "/_edge/metrics").body.decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


# ── admin ──


def test_health_is_answered_locally(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    reply = request(edge.port, "GET", "/_health")
    assert (reply.status, orjson.loads(reply.body)) == (200, {"status": "ok"})
    head = request(edge.port, "HEAD", "/_health")
    assert (head.status, head.body) == (200, b"")
    assert upstream.received() == []


def test_policies_endpoint(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    for path in ("/_edge/policies", "/_edge/policies?format=json"):
        reply = request(edge.port, "GET", path)
        assert reply.status == 200 and reply.header("content-type") == "application/json"
        doc = orjson.loads(reply.body)
        assert doc["version"] and doc["generation"] >= 1
        by_id = {p["id"]: p for p in doc["policies"]}
        assert by_id["drop-debug"] == {"id": "drop-debug", "name": "Drop debug logs", "signal": "log",
                                       "enabled": True, "in_force": True, "errors": []}
        assert by_id["drop-internal"]["signal"] == "metric"
    assert upstream.received() == []


# ── OTLP statuses ──


def test_filtered_batch_is_forwarded_and_the_answer_relayed(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    reply = post(edge, "/v1/logs", orjson.dumps(MIXED))
    assert reply.status == 200
    assert reply.body == b'{"partialSuccess":{}}' and reply.header("x-upstream") == "recorder"
    [got] = upstream.received()
    assert (got.method, got.path) == ("POST", "/v1/logs")
    assert log_bodies(got.body) == MIXED_KEPT
    assert int(got.header("content-length")) == len(got.body)


def test_chunked_upstream_answers_are_relayed(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    answer = b'{"partialSuccess":{"rejectedLogRecords":"0","errorMessage":"' + b"e" * 5000 + b'"}}'
    upstream.reset(body=answer, chunked=True, headers={"Content-Type": "application/json"})
    for _ in range(3):  # the pooled connection stays usable after a chunked answer
        reply = post(edge, "/v1/logs", orjson.dumps(MIXED), {"Expect": "100-continue"})
        assert (reply.status, reply.body) == (200, answer)
        assert reply.header("content-length") == str(len(answer)) and reply.header("transfer-encoding") is None
    assert upstream.received()[0].header("expect") is None


def test_unchanged_batch_is_forwarded_byte_for_byte(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    body = json.dumps(logs_doc(("INFO", "a"), ("WARN", "b")), indent=2).encode()
    assert post(edge, "/v1/logs", body).status == 200
    assert upstream.received()[0].body == body


def test_all_dropped_is_answered_without_upstream(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    doc = logs_doc(("DEBUG", "a"), ("DEBUG", "b"))
    reply = post(edge, "/v1/logs", orjson.dumps(doc))
    assert (reply.status, reply.body, reply.header("content-type")) == (200, b"{}", "application/json")
    reply = post(edge, "/v1/logs", to_protobuf(doc, ExportLogsServiceRequest), PB_CT)
    assert (reply.status, reply.body, reply.header("content-type")) == (200, b"", "application/x-protobuf")
    reply = post(edge, "/v1/metrics", orjson.dumps(metrics_doc("internal.a", "internal.b")))
    assert (reply.status, reply.body) == (200, b"{}")
    assert upstream.received() == []


def test_body_over_max_body_size_is_413(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    big = b"x" * (MAX_BODY + 1)
    reply = post(edge, "/v1/logs", big)
    assert reply.status == 413 and b"too large" in reply.body
    chunks = [b"y" * 10_000] * (MAX_BODY // 10_000 + 1)
    assert post(edge, "/v1/logs", iter(chunks), chunked=True).status == 413
    assert upstream.received() == []
    small = post(edge, "/v1/logs", orjson.dumps(MIXED))  # the connection pool is still fine
    assert small.status == 200


@pytest.mark.parametrize("status", [429, 503])
def test_upstream_errors_are_relayed_with_retry_after(edge: EdgeStack, upstream: RecordingUpstream,
                                                      status: int) -> None:
    upstream.reset(status=status, headers={"Retry-After": "7", "Content-Type": "application/json"},
                   body=b'{"error":"slow down"}')
    for path in ("/v1/logs", "/some/other/path"):
        reply = post(edge, path, orjson.dumps(MIXED))
        assert (reply.status, reply.header("retry-after"), reply.body) == (status, "7", b'{"error":"slow down"}')


def test_upstream_too_slow_is_504(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    upstream.reset(delay=3.0)  # the proxy's upstream_timeout is 1 s: a 504 means it gave up first
    reply = post(edge, "/v1/logs", orjson.dumps(MIXED))
    assert reply.status == 504 and orjson.loads(reply.body) == {"error": "upstream timed out"}
    assert request(edge.port, "GET", "/slow").status == 504


def test_upstream_closing_the_connection_is_502(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    upstream.reset(close=True)
    reply = post(edge, "/v1/logs", orjson.dumps(MIXED))
    assert reply.status == 502 and orjson.loads(reply.body) == {"error": "upstream unreachable"}
    upstream.reset()
    assert post(edge, "/v1/logs", orjson.dumps(MIXED)).status == 200


def test_unreachable_upstream_is_502() -> None:
    for stack in _stack(f"http://127.0.0.1:{free_port()}", upstream_timeout=2.0):
        reply = post(stack, "/v1/logs", orjson.dumps(MIXED))
        assert reply.status == 502 and orjson.loads(reply.body) == {"error": "upstream unreachable"}
        assert request(stack.port, "GET", "/anything").status == 502
        assert post(stack, "/v1/logs", orjson.dumps(logs_doc(("DEBUG", "x")))).status == 200  # all dropped
        assert request(stack.port, "GET", "/_health").status == 200
        assert metric_value(stack, "edge_upstream_errors_total", kind="connect") == 2


# ── encodings and formats ──


def _zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize(("encoding", "compress", "decompress"), [
    ("gzip", gzip.compress, gzip.decompress),
    ("X-GZIP", gzip.compress, gzip.decompress),
    ("deflate", zlib.compress, zlib.decompress),
    ("zstd", _zstd, lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d)),
    ("ZSTD", _zstd, lambda d: zstandard.ZstdDecompressor().decompressobj().decompress(d)),
])
def test_compressed_round_trip(edge: EdgeStack, upstream: RecordingUpstream, encoding: str, compress: Any,
                               decompress: Any) -> None:
    reply = post(edge, "/v1/logs", compress(orjson.dumps(MIXED)), {"Content-Encoding": encoding})
    assert reply.status == 200
    [got] = upstream.received()
    assert got.header("content-encoding") == encoding
    assert log_bodies(decompress(got.body)) == MIXED_KEPT
    # unchanged: the original compressed bytes go on untouched
    upstream.reset()
    body = compress(orjson.dumps(logs_doc(("INFO", "fine"))))
    assert post(edge, "/v1/logs", body, {"Content-Encoding": encoding}).status == 200
    assert upstream.received()[0].body == body


def test_unsupported_or_oversized_encodings_are_forwarded_raw(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    deflated = zlib.compress(orjson.dumps(MIXED))
    raw_deflate = zlib.compressobj(wbits=-15)
    raw_deflated = raw_deflate.compress(orjson.dumps(MIXED)) + raw_deflate.flush()  # not HTTP's zlib format
    bomb = gzip.compress(orjson.dumps(logs_doc(*[("DEBUG", "z" * 1000)] * (MAX_DECODED // 1000 + 10))))
    assert len(bomb) < MAX_BODY
    for body, encoding in ((raw_deflated, "deflate"), (deflated, "br"), (bomb, "gzip"), (b"\x1f\x8bgarbage", "gzip"),
                           (b"(\xb5/\xfdgarbage", "zstd")):
        upstream.reset()
        assert post(edge, "/v1/logs", body, {"Content-Encoding": encoding}).status == 200
        [got] = upstream.received()
        assert (got.body, got.header("content-encoding")) == (body, encoding)


def test_json_and_protobuf_give_the_same_decisions(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    logs = logs_doc(("DEBUG", "d1"), ("INFO", "i1"), ("ERROR", "key secret-x9 leaked"), ("DEBUG", "d2"), ("INFO", "i2"))
    metrics = metrics_doc("internal.queue", "http.requests", "internal.gc", "cpu.usage")
    post(edge, "/v1/logs", orjson.dumps(logs))
    post(edge, "/v1/logs", to_protobuf(logs, ExportLogsServiceRequest), PB_CT)
    post(edge, "/v1/metrics", orjson.dumps(metrics))
    post(edge, "/v1/metrics", to_protobuf(metrics, ExportMetricsServiceRequest), PB_CT)
    log_json, log_pb, metric_json, metric_pb = upstream.received()
    assert log_pb.header("content-type") == "application/x-protobuf"
    assert log_bodies(log_json.body) == log_bodies(log_pb.body, protobuf=True) == ["i1", "key <redacted> leaked", "i2"]
    assert metric_names(metric_json.body) == metric_names(metric_pb.body, protobuf=True) == ["http.requests",
                                                                                             "cpu.usage"]


def test_undecodable_bodies_are_forwarded_raw(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    cases = [("/v1/logs", b'{"resourceLogs": [', JSON_CT), ("/v1/logs", b"\xff\xff\xff\xff", PB_CT),
             ("/v1/logs", b'{"resourceLogs": 5}', JSON_CT),
             ("/v1/metrics", b"not json", {"Content-Type": "text/plain"}),
             ("/v1/traces", b"no trace policy: never parsed", JSON_CT)]
    for path, body, headers in cases:
        upstream.reset()
        assert post(edge, path, body, headers).status == 200
        [got] = upstream.received()
        assert (got.path, got.body) == (path, body)


# ── headers, paths, passthrough ──


def test_headers_are_preserved_except_hop_by_hop(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    headers = {"DD-API-KEY": "dd-secret", "Authorization": "Bearer t0k", "X-Custom": "kept", "User-Agent": "tester/1",
               "Connection": "keep-alive, X-Hop-Named", "X-Hop-Named": "gone", "Keep-Alive": "timeout=5",
               "Proxy-Connection": "keep-alive", "TE": "trailers", "Trailer": "X-Checksum"}
    for path in ("/v1/logs", "/v1/metrics", "/passthrough/endpoint"):
        upstream.reset()
        assert post(edge, path, orjson.dumps(MIXED), headers).status == 200
        [got] = upstream.received()
        for name in ("DD-API-KEY", "Authorization", "X-Custom", "User-Agent", "Content-Type"):
            assert got.header(name) == {**headers, **JSON_CT}[name], (path, name)
        assert not got.header_names() & {"keep-alive", "proxy-connection", "te", "trailer", "x-hop-named"}
        assert got.header("host") == f"127.0.0.1:{upstream.port}"
        assert got.header("connection") in (None, "keep-alive")


def test_path_and_query_are_forwarded_verbatim(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    post(edge, "/v1/logs?tenant=a%20b&x=1&x=2", orjson.dumps(MIXED))
    request(edge.port, "GET", "/api/pa%2Fth;p/%7Euser?q=%41&empty=&flag")
    logs, other = upstream.received()
    assert (logs.path, logs.query) == ("/v1/logs", "tenant=a%20b&x=1&x=2")
    assert (other.method, other.path, other.query) == ("GET", "/api/pa%2Fth;p/%7Euser", "q=%41&empty=&flag")


def test_passthrough_relays_any_method(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    upstream.reset(status=201, headers={"X-Reply": "yes", "Content-Type": "text/plain"}, body=b"created")
    for method, path, body in (("GET", "/anything", None), ("POST", "/custom/endpoint", b"payload"),
                               ("PUT", "/v1/logs", b"put is not OTLP"), ("DELETE", "/x/1", None),
                               ("PATCH", "/_edge/policies", b"{}")):
        reply = request(edge.port, method, path, body)
        assert (reply.status, reply.body, reply.header("x-reply")) == (201, b"created", "yes"), method
        got = upstream.received()[-1]
        assert (got.method, got.path, got.body) == (method, path, body or b"")
    head = request(edge.port, "HEAD", "/anything")
    assert (head.status, head.body, head.header("content-length")) == (201, b"", "7")


def test_passthrough_streams_large_bodies(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    big_response = bytes(range(256)) * 2000  # 512 KB
    upstream.reset(body=big_response, headers={"Content-Type": "application/octet-stream"})
    sent = b"0123456789abcdef" * 40_000  # 640 KB: over max_body_size, which only OTLP routes enforce
    reply = request(edge.port, "POST", "/upload", sent)
    assert (reply.status, reply.body) == (200, big_response)
    reply = request(edge.port, "POST", "/upload-chunked", iter([sent[:300_000], sent[300_000:]]), chunked=True)
    assert (reply.status, reply.body) == (200, big_response)
    first, second = upstream.received()
    assert first.body == sent and second.body == sent
    assert first.header("content-length") == str(len(sent))


# ── metrics, statistics, live policy changes, rate limits ──


def test_metrics_are_summed_over_workers(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    labels = {"route": "otlp_logs", "status": "200"}
    before = metric_value(edge, "edge_requests_total", **labels)
    evaluated = metric_value(edge, "edge_records_evaluated_total", signal="log")
    dropped = metric_value(edge, "edge_records_dropped_total", signal="log")
    n = 40
    replies = in_parallel([lambda: post(edge, "/v1/logs", orjson.dumps(MIXED))] * n)
    assert all(r.status == 200 for r in replies)
    assert len(edge.worker_pids()) == 2
    assert metric_value(edge, "edge_requests_total", **labels) - before == n
    assert metric_value(edge, "edge_records_evaluated_total", signal="log") - evaluated == 3 * n
    assert metric_value(edge, "edge_records_dropped_total", signal="log") - dropped == n
    assert metric_value(edge, "edge_request_duration_seconds_count", route="otlp_logs") >= n
    assert metric_value(edge, "edge_snapshot_generation") >= 1
    assert metric_value(edge, "edge_policies_loaded") == len(BASE_POLICIES)


def test_match_statistics_reach_the_spool(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    # A policy id no other test uses: hits that earlier tests left in the workers cannot count here.
    policy_id = f"drop-debug-{uuid.uuid4().hex[:8]}"
    edge.publish([{**p, "id": policy_id} if p["id"] == "drop-debug" else p for p in BASE_POLICIES])
    spool = StatsSpool(edge.paths.stats_spool)
    try:
        for _ in range(3):
            post(edge, "/v1/logs", orjson.dumps(logs_doc(("DEBUG", "a"), ("DEBUG", "b"), ("INFO", "c"))))
        hits = [0]

        def collected() -> bool:
            counts = spool.collect()
            hits[0] += counts[policy_id].hits if policy_id in counts else 0
            return hits[0] >= 6

        assert wait_for(collected, 20, 0.1), hits
        assert hits[0] == 6
    finally:
        edge.publish(BASE_POLICIES)


def test_policy_swap_applies_while_requests_run(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    """Every request is evaluated with the snapshot current when it reaches the worker: one answered
    before the swap began had the old policies, one sent after the swap returned has the new ones."""
    swapped = [{"id": "drop-info", "name": "Drop info",
                "log": {"match": [{"log_field": "severity_text", "exact": "INFO"}], "keep": "none"}}]
    started: dict[int, float] = {}
    answered: dict[int, float] = {}
    statuses: list[int] = []
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(1_000_000))

    def load() -> None:
        while not stop.is_set():
            seq = next(counter)
            doc = logs_doc(("DEBUG", f"{seq}:debug"), ("INFO", f"{seq}:info"))
            with lock:
                started[seq] = time.monotonic()
            reply = post(edge, "/v1/logs", orjson.dumps(doc))
            with lock:
                answered[seq] = time.monotonic()
                statuses.append(reply.status)

    def answered_since(moment: float) -> int:
        with lock:
            return sum(1 for seq, at in started.items() if at > moment and seq in answered)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: answered_since(0.0) >= 20), "the load did not start"
        swap_began = time.monotonic()
        generation = edge.publish(swapped)
        swap_done = time.monotonic()
        assert wait_for(lambda: answered_since(swap_done) >= 20)
        stop.set()
        for t in threads:
            t.join()
        assert statuses and set(statuses) == {200}, "requests failed during the swap"
        forwarded = {int(b.split(":")[0]): b.split(":")[1] for r in upstream.received() for b in log_bodies(r.body)}
        assert set(forwarded) == set(started)
        early = [kind for seq, kind in forwarded.items() if answered[seq] < swap_began]
        late = [kind for seq, kind in forwarded.items() if started[seq] > swap_done]
        assert early and set(early) == {"info"}
        assert late and set(late) == {"debug"}
        assert orjson.loads(request(edge.port, "GET", "/_edge/policies").body)["generation"] == generation
    finally:
        stop.set()
        for t in threads:
            t.join()
        edge.publish(BASE_POLICIES)


def spooled_hits(spool_dir: str, policy_id: str) -> dict[str, int]:
    """Hits of one policy in the spool files not collected yet, by writer pid (files are
    `<pid>-<n>.json` holding `{policy id: [hits, misses, stages]}`), read without deleting them."""
    hits: dict[str, int] = {}
    for path in Path(spool_dir).glob("*.json"):
        counts = orjson.loads(path.read_bytes())
        if policy_id in counts:
            writer = path.name.split("-")[0]
            hits[writer] = hits.get(writer, 0) + counts[policy_id][0]
    return hits


def test_rate_limit_is_shared_by_all_workers(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    policy_id = f"rate-{uuid.uuid4().hex[:8]}"
    rate = {"id": policy_id, "name": "Ten per minute",
            "log": {"match": [{"log_field": "body", "contains": "ratelimited"}], "keep": "10/m"}}
    spool = StatsSpool(edge.paths.stats_spool)
    edge.publish([*BASE_POLICIES, rate])
    try:
        spool.collect()
        doc = orjson.dumps(logs_doc(("INFO", "ratelimited 1"), ("INFO", "ratelimited 2")))
        replies = in_parallel([lambda: post(edge, "/v1/logs", doc)] * 25)
        assert [r.status for r in replies] == [200] * 25
        forwarded = [b for r in upstream.received() for b in log_bodies(r.body)]
        assert len(forwarded) == 10
        # every matching record counts a hit, kept or dropped by this policy: 50 in all, once both
        # workers have flushed their statistics (about once a second)
        assert wait_for(lambda: sum(spooled_hits(edge.paths.stats_spool, policy_id).values()) >= 50, 20, 0.1)
        by_writer = spooled_hits(edge.paths.stats_spool, policy_id)
        assert sum(by_writer.values()) == 50
        assert len(by_writer) == 2, f"both workers served matching requests: {by_writer}"
    finally:
        edge.publish(BASE_POLICIES)

