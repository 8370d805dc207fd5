"""A hostile or broken policy server against a real `edge`: credentials, memory and time stay bounded.

Each case was found against a running proxy: a 302 to another origin received the provider's
`Authorization` header; a 300 MB reply took the supervisor's memory from 36 MB to 888 MB; a
server dripping one byte at a time held the sync (and so every later policy update) forever.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psutil
import pytest

from tests.reliability.harness import EdgeProcess, FaultUpstream, PolicyServer, free_port, wait_for

SECRET = "Bearer s3cr3t-provider-token"
FIRST = [{"id": "drop-debug", "name": "drop debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}],
                                                            "keep": "none"}}]
SECOND = [*FIRST, {"id": "drop-trace", "name": "drop trace",
                   "log": {"match": [{"log_field": "severity_text", "exact": "TRACE"}], "keep": "none"}}]


class HostileServer(PolicyServer):
    """A sync endpoint whose answer is chosen per request by `mode` (`/moved` always answers well)."""

    def __init__(self) -> None:
        super().__init__(free_port(), FIRST)
        self.mode = "good"
        self.redirect_to = ""
        self.stop_dripping = threading.Event()
        self.dripping = threading.Event()  # set once a drip answer has begun
        self.start()

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        mode = "good" if handler.path == "/moved" else self.mode
        getattr(self, f"_{mode}")(handler)

    def _good(self, handler: BaseHTTPRequestHandler) -> None:
        super().answer(handler)

    def _redirect(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(302)
        handler.send_header("Location", self.redirect_to)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def _huge(self, handler: BaseHTTPRequestHandler) -> None:
        """300 MB of a JSON document that never closes, without a Content-Length."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Connection", "close")
        handler.end_headers()
        chunk = b'{"policies": [' + b" " * (1 << 20)
        try:
            for _ in range(300):
                handler.wfile.write(chunk)
        except OSError:
            pass  # the client stopped reading: that is the point

    def _drip(self, handler: BaseHTTPRequestHandler) -> None:
        """Headers at once, then one byte of the body every 0.5 s (each read is quick: no read timeout fires)."""
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", "100000")
        handler.end_headers()
        self.dripping.set()
        try:
            while not self.stop_dripping.wait(0.5):
                handler.wfile.write(b" ")
                handler.wfile.flush()
        except OSError:
            pass

    def stop(self) -> None:
        self.stop_dripping.set()
        super().stop()


@pytest.fixture
def hostile() -> Iterator[HostileServer]:
    server = HostileServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultUpstream]:
    up = FaultUpstream().start()
    yield up
    up.stop()


def _edge(tmp_path: Path, upstream: FaultUpstream, hostile: HostileServer) -> EdgeProcess:
    provider = {"id": "server", "type": "http", "url": hostile.url, "poll_interval": 1,
                "headers": [{"name": "Authorization", "value": SECRET}, {"name": "X-Api-Key", "value": "k-123"}]}
    return EdgeProcess(tmp_path, upstream.url, policies=[], workers=1, policy_providers=[provider])


def _policy_ids(edge: EdgeProcess) -> set[str]:
    return {p["id"] for p in edge.policy_doc().get("policies") or []}


def test_redirect_to_another_origin_is_refused_and_never_gets_the_credentials(tmp_path, upstream, hostile):
    elsewhere = HostileServer()
    try:
        hostile.mode = "redirect"
        hostile.redirect_to = elsewhere.url
        edge = _edge(tmp_path, upstream, hostile).start()
        try:
            assert wait_for(lambda: "redirected to another origin" in edge.log(), 20), edge.log()
            assert elsewhere.seen == [], "the other origin was contacted"
            assert edge.healthy()
        finally:
            edge.stop()
        assert SECRET not in edge.log()
    finally:
        elsewhere.stop()


def test_redirect_within_the_origin_is_followed_with_the_same_request(tmp_path, upstream, hostile):
    hostile.mode = "redirect"
    hostile.redirect_to = "/moved"
    edge = _edge(tmp_path, upstream, hostile).start()
    try:
        assert wait_for(lambda: _policy_ids(edge) == {"drop-debug"}, 20), edge.log()
        moved = [headers for path, headers, _ in hostile.seen if path == "/moved"]
        assert moved and moved[0].get("authorization") == SECRET
    finally:
        edge.stop()


def test_oversized_reply_is_refused_with_bounded_memory_and_the_last_good_policies_kept(tmp_path, upstream, hostile):
    edge = _edge(tmp_path, upstream, hostile).start()
    try:
        assert wait_for(lambda: _policy_ids(edge) == {"drop-debug"}, 20), edge.log()
        supervisor = psutil.Process(edge.pid)
        before = supervisor.memory_info().rss
        hostile.mode = "huge"
        assert wait_for(lambda: "max_response_bytes" in edge.log(), 30), edge.log()
        grown = supervisor.memory_info().rss - before
        assert grown < 64 << 20, f"the supervisor grew by {grown >> 20} MB reading a reply"
        assert _policy_ids(edge) == {"drop-debug"}
        assert edge.healthy()
    finally:
        edge.stop()


def test_a_dripping_server_cannot_hold_the_sync_past_its_deadline(tmp_path, upstream, hostile):
    edge = _edge(tmp_path, upstream, hostile).start()
    try:
        assert wait_for(lambda: _policy_ids(edge) == {"drop-debug"}, 20), edge.log()
        hostile.mode = "drip"
        # a sync is being dripped (waiting for a request to arrive is not enough: the handler picks
        # its answer a moment later and could already see the mode set back to "good" below)
        assert hostile.dripping.wait(20)
        dripping_since = time.monotonic()
        hostile.policies = SECOND
        hostile.mode = "good"  # the next sync would succeed, if the dripping one ever ended
        assert wait_for(lambda: _policy_ids(edge) == {"drop-debug", "drop-trace"}, 40), edge.log()
        assert "sync deadline" in edge.log()
        assert time.monotonic() - dripping_since < 40
    finally:
        edge.stop()
