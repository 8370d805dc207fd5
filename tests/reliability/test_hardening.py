"""Faults found by adversarial probing of a real edge, each reproduced before it was fixed.

1. A body of tens of thousands of empty gzip members (or zstd frames) made decoding quadratic
   and held a worker's event loop for seconds: decoding is linear, the member count is capped
   (past it the body is forwarded raw, like a bomb over `max_decoded_bytes`) and big bodies are
   decoded off the event loop.
2. A Datadog log whose `message` is JSON nested thousands of levels deep raised RecursionError and
   the whole batch went on unfiltered with an error traceback: such a message is read as text.
3. Credentials in `upstream_url` (`http://user:pass@host`) reached the start-up log: URL userinfo
   and secret-looking query values are redacted in every log line and every `/_edge/*` answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from time import perf_counter
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import zstandard

from edge import logs
from edge.formats.datadog import batch as datadog_batch
from edge.formats.datadog.body import evaluate as evaluate_datadog
from edge.policy.compiler import compile_policies
from edge.protocols import admin, content_encoding
from edge.protocols.content_encoding import GZIP, ZSTD, decode, encode
from edge.protocols.otlp import COMPRESSION_RATIO, OFFLOAD_BYTES, OtlpRoute
from edge.protocols.self_metrics import get_metrics
from edge.protocols.upstream import RequestHead, request_head
from tests.engine_helpers import clean_engine
from tests.reliability.harness import (
    EDGE_SCRIPT,
    MATRIX_MAX_BODY,
    SUITE_POLICIES,
    Case,
    EdgeProcess,
    FaultUpstream,
    PolicyServer,
    batch,
    free_port,
    wait_for,
)

# ── 1. many gzip members / zstd frames ─────────────────────────────────────

EMPTY_MEMBER = {GZIP: zlib.compress(b"", 1, 31), ZSTD: zstandard.ZstdCompressor().compress(b"")}


class CountedInflater:
    """A real inflater that counts the compressed bytes it is handed and hands back
    (`unused_data`, `unconsumed_tail` are copies): the decoder's copying work."""

    def __init__(self, inner: Any, tally: list[int]) -> None:
        self.inner = inner
        self.tally = tally

    def decompress(self, data: Any, *args: Any) -> bytes:
        self.tally[0] += len(data)
        return self.inner.decompress(data, *args)

    @property
    def eof(self) -> bool:
        return self.inner.eof

    @property
    def unused_data(self) -> bytes:
        self.tally[0] += len(self.inner.unused_data)
        return self.inner.unused_data

    @property
    def unconsumed_tail(self) -> bytes:
        self.tally[0] += len(self.inner.unconsumed_tail)
        return self.inner.unconsumed_tail


def decode_work(codec: str, body: bytes) -> int:
    """Compressed bytes copied in and out of the real inflaters while decoding `body` (no member cap)."""
    tally = [0]
    real_zstd = content_encoding._decompressor
    counting_zlib = SimpleNamespace(decompressobj=lambda *a: CountedInflater(zlib.decompressobj(*a), tally),
                                    error=zlib.error, compress=zlib.compress)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(content_encoding, "MAX_MEMBERS", 1 << 20, raising=False)
        patch.setattr(content_encoding, "zlib", counting_zlib)
        patch.setattr(content_encoding, "_decompressor", lambda limit: SimpleNamespace(
            decompressobj=lambda: CountedInflater(real_zstd(limit).decompressobj(), tally)))
        assert decode(body, codec, 1 << 20) == b""
    return tally[0]


@pytest.mark.parametrize("codec", [GZIP, ZSTD])
def test_decoding_many_members_is_linear(codec: str) -> None:
    """Work grows with the body, not with members x body: 4x the members is 4x the work, and
    every compressed byte is copied a bounded number of times (the quadratic decoder handed each
    gzip member the whole rest of the body; zstd frames cost 512 bytes each however small)."""
    small, big = EMPTY_MEMBER[codec] * 5_000, EMPTY_MEMBER[codec] * 20_000
    work_small, work_big = decode_work(codec, small), decode_work(codec, big)
    assert work_big <= 4 * work_small + 1024, f"{work_small} -> {work_big}: not linear"  # + end effects
    assert work_big <= 8 * len(big), f"{work_big / len(big):.1f} bytes copied per body byte"


@pytest.mark.parametrize("codec", [GZIP, ZSTD])
def test_member_count_is_capped(codec: str) -> None:
    """Past MAX_MEMBERS members the body counts as undecodable (forwarded raw, unfiltered), so
    one request's decoding cost is bounded whatever its size; up to the cap everything decodes."""
    cap = content_encoding.MAX_MEMBERS
    one = encode(b"x", codec)
    assert decode(one * cap, codec, 1 << 20) == b"x" * cap
    assert decode(one * (cap + 1), codec, 1 << 20) is None
    assert decode(EMPTY_MEMBER[codec] * (MATRIX_MAX_BODY // len(EMPTY_MEMBER[codec])), codec, 1 << 20) is None


def test_gzip_padding_and_garbage_after_members() -> None:
    member = encode(b"abc", GZIP)
    assert decode(member * 3 + b"\0" * 100, GZIP, 100) == b"abc" * 3  # zero padding is tolerated
    assert decode(member + b"\0\0junk", GZIP, 100) is None
    assert decode(member + b"junk", GZIP, 100) is None
    assert decode(member[:-1], GZIP, 100) is None  # truncated
    assert decode(b"", GZIP, 100) is None and decode(b"", ZSTD, 100) is None


class ThreadProbe(OtlpRoute):
    """The real route's dispatch with `decode` and `filter` that note where they ran; a big body's
    decode returns only once the event loop has ticked meanwhile, which it never could if decoding
    held the loop."""

    def __init__(self) -> None:  # no runtime: only `filter_off_loop` is exercised
        self.decoded_in: list[str] = []
        self.filtered_in: list[str] = []
        self.loop_ticked = threading.Event()
        self.saw_ticks: list[bool] = []

    def filtered(self, head: RequestHead) -> bool:
        return True

    def decode(self, body: bytes, head: RequestHead) -> bytes | None:
        self.decoded_in.append(threading.current_thread().name)
        self.saw_ticks.append(self.loop_ticked.wait(20))
        return body

    def filter(self, body: bytes, head: RequestHead, decoded: object = None) -> bytes | None:
        self.filtered_in.append(threading.current_thread().name)
        return body


def test_big_compressed_bodies_are_decoded_off_the_event_loop() -> None:
    """From OFFLOAD_BYTES (a compressed body counts COMPRESSION_RATIO times its size) decoding runs
    in a thread while the event loop keeps ticking; evaluation and small or plain bodies stay inline."""
    route = ThreadProbe()
    plain = request_head([(b"content-type", b"application/json")])
    gzipped = request_head([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    big, small = b"x" * OFFLOAD_BYTES, b"x" * (OFFLOAD_BYTES // COMPRESSION_RATIO - 1)

    async def run() -> int:
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)  # the loop's heartbeat, what a blocked loop cannot do
                ticks += 1
                if ticks >= 5:
                    route.loop_ticked.set()

        ticker = asyncio.create_task(tick())
        assert await route.filter_off_loop(small + b"x", gzipped) == small + b"x"
        ticker.cancel()
        assert await route.filter_off_loop(small, gzipped) == small
        assert await route.filter_off_loop(big, plain) == big
        return ticks

    ticks = asyncio.run(run())
    here = threading.current_thread().name
    assert len(route.decoded_in) == 1 and route.decoded_in[0].startswith("edge-decode")
    assert route.filtered_in == [here, here, here]
    assert route.saw_ticks == [True], f"the event loop ticked {ticks} times while the big body was decoded"


NORMAL_REQUESTS = 200
BOMBS_PER_SENDER = 6


def many_members(codec: str, size: int) -> bytes:
    return EMPTY_MEMBER[codec] * (size // len(EMPTY_MEMBER[codec]))


def test_many_member_bodies_do_not_stall_other_requests(case: Case) -> None:
    """Two senders post 1 MiB bodies of empty gzip members / zstd frames while another sends
    normal batches: the normal requests keep being answered 200 while bombs are in flight, no
    worker is killed, and the bodies are forwarded byte for byte (raw, as any body past the
    decoding limits). The normal requests' latency meanwhile is measured by benchmarks/latency.py."""
    bombs = {GZIP: many_members(GZIP, MATRIX_MAX_BODY), ZSTD: many_members(ZSTD, MATRIX_MAX_BODY)}
    workers = case.edge.worker_pids()
    for _ in range(20):  # warm both workers (first evaluation loads the policy databases)
        body, sent = batch(case.ledger)
        sent.status = case.post("/v1/logs", body).status
    normal_statuses: list[int] = []
    during_bombs = [0]  # normal requests sent and answered while a bomb was in flight
    bombs_in_flight = [0]
    bomb_statuses: list[int] = []
    bombs_done = threading.Event()
    lock = threading.Lock()

    def send_bombs(first: int) -> None:
        for n in range(BOMBS_PER_SENDER):
            codec = (GZIP, ZSTD)[(first + n) % 2]
            with lock:
                bombs_in_flight[0] += 1
            try:
                status = case.post("/v1/logs", bombs[codec], {"Content-Encoding": codec}, timeout=60).status
            finally:
                with lock:
                    bombs_in_flight[0] -= 1
            bomb_statuses.append(status)

    def send_normal() -> None:
        while len(normal_statuses) < NORMAL_REQUESTS or not bombs_done.is_set():
            body, sent = batch(case.ledger)
            with lock:
                bombs_before = bombs_in_flight[0]
            sent.status = case.post("/v1/logs", body).status
            normal_statuses.append(sent.status)
            with lock:
                during_bombs[0] += bool(bombs_before and bombs_in_flight[0])
            if len(normal_statuses) >= 20 * NORMAL_REQUESTS:
                break

    senders = [threading.Thread(target=send_bombs, args=(k,)) for k in range(2)]
    normal = threading.Thread(target=send_normal)
    normal.start()
    for t in senders:
        t.start()
    for t in senders:
        t.join(120)
    bombs_done.set()
    normal.join(120)
    assert bomb_statuses == [200] * 2 * BOMBS_PER_SENDER
    assert set(normal_statuses) == {200}, normal_statuses
    assert during_bombs[0] > 0, "no normal request was answered while a bomb was in flight"
    assert case.edge.worker_pids() == workers, "a worker was killed or restarted"
    forwarded = [r for r in case.upstream.received("/v1/logs") if r.header("content-encoding") in (GZIP, ZSTD)]
    assert len(forwarded) == 2 * BOMBS_PER_SENDER
    assert all(r.body == bombs[r.header("content-encoding") or ""] for r in forwarded), "not forwarded raw"


# ── 2. deeply nested JSON in a Datadog message ──────────────────────────────

DD_POLICIES = [
    *SUITE_POLICIES,
    {"id": "drop-healthchecks", "name": "drop healthcheck bodies",
     "log": {"match": [{"log_field": "body", "contains": "healthcheck"}], "keep": "none"}},
    {"id": "drop-marked", "name": "drop records marked inside their JSON message",
     "log": {"match": [{"log_attribute": "marker", "exact": "drop-me"}], "keep": "none"}},
]
DEEP = 5_000


def nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def marked_message(depth: int) -> str:
    """A JSON-object message `depth` levels deep carrying `"marker": "drop-me"` at its top."""
    return '{"marker":"drop-me","n":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def dd_record(message: str, status: str = "info") -> bytes:
    return orjson.dumps({"message": message, "status": status, "service": "probe"})


def dd_body(*records: bytes) -> bytes:
    return b"[" + b",".join(records) + b"]"


def test_deep_message_is_read_as_text(caplog: pytest.LogCaptureFixture) -> None:
    engine = clean_engine(DD_POLICIES)
    deep, arrays = dd_record(nested_object(DEEP)), dd_record("[" * DEEP + "]" * DEEP)
    debug, kept = dd_record("cache miss", "DEBUG"), dd_record("order 17 confirmed")
    with caplog.at_level(logging.DEBUG):
        result = evaluate_datadog(engine, "log", dd_body(deep, debug, arrays, kept))
    assert result.body == dd_body(deep, arrays, kept), "the DEBUG record must go, the others stay byte for byte"
    assert (result.outcome.total, result.outcome.kept) == (4, 3)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], "no error for a deep message"
    assert len([r for r in caplog.records if "deeper than" in r.getMessage()]) == 1


def test_message_depth_limit_boundary() -> None:
    """A message nested exactly MAX_MESSAGE_DEPTH deep is still read as an object (its marker
    drops the record); one level deeper it is plain text (kept)."""
    limit = datadog_batch.MAX_MESSAGE_DEPTH
    engine = clean_engine(DD_POLICIES)
    at, over = dd_record(marked_message(limit)), dd_record(marked_message(limit + 1))
    assert evaluate_datadog(engine, "log", dd_body(at, over)).body == dd_body(over)


def test_nesting_check_ignores_brackets_in_strings_and_stays_linear() -> None:
    within = datadog_batch.nests_within
    assert within('{"a":"' + "[" * 500 + '"}', 2)
    assert not within("[" * 3 + "]" * 3, 2)
    assert within('{"a":"\\"[[[[","b":[1]}', 2)
    started = perf_counter()  # an unterminated string followed by many escaped quotes: no backtracking
    assert within('{"' + '\\"' * 200_000 + "[" * 100, 50)
    assert perf_counter() - started < 20, "quadratic or worse: minutes on this input (a hang bound, not speed)"


@pytest.fixture(scope="module")
def dd_edge(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path_factory.mktemp("deep"), upstream.url, policies=DD_POLICIES, log_level="debug",
                       upstream_timeout=2.0)
    try:
        yield edge.start()
    finally:
        assert edge.stop() == 0


def error_lines(edge: EdgeProcess) -> list[str]:
    return [line for line in edge.log_path.read_text(errors="replace").splitlines()
            if '"level":"err"' in line or "Traceback" in line]


def test_deep_message_through_the_proxy(dd_edge: EdgeProcess, upstream: FaultUpstream) -> None:
    upstream.reset()
    deep, debug, kept = dd_record(nested_object(DEEP)), dd_record("cache miss", "DEBUG"), dd_record("order 17")
    reply = dd_edge.request("POST", "/api/v2/logs", dd_body(deep, debug, kept), {"Content-Type": "application/json"})
    assert reply.status == 200
    [got] = upstream.received("/api/v2/logs")
    assert got.body == dd_body(deep, kept)
    assert not error_lines(dd_edge), error_lines(dd_edge)
    assert "deeper than" in dd_edge.log_path.read_text()


def test_deep_record_body_is_forwarded_raw_without_a_traceback(dd_edge: EdgeProcess,
                                                                upstream: FaultUpstream) -> None:
    """A record (not its message) nested too deep for the JSON decoder: the batch cannot be read,
    so it goes on raw like any undecodable body, logged at debug level, never as an error."""
    upstream.reset()
    body = b'[{"message":"x","status":"DEBUG","a":' + b"[" * DEEP + b"]" * DEEP + b"}]"
    reply = dd_edge.request("POST", "/api/v2/logs", body, {"Content-Type": "application/json"})
    assert reply.status == 200
    [got] = upstream.received("/api/v2/logs")
    assert got.body == body
    assert not error_lines(dd_edge), error_lines(dd_edge)


# ── 3. credentials in URLs never reach logs or admin answers ───────────────

UPSTREAM_PASS = "upstream-pass-6c1e"
LOGS_PASS = "logs-pass-93ab"
PROVIDER_PASS = "provider-pass-2f7d"
PROVIDER_KEY = "provider-key-8e41"
NAME_PASS = "name-pass-77b0"
NAME_TOKEN = "name-token-55aa"
CLIENT_KEY = "client-key-0d9c"
URL_SECRETS = [UPSTREAM_PASS, LOGS_PASS, PROVIDER_PASS, PROVIDER_KEY, NAME_PASS, NAME_TOKEN, CLIENT_KEY]


@pytest.mark.parametrize("text, kept", [
    ("upstream http://user:s3cr3t@host:8080/v1?x=1", "upstream http://***@host:8080/v1?x=1"),
    ("https://u:p@ss:w@rd@h.example/a", "https://***@h.example/a"),
    ("URL('http://bob:hunter2@10.0.0.1/')", "URL('http://***@10.0.0.1/')"),
    ("GET /x?api_key=abc123&keep=1", "GET /x?api_key=***&keep=1"),
    ("/s?APIKEY=abc&token=t0k#frag", "/s?APIKEY=***&token=***#frag"),
    ("?X-Amz-Signature=f00d&X-Amz-Credential=AKIA&X-Amz-Date=20240101", "?X-Amz-Signature=***&X-Amz-Credential=***"
                                                                       "&X-Amz-Date=20240101"),
    ("?client_secret=x1&dd-api-key=x2&access_token=x3&password=x4&sig=x5&key=x6",
     "?client_secret=***&dd-api-key=***&access_token=***&password=***&sig=***&key=***"),
    ("?monkey=banana&tokens=2&keyboard=us", "?monkey=banana&tokens=2&keyboard=us"),
    ("plain text, user@example.com, a=b", "plain text, user@example.com, a=b"),
    ('label="http://a:b@h/?token=ab\\"cd"', 'label="http://***@h/?token=***\\"cd"'),  # escapes stay intact
])
def test_redact(text: str, kept: str) -> None:
    assert logs.redact(text) == kept


def test_every_log_line_is_redacted() -> None:
    url = f"http://edge:{UPSTREAM_PASS}@127.0.0.1:9/v1/logs?api_key={CLIENT_KEY}"
    try:
        raise ConnectionError(f"cannot reach {url}")
    except ConnectionError:
        record = logging.LogRecord("edge.test", logging.ERROR, __file__, 1, "upstream %s failed", (url,),
                                   sys.exc_info())
    line = logs.JsonFormatter().format(record)
    assert UPSTREAM_PASS not in line and CLIENT_KEY not in line, line
    assert "http://***@127.0.0.1:9/v1/logs?api_key=***" in orjson.loads(line)["msg"]
    assert "ConnectionError: cannot reach http://***@" in orjson.loads(line)["exc"]


def test_policies_document_is_redacted() -> None:
    snapshot = compile_policies([], version="v1", load_errors=[f"provider p: https://u:{PROVIDER_PASS}@h/?token="
                                                               f"{PROVIDER_KEY} answered 500"])
    runtime = SimpleNamespace(snapshots=SimpleNamespace(current=lambda: snapshot), generation=3)
    text = orjson.dumps(admin.policies_document(runtime))
    assert PROVIDER_PASS.encode() not in text and PROVIDER_KEY.encode() not in text
    assert orjson.loads(text)["load_errors"] == ["provider p: https://***@h/?token=*** answered 500"]


def with_userinfo(url: str, user: str, password: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{user}:{password}@{rest}"


NAMED_POLICY = {"id": "archive", "name": f"archived at https://ops:{NAME_PASS}@archive.example/x?token={NAME_TOKEN}",
                "log": {"match": [{"log_field": "body", "contains": "never-present-7d"}], "keep": "none"}}


@pytest.fixture(scope="module")
def url_secret_edge(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    server = PolicyServer(free_port(), [*SUITE_POLICIES, NAMED_POLICY]).start()
    sync = f"http://127.0.0.1:{server.port}/v1/policy/sync"
    edge = EdgeProcess(tmp_path_factory.mktemp("urls"), with_userinfo(upstream.url, "edge", UPSTREAM_PASS),
                       logs_url=with_userinfo(upstream.url, "dd", LOGS_PASS) + "/logs-intake",
                       log_level="debug", upstream_timeout=1.0, policies=[*SUITE_POLICIES, NAMED_POLICY],
                       policy_providers=[
                           {"id": "srv", "type": "http", "poll_interval": 1, "url": f"{sync}?api_key={PROVIDER_KEY}"},
                           {"id": "auth", "type": "http", "poll_interval": 1,
                            "url": with_userinfo(sync, "sync", PROVIDER_PASS) + f"?token={PROVIDER_KEY}"}])
    try:
        yield edge.start()
    finally:
        assert edge.stop() == 0
        server.stop()


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_url_credentials_never_reach_logs_or_admin_routes(url_secret_edge: EdgeProcess,
                                                          upstream: FaultUpstream) -> None:
    edge = url_secret_edge
    upstream.reset()
    good = orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "hello"}}]}]}]})
    assert edge.request("POST", "/v1/logs", good, {"Content-Type": "application/json"}).status == 200
    assert edge.request("POST", "/v1/traces", b"{}", {"Content-Type": "application/json"}).status == 200
    assert edge.request("GET", f"/passthrough/path?api_key={CLIENT_KEY}&x=1").status == 200
    upstream.reset(close=True)  # a failing upstream: its error is logged at debug level
    edge.request("POST", f"/v1/metrics?api_key={CLIENT_KEY}", b"{}", {"Content-Type": "application/json"})
    upstream.reset()
    assert edge.request("POST", "/v1/logs", good, {"Content-Type": "application/json"}).status == 200
    [logs_request] = upstream.received("/logs-intake/v1/logs")
    assert logs_request.header("authorization") == basic("dd", LOGS_PASS), "logs_url credentials must still be sent"
    upstream.reset()
    edge.request("GET", f"/passthrough/path?api_key={CLIENT_KEY}&x=1")
    [passed] = upstream.received("/passthrough/path")
    assert passed.query == f"api_key={CLIENT_KEY}&x=1", "a client's query goes upstream verbatim"
    assert passed.header("authorization") == basic("edge", UPSTREAM_PASS)
    answers = b"".join(edge.request("GET", p).body for p in ("/_edge/policies", "/_edge/policies?format=json",
                                                             "/_edge/metrics"))
    assert b"archived at https://***@archive.example/x?token=***" in answers
    assert wait_for(lambda: "traces http://***@127.0.0.1" in edge.log_path.read_text(errors="replace")), \
        "the ready line names the upstreams, redacted"
    log = edge.log_path.read_text(errors="replace")
    for secret in URL_SECRETS:
        assert secret not in log, f"{secret} leaked into the log"
        assert secret.encode() not in answers, f"{secret} leaked into an admin answer"


def test_a_config_error_quoting_a_url_shows_no_credentials(tmp_path: Path) -> None:
    """Config errors are printed before logging starts; they are redacted all the same."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"upstream_url": "ftp://user:hunter2@collector/?api_key=abc123"}))
    done = subprocess.run([str(EDGE_SCRIPT), str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr == "edge: config key upstream_url: expected an http(s) URL, got 'ftp://***@collector/?api_key=***'\n"


class BrokenRuntime:
    """A runtime whose snapshot cannot be read: every route must still forward what it got."""

    def engine(self) -> None:
        raise OSError("snapshot segment gone")


def test_a_big_compressed_body_is_forwarded_unmodified_when_the_engine_fails() -> None:
    route = OtlpRoute.__new__(OtlpRoute)
    route.signal, route.runtime, route.max_decoded = "log", BrokenRuntime(), 1 << 20
    route.route, route.metrics, route.reject = "otlp_logs", get_metrics(), False
    gzipped = request_head([(b"content-type", b"application/json"), (b"content-encoding", b"gzip")])
    body = encode(b"x" * OFFLOAD_BYTES, GZIP) + b"x" * OFFLOAD_BYTES  # big enough to decode off the loop
    assert asyncio.run(route.filter_off_loop(body, gzipped)) == body
