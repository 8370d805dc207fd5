"""Sender faults against a real `edge`: broken framing, lying headers, bad payloads, bombs, slow
and hostile clients. After each case the invariant holds (see `harness.check_invariant`).

Accounting: a body the proxy can evaluate is registered in the ledger (records delivered or
dropped by a suite policy, counted); a body it must forward raw is checked byte for byte,
which delivers every record it held.
"""

from __future__ import annotations

import contextlib
import gzip
import socket
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
import zstandard
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.reliability.harness import (
    MATRIX_MAX_BODY,
    MATRIX_MAX_DECODED,
    PB_CT,
    SIGNAL_PATHS,
    Case,
    Sent,
    batch,
    fingerprint,
    make_records,
    otlp_document,
    raw_exchange,
    raw_http,
    record_id,
    records_of,
    statuses,
    wait_for,
)

ENCODERS = {"identity": lambda b: b, "gzip": gzip.compress, "zstd": zstandard.ZstdCompressor().compress}


def assert_forwarded_raw(case: Case, body: bytes, path: str = "/v1/logs") -> None:
    [got] = case.upstream.received(path)
    assert got.body == body, "an undecodable body must reach the upstream byte for byte"


def forwarded_within(case: Case, seconds: float, path: str = "") -> bool:
    """Whether anything reached the upstream within `seconds`: the bounded chance a refused body gets
    to show up there late (the proxy answers before it would forward, so nothing is awaited)."""
    return wait_for(lambda: case.upstream.received(path), seconds)


# ── baseline: the accounting works when nothing is wrong ──


@pytest.mark.parametrize("signal", ["log", "metric", "trace"])
@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
@pytest.mark.parametrize("encoding", ["identity", "gzip", "zstd"])
def test_well_formed_batches_are_filtered_and_counted(case: Case, signal: str, protobuf: bool,
                                                      encoding: str) -> None:
    body, sent = batch(case.ledger, signal, keep=4, drop=3, protobuf=protobuf)
    headers = {**(PB_CT if protobuf else {}), **({"Content-Encoding": encoding} if encoding != "identity" else {})}
    reply = case.post(SIGNAL_PATHS[signal], ENCODERS[encoding](body), headers)
    sent.status = reply.status
    assert reply.status == 200


# ── framing ──


def test_truncated_json_is_forwarded_raw(case: Case) -> None:
    body, _ = batch(case.ledger, keep=3, drop=2)
    case.ledger.batches.clear()  # the records are cut in half: nothing to account for but the bytes
    cut = body[: len(body) // 2]
    assert case.post("/v1/logs", cut).status == 200
    assert_forwarded_raw(case, cut)


def test_body_shorter_than_content_length_is_never_forwarded(case: Case) -> None:
    """The client promises 5000 bytes, sends 300 and half-closes: nothing partial goes upstream."""
    body, _ = batch(case.ledger, keep=3, drop=2)
    case.ledger.batches.clear()
    head = (f"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body) + 5000}\r\n\r\n").encode()
    # The body deadline (client_body_timeout, 30 s) would also close the connection, with a 408:
    # reading for less than that and seeing neither a wait nor a 408 shows the proxy acted on the EOF.
    answer, closed = raw_exchange(case.edge.port, head + body[:300], shutdown_write=True, timeout=20)
    assert closed, "the proxy kept a half-closed connection open"
    assert all(s >= 400 for s in statuses(answer)) and 408 not in statuses(answer), answer[:200]
    assert not forwarded_within(case, 0.3), "a partial body reached the upstream"


def test_body_longer_than_content_length(case: Case) -> None:
    """Bytes past Content-Length are the next request: the batch goes through, the junk is a 400."""
    body, sent = batch(case.ledger, keep=3, drop=2)
    head = (f"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    answer = raw_http(case.edge.port, head + body + b"\x00garbage that is no request\r\n\r\n", timeout=3)
    codes = statuses(answer)
    assert codes == [200, 400], answer[:300]
    sent.status = 200


def test_chunked_body_with_a_broken_chunk_is_never_forwarded(case: Case) -> None:
    body, _ = batch(case.ledger, keep=2, drop=1)
    case.ledger.batches.clear()
    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    answer = raw_http(case.edge.port, head + b"ZZ\r\n" + body + b"\r\n0\r\n\r\n", shutdown_write=True, timeout=5)
    assert all(s >= 400 for s in statuses(answer))
    assert not forwarded_within(case, 0.3), "a broken chunked body reached the upstream"


# ── declared types and payloads ──


def test_json_declared_as_protobuf_is_forwarded_raw(case: Case) -> None:
    body, _ = batch(case.ledger, keep=2, drop=2)
    case.ledger.batches.clear()
    assert case.post("/v1/logs", body, PB_CT).status == 200
    assert_forwarded_raw(case, body)


def test_protobuf_declared_as_json_is_forwarded_raw(case: Case) -> None:
    body, _ = batch(case.ledger, keep=2, drop=2, protobuf=True)
    case.ledger.batches.clear()
    assert case.post("/v1/logs", body).status == 200
    assert_forwarded_raw(case, body)


@pytest.mark.parametrize("content_type", ["text/plain", "", "application/json; charset=utf-8"])
def test_other_content_types_are_read_as_json(case: Case, content_type: str) -> None:
    body, sent = batch(case.ledger, keep=2, drop=2)
    reply = case.edge.request("POST", "/v1/logs", body, {"Content-Type": content_type} if content_type else {})
    sent.status = reply.status
    assert reply.status == 200


@pytest.mark.parametrize(("body", "headers"), [
    (b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": ', {}),
    (b'{"resourceLogs": "not a list"}', {}),
    (b"[1, 2, 3]", {}),
    (b"\x00\x01\x02 not protobuf \xff\xff\xff\xff", PB_CT),
    (b"\x0a\xff\xff\xff\xff\x0f", PB_CT),  # a length prefix far past the end
], ids=["json-cut", "json-shape", "json-array", "pb-junk", "pb-length"])
def test_invalid_payloads_are_forwarded_raw(case: Case, body: bytes, headers: dict[str, str]) -> None:
    assert case.post("/v1/logs", body, headers).status == 200
    assert_forwarded_raw(case, body)


# ── decompression bombs: over max_decoded_bytes the body goes on raw (fail-open), memory stays bounded ──


def bomb(encoding: str, decoded: int) -> bytes:
    """A valid OTLP logs document padded with one huge attribute to `decoded` bytes, compressed."""
    doc = otlp_document("log", [{"severityText": "DEBUG", "body": {"stringValue": "in a bomb"},
                                 "attributes": [{"key": "pad", "value": {"stringValue": "@PAD@"}}]}])
    head, tail = orjson.dumps(doc).split(b"@PAD@")
    if encoding == "zstd":
        compressor = zstandard.ZstdCompressor(level=3).compressobj()
    else:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"A" * (1 << 20)
    parts = [compressor.compress(head)]
    parts += [compressor.compress(block) for _ in range(decoded >> 20)]
    parts += [compressor.compress(tail), compressor.flush()]
    return b"".join(parts)


@pytest.mark.parametrize("encoding", ["gzip", "zstd"])
def test_decompression_bombs_are_forwarded_raw_with_bounded_memory(case: Case, encoding: str) -> None:
    payload = bomb(encoding, 256 << 20)  # 256 MiB once decoded, 64 x max_decoded_bytes
    assert len(payload) < MATRIX_MAX_BODY
    workers = case.edge.worker_pids()
    rss_before = max(_rss(pid) for pid in workers)
    with ThreadPoolExecutor(4) as pool:
        replies = list(pool.map(lambda _: case.post("/v1/logs", payload, {"Content-Encoding": encoding}), range(4)))
    assert [r.status for r in replies] == [200] * 4
    assert [r.body for r in case.upstream.received("/v1/logs")] == [payload] * 4
    growth = max(_rss(pid) for pid in workers) - rss_before
    assert growth < 8 * MATRIX_MAX_DECODED + (32 << 20), f"a worker grew by {growth >> 20} MiB"


def _rss(pid: int) -> int:
    import psutil
    return psutil.Process(pid).memory_info().rss


def test_bomb_just_under_the_limit_is_filtered(case: Case) -> None:
    body, sent = batch(case.ledger, keep=2, drop=2,
                       extra={"attributes": [{"key": "pad", "value": {"stringValue": "B" * 200_000}}]})
    assert len(body) * 3 < MATRIX_MAX_DECODED
    reply = case.post("/v1/logs", gzip.compress(body), {"Content-Encoding": "gzip"})
    sent.status = reply.status
    assert reply.status == 200


# ── slow and hostile clients ──


def test_slowloris_does_not_block_other_clients(case: Case) -> None:
    """60 clients dribbling headers (and 10 dribbling bodies) while others are served: every other
    request is answered while all the slow ones are still sending (their latency is measured by
    benchmarks/latency.py)."""
    stop = threading.Event()
    slow: list[socket.socket] = []
    progress: dict[int, int] = {}  # slow client -> bytes it has sent
    finished: list[int] = []  # slow clients that got their whole request out

    def dribble(n: int, data: bytes) -> None:
        try:
            sock = socket.create_connection(("127.0.0.1", case.edge.port), timeout=5)
        except OSError:
            return
        slow.append(sock)
        for i in range(len(data)):
            if stop.is_set():
                return
            try:
                sock.sendall(data[i:i + 1])
            except OSError:
                return
            progress[n] = i + 1
            time.sleep(0.05)  # the slow client under test: one byte every 50 ms (not synchronisation)
        finished.append(n)

    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"s" * 200
    body_head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    payloads = [head] * 60 + [body_head + b"{" * 400] * 10  # 15 s and more of dribbling each
    threads = [threading.Thread(target=dribble, args=(n, data)) for n, data in enumerate(payloads)]
    for t in threads:
        t.start()
    try:
        assert wait_for(lambda: len(slow) == len(threads), 20)
        # every slow client is part-way through its request: the proxy holds 70 unfinished ones
        assert wait_for(lambda: len(progress) == len(threads) and min(progress.values()) >= 5, 20), progress
        for _ in range(30):
            body, sent = batch(case.ledger, keep=2, drop=1)
            reply = case.post("/v1/logs", body, timeout=20)
            sent.status = reply.status
            assert reply.status == 200
        assert case.edge.healthy()
        assert not finished, f"{len(finished)} slow clients finished first: the others waited for them"
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for sock in slow:
            sock.close()


def test_huge_headers_are_refused_and_reasonable_ones_forwarded(case: Case) -> None:
    body, sent = batch(case.ledger, keep=1, drop=1)
    big = case.post("/v1/logs", body, {"X-Huge": "h" * 20_000})
    assert big.status in (400, 431)
    many = raw_http(case.edge.port, b"GET /anything HTTP/1.1\r\nHost: x\r\n"
                    + b"".join(b"X-H%d: v\r\n" % i for i in range(300)) + b"Connection: close\r\n\r\n")
    assert statuses(many) and statuses(many)[0] in (400, 431)
    line = raw_http(case.edge.port, b"GET /" + b"p" * 20_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(line) and statuses(line)[0] in (400, 414)
    assert case.upstream.received() == []
    near_limit = "v" * 15_000
    reply = case.post("/v1/logs", body, {"X-Near-Limit": near_limit})
    sent.status = reply.status
    assert reply.status == 200
    assert case.upstream.received("/v1/logs")[0].header("x-near-limit") == near_limit


# ── strings and structure ──


def test_invalid_utf8_in_json_is_forwarded_raw(case: Case) -> None:
    body = orjson.dumps(otlp_document("log", [{"severityText": "DEBUG", "body": {"stringValue": "@X@"}}]))
    body = body.replace(b"@X@", b"bad \xff\xfe bytes")
    assert case.post("/v1/logs", body).status == 200
    assert_forwarded_raw(case, body)


def test_lone_surrogate_escape_is_forwarded_raw(case: Case) -> None:
    body = orjson.dumps(otlp_document("log", [{"severityText": "DEBUG", "body": {"stringValue": "@X@"}}]))
    body = body.replace(b"@X@", b"\\ud800 alone")
    assert case.post("/v1/logs", body).status == 200
    assert_forwarded_raw(case, body)


def test_invalid_utf8_in_protobuf_is_forwarded_raw(case: Case) -> None:
    marker = "Z" * 12
    body = ExportLogsServiceRequest()
    body.resource_logs.add().scope_logs.add().log_records.add(severity_text="DEBUG").body.string_value = marker
    raw = body.SerializeToString().replace(marker.encode(), b"\xff\xfe\xfd" + b"Z" * 9)
    assert case.post("/v1/logs", raw, PB_CT).status == 200
    assert_forwarded_raw(case, raw)


def test_utf8_header_values_reach_the_upstream_byte_for_byte(case: Case) -> None:
    value = "José ✓ 東京".encode()
    answer = raw_http(case.edge.port, b"GET /utf8 HTTP/1.1\r\nHost: x\r\nX-Name: " + value
                      + b"\r\nConnection: close\r\n\r\n")
    assert statuses(answer) == [200]
    assert case.upstream.received("/utf8")[0].header("x-name").encode("latin-1") == value


def test_non_utf8_header_values_do_not_break_the_request(case: Case) -> None:
    """Bytes that are not UTF-8 cannot be carried exactly by the HTTP client: the request still goes."""
    request = b"GET /latin HTTP/1.1\r\nHost: x\r\nX-Latin: caf\xe9\r\nConnection: close\r\n\r\n"
    answer = raw_http(case.edge.port, request)
    assert statuses(answer) == [200]
    assert case.upstream.received("/latin")[0].header("x-latin").startswith("caf")


def nested_json(depth: int) -> bytes:
    """An AnyValue nesting kvlistValue `depth` levels deep, as JSON text (built flat: no recursion)."""
    opening = b"".join(b'{"kvlistValue":{"values":[{"key":"k%d","value":' % level for level in range(depth))
    return opening + b'{"stringValue":"bottom"}' + b"}]}}" * depth


def nested_proto(depth: int) -> AnyValue:
    value = AnyValue(string_value="bottom")
    for level in range(depth):
        outer = AnyValue()
        outer.kvlist_value.values.add(key=f"k{level}").value.CopyFrom(value)
        value = outer
    return value


def nested_batch(case: Case, depth: int, protobuf: bool = False) -> tuple[bytes, Sent]:
    """Two kept and two dropped records; the first kept one carries the deep attribute."""
    records, droppable = make_records(case.ledger, "log", 2, 2)
    records[0]["attributes"] = [{"key": "deep", "value": {"stringValue": "@DEEP@"}}]
    ids = [record_id("log", r) or "" for r in records]
    if protobuf:
        message = json_format.ParseDict(otlp_document("log", records), ExportLogsServiceRequest())
        message.resource_logs[0].scope_logs[0].log_records[0].attributes[0].value.CopyFrom(nested_proto(depth))
        body = message.SerializeToString()
    else:
        body = orjson.dumps(otlp_document("log", records)).replace(b'{"stringValue":"@DEEP@"}', nested_json(depth))
    with contextlib.suppress(Exception):  # too deep for the test's own parsers: its test checks bytes
        records = records_of("log", body, protobuf)
    sent = Sent("log", ids, droppable, {i: fingerprint(r) for i, r in zip(ids, records, strict=True)})
    return body, case.ledger.add(sent)


@pytest.mark.parametrize("protobuf", [False, True], ids=["json", "protobuf"])
def test_kvlist_nested_1000_deep_fails_open(case: Case, protobuf: bool) -> None:
    """Past the parsers' depth limits (orjson 1024 levels, upb 100) the batch is forwarded untouched."""
    body, _ = nested_batch(case, 1000, protobuf)
    case.ledger.batches.clear()  # the test upstream cannot parse it either: checked byte for byte
    reply = case.post("/v1/logs", body, PB_CT if protobuf else {})
    assert reply.status == 200
    assert_forwarded_raw(case, body)


@pytest.mark.parametrize(("protobuf", "depth"), [(False, 40), (True, 25)], ids=["json", "protobuf"])
def test_kvlist_nested_within_parser_limits_is_filtered(case: Case, protobuf: bool, depth: int) -> None:
    """Deep but parseable (40 levels = 160 JSON levels; 25 = 75 protobuf message levels): evaluated,
    DEBUG dropped, the deep record intact."""
    body, sent = nested_batch(case, depth, protobuf)
    reply = case.post("/v1/logs", body, PB_CT if protobuf else {})
    sent.status = reply.status
    assert reply.status == 200


def test_kvlist_nested_past_the_encoder_limit_fails_open(case: Case) -> None:
    """Deep enough to parse (orjson reads 1024 levels) but too deep to re-encode (254): the batch
    goes on unfiltered and unchanged rather than failing or losing records."""
    body, sent = nested_batch(case, 100)
    sent.droppable.clear()  # fail-open: forwarded as received, the DEBUG records too
    reply = case.post("/v1/logs", body)
    sent.status = reply.status
    assert reply.status == 200
    assert_forwarded_raw(case, body)


def test_chunked_body_cut_short_is_never_forwarded(case: Case) -> None:
    """A chunked body whose sender goes away before the last chunk: nothing partial goes upstream."""
    body, _ = batch(case.ledger, keep=3, drop=2, protobuf=True)
    case.ledger.batches.clear()
    head = (b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    half = body[: len(body) // 2]
    answer = raw_http(case.edge.port, head + b"%x\r\n" % len(half) + half + b"\r\n", shutdown_write=True, timeout=5)
    assert all(s >= 400 for s in statuses(answer))
    assert not forwarded_within(case, 0.3), "a chunked body cut short reached the upstream"


@pytest.mark.parametrize(("framing", "size"), [("chunked", 200_000), ("length", 1000), ("length", 200_000)])
def test_passthrough_body_cut_short_is_never_completed_upstream(case: Case, framing: str, size: int) -> None:
    """Passthrough streams large bodies: one cut short must not reach the upstream as a complete request."""
    payload = b"p" * size
    if framing == "chunked":
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        sent = b"%x\r\n" % (size // 2) + payload[: size // 2] + b"\r\n"
    else:
        head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % size
        sent = payload[: size // 2]
    raw_http(case.edge.port, head + sent, shutdown_write=True, timeout=5)
    assert not forwarded_within(case, 0.5, "/upload"), "a passthrough body cut short was completed upstream"
