"""The HTTP worker class (`workers.http_worker`): framing, the request-head limits, refusals in order.

Real gunicorn workers of the supervisor's class with gunicorn's default limits (request target
4094 bytes, 100 header fields of 8190 bytes), raw bytes on a socket, a recording upstream.
"""

from __future__ import annotations

import http.client
import re
import socket
from collections.abc import Iterator

import pytest

from tests.proxy_fixtures import EdgeStack, RecordingUpstream, request
from tests.reliability.harness import raw_exchange

BODY = b'{"resourceLogs":[]}'


def statuses(raw: bytes) -> list[int]:
    """Every response's status, also where one follows a body without a line break (pipelined answers)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


@pytest.fixture(scope="module")
def edge(upstream: RecordingUpstream) -> Iterator[EdgeStack]:
    stack = EdgeStack(upstream.url, None, workers=1)
    try:
        yield stack.start()
    finally:
        stack.close()


@pytest.fixture(autouse=True)
def _fresh_upstream(upstream: RecordingUpstream) -> None:
    upstream.reset()


def post(body: bytes = BODY, *headers: bytes) -> bytes:
    return b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + b"".join(
        h + b"\r\n" for h in headers) + b"\r\n" + body


SMUGGLING = {
    "length and chunked": post(b"0\r\n\r\n", b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    "two lengths": post(BODY, b"Content-Length: %d" % len(BODY), b"Content-Length: 3"),
    "chunked not last": post(b"0\r\n\r\n", b"Transfer-Encoding: chunked, identity"),
    "space before the colon": post(b"0\r\n\r\n", b"Transfer-Encoding : chunked"),
    "folded header": post(b"0\r\n\r\n", b"X-Folded: a", b" Transfer-Encoding: chunked"),
    "bare LF": b"POST /v1/logs HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}",
    "bad chunk size": post(b"5;\x00\r\nhello\r\n0\r\n\r\n", b"Transfer-Encoding: chunked"),
}


@pytest.mark.parametrize("raw", SMUGGLING.values(), ids=SMUGGLING.keys())
def test_ambiguous_framing_is_refused_and_never_forwarded(edge: EdgeStack, upstream: RecordingUpstream,
                                                          raw: bytes) -> None:
    answer, closed = raw_exchange(edge.port, raw + b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
    assert statuses(answer) == [400] and closed, answer
    assert upstream.received() == []


@pytest.mark.parametrize(("head", "status"), [
    (b"GET /" + b"p" * 4100 + b" HTTP/1.1\r\nHost: x", 414),
    (b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-F%d: v\r\n" % i for i in range(100)), 431),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 8200, 431),
])
def test_heads_over_gunicorns_limits_are_refused(edge: EdgeStack, upstream: RecordingUpstream, head: bytes,
                                                 status: int) -> None:
    answer, closed = raw_exchange(edge.port, head.rstrip(b"\r\n") + b"\r\n\r\n")
    assert statuses(answer) == [status] and closed, answer[:200]
    assert answer.endswith(b'"}')  # a JSON error body, as edge's other refusals
    assert upstream.received() == []


def test_heads_within_the_limits_are_forwarded(edge: EdgeStack, upstream: RecordingUpstream) -> None:
    fields = {f"X-F{i}": "v" for i in range(98)}  # with Host and Accept-Encoding: 100
    reply = request(edge.port, "GET", "/" + "p" * 4000, headers={**fields, "Accept-Encoding": "identity"})
    assert reply.status == 200
    reply = request(edge.port, "GET", "/", headers={"X-Big": "b" * 8100})
    assert reply.status == 200
    assert [len(r.path) for r in upstream.received()] == [4001, 1]


def test_a_field_that_never_ends_is_refused_while_it_arrives(edge: EdgeStack) -> None:
    """httptools hands a field over only once it is whole: the bytes of an open head are bounded instead."""
    with socket.create_connection(("127.0.0.1", edge.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        with pytest.raises(OSError):  # reset or broken pipe once refused (a few MB sit in socket buffers)
            for _ in range(1024):  # 64 MB
                sock.sendall(b"e" * 65536)


def test_junk_behind_a_request_in_flight_is_refused_after_its_answer(edge: EdgeStack,
                                                                     upstream: RecordingUpstream) -> None:
    upstream.reset(delay=0.3)  # the junk is parsed while the first requests are still upstream
    valid = post(BODY, b"Content-Length: %d" % len(BODY))
    answer, closed = raw_exchange(edge.port, valid + valid + b"\x00junk\r\n\r\n")
    assert statuses(answer) == [200, 200, 400] and closed, answer
    assert len(upstream.received("/v1/logs")) == 2


def test_keep_alive_serves_requests_one_after_another_on_a_connection(edge: EdgeStack) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=5)
    try:
        sockets = []
        for _ in range(3):
            conn.request("POST", "/v1/logs", BODY, {"Content-Type": "application/json"})
            sockets.append(conn.sock)
            reply = conn.getresponse()
            assert (reply.status, reply.read(), reply.will_close) == (200, b'{"partialSuccess":{}}', False)
        assert len(set(map(id, sockets))) == 1  # one connection carried all three
    finally:
        conn.close()


def test_an_upgrade_is_served_as_a_plain_request_and_ends_the_connection(edge: EdgeStack,
                                                                        upstream: RecordingUpstream) -> None:
    head = b"GET /socket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    answer, closed = raw_exchange(edge.port, head)
    assert statuses(answer) == [200] and closed, answer
    [got] = upstream.received("/socket")
    assert got.header("upgrade") is None


def test_responses_carry_one_date_and_the_upstreams_server(edge: EdgeStack) -> None:
    reply = request(edge.port, "POST", "/v1/logs", BODY, {"Content-Type": "application/json"})
    names = [name.lower() for name, _ in reply.headers]
    assert names.count("date") == 1 and names.count("server") == 1
    assert "aiohttp" in reply.header("server")  # the recording upstream's, relayed
    local = request(edge.port, "GET", "/_health")
    assert [name.lower() for name, _ in local.headers].count("date") == 1 and local.header("server") is None
