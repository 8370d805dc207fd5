"""Policy providers against real files and a real sync server on 127.0.0.1 (docs/policies.md §10)."""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from edge.config import ProviderConfig, ServiceConfig
from edge.control.file_provider import FileProvider
from edge.control.http_provider import BACKOFF_CAP_MIN_S, HttpProvider, backoff_delay
from edge.control.merger import PolicyMerger, policies_version
from edge.control.providers import ProviderSet
from edge.engine.stats import MatchStats
from edge.policy.loader import load_document
from edge.policy.sync import JSON, PROTOBUF
from edge.proto.tero.policy.v1 import policy_pb2 as pb
from tests.waiting import wait_for

SECRET = "s3cret-token-value"
HANG = 20.0  # seconds: bounds a hang only; every condition waited on holds in milliseconds


def pol(pid: str, name: str = "") -> dict:
    return {"id": pid, "name": name or pid,
            "log": {"match": [{"log_field": "body", "contains": pid}], "keep": "none"}}


def doc(*ids: str) -> bytes:
    return orjson.dumps({"policies": [pol(i) for i in ids]})


def decoded(*policies: dict) -> list[pb.Policy]:
    return load_document({"policies": list(policies)}).policies


class Recorder:
    """The on_update callback: records (provider id, sorted ids, names, when)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[str], dict[str, str], float]] = []
        self._cond = threading.Condition()

    def __call__(self, provider_id: str, policies: list[pb.Policy]) -> None:
        with self._cond:
            self.calls.append((provider_id, sorted(p.id for p in policies), {p.id: p.name for p in policies},
                               time.monotonic()))
            self._cond.notify_all()

    def wait(self, count: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: len(self.calls) >= count, timeout)

    @property
    def ids(self) -> list[list[str]]:
        return [c[1] for c in self.calls]


def count_checks(provider: FileProvider) -> list[float]:
    """When each of the provider's checks (read the file, deliver if changed) began, appended as it
    ends: a test waits for a check that began after its last write instead of sleeping."""
    began: list[float] = []
    check = provider.check

    def counted() -> bool:
        started = time.monotonic()
        try:
            return check()
        finally:
            began.append(started)

    provider.check = counted  # type: ignore[method-assign]
    return began


def checked_since(began: list[float], moment: float, times: int = 1) -> bool:
    """Whether `times` checks began after `moment` and have ended (they read what was there then)."""
    return sum(1 for at in list(began) if at > moment) >= times


def without_poll(provider: FileProvider) -> FileProvider:
    """No poll fallback (an hour between polls): within a test only the watcher can see a change."""
    provider.poll_s = 3600.0
    return provider


@pytest.fixture
def started() -> Iterator[Callable]:
    providers: list = []

    def start(provider):
        providers.append(provider)
        provider.start()
        return provider

    yield start
    for provider in providers:
        provider.stop()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="edge.providers")
    return caplog


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def file_provider(path: Path, recorder: Recorder, poll: float = 0.2) -> FileProvider:
    return FileProvider(ProviderConfig("f", "file", path=str(path), poll_interval=poll), recorder)


# ── file provider ───────────────────────────────────────────────────────────


def test_file_initial_load(tmp_path: Path, started) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a", "b"))
    rec = Recorder()
    provider = started(file_provider(path, rec))
    assert provider.wait_ready(HANG)
    assert rec.wait(1, HANG)
    assert rec.calls[0][:2] == ("f", ["a", "b"])


def test_file_rewrite_seen_by_the_watcher(tmp_path: Path, started) -> None:
    """With the poll fallback off, a rewrite is still seen: the watcher reacts (how fast is measured
    by benchmarks/latency.py against the README's 2 s)."""
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    started(without_poll(file_provider(path, rec)))
    assert rec.wait(1, HANG)
    path.write_bytes(doc("a", "b"))
    assert rec.wait(2, HANG), "the watcher did not see the rewrite"
    assert rec.ids[1] == ["a", "b"]


def test_file_rename_replace_seen_by_the_watcher(tmp_path: Path, started) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    started(without_poll(file_provider(path, rec)))
    assert rec.wait(1, HANG)
    for round_, ids in enumerate([("b",), ("b", "c")], start=2):
        tmp = tmp_path / f".policies.json.tmp{round_}"
        tmp.write_bytes(doc(*ids))
        os.replace(tmp, path)
        assert rec.wait(round_, HANG), f"replacement {round_} not seen"
        assert rec.ids[-1] == list(ids)


def test_file_identical_content_gives_no_second_update(tmp_path: Path, started) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    provider = file_provider(path, rec)
    checks = count_checks(provider)
    started(provider)
    assert rec.wait(1, HANG)
    path.write_bytes(doc("a"))  # same bytes, new mtime and events
    tmp = tmp_path / "tmp.json"
    tmp.write_bytes(doc("a"))
    os.replace(tmp, path)
    written = time.monotonic()
    assert wait_for(lambda: checked_since(checks, written, 2), HANG)  # it has read the file since
    assert len(rec.calls) == 1


def test_file_broken_keeps_last_good_then_fix_applies(tmp_path: Path, started, logs) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    provider = file_provider(path, rec)
    checks = count_checks(provider)
    started(provider)
    assert rec.wait(1, HANG)
    path.write_bytes(b'{"policies": [')
    assert wait_for(lambda: warnings_with(logs, "neither JSON nor YAML"), HANG)
    written = time.monotonic()
    # several polls and events later: still one warning, no update
    assert wait_for(lambda: checked_since(checks, written, 3), HANG)
    assert len(warnings_with(logs, "neither JSON nor YAML")) == 1
    assert len(rec.calls) == 1
    path.write_bytes(doc("a", "fixed"))
    assert rec.wait(2, HANG)
    assert rec.ids[1] == ["a", "fixed"]
    assert provider.running


def test_file_missing_at_start_then_created(tmp_path: Path, started, logs) -> None:
    path = tmp_path / "later.yaml"
    rec = Recorder()
    provider = file_provider(path, rec)
    checks = count_checks(provider)
    started(provider)
    assert provider.wait_ready(HANG)
    assert wait_for(lambda: len(checks) >= 3, HANG)  # several polls of the missing file
    assert rec.calls == []
    assert len(warnings_with(logs, "cannot read")) == 1  # one warning, not one per poll
    path.write_bytes(doc("late"))
    assert rec.wait(1, HANG)
    assert rec.ids == [["late"]]


def test_file_deleted_keeps_last_good(tmp_path: Path, started, logs) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    provider = file_provider(path, rec)
    checks = count_checks(provider)
    started(provider)
    assert rec.wait(1, HANG)
    path.unlink()
    assert wait_for(lambda: warnings_with(logs, "cannot read"), HANG)
    path.write_bytes(doc("a"))  # back with the same content: nothing to recompile
    written = time.monotonic()
    assert wait_for(lambda: checked_since(checks, written), HANG)  # it has read the file since
    assert len(rec.calls) == 1


def test_file_truncated_to_empty_keeps_last_good(tmp_path: Path, started, logs) -> None:
    """A writer caught between truncate and write must not drop every policy."""
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    started(file_provider(path, rec))
    assert rec.wait(1, HANG)
    path.write_bytes(b"")
    assert wait_for(lambda: warnings_with(logs, "is empty"), HANG)
    path.write_bytes(orjson.dumps({"policies": []}))  # the explicit way to say "no policies"
    assert rec.wait(2, HANG)
    assert rec.ids == [["a"], []]


def test_file_in_a_directory_created_later_then_watched(tmp_path: Path, started) -> None:
    """The poll finds the directory once it exists; from then on the watcher sees changes alone."""
    path = tmp_path / "sub" / "policies.json"
    rec = Recorder()
    provider = file_provider(path, rec)
    checks = count_checks(provider)
    started(provider)
    assert provider.wait_ready(HANG)
    path.parent.mkdir()
    path.write_bytes(doc("a"))
    assert rec.wait(1, HANG)
    # Turn the poll off: the check under way (or the one a pending poll starts) is the last one
    # before an hour-long wait, so what is seen after it ends is the watcher's doing.
    done = len(checks)
    without_poll(provider)
    assert wait_for(lambda: len(checks) > done, HANG)
    path.write_bytes(doc("a", "b"))
    assert rec.wait(2, HANG), "the directory created later is not watched"
    assert rec.ids[1] == ["a", "b"]


def test_file_yaml(tmp_path: Path, started) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text("policies:\n  - id: y1\n    name: Y\n    log:\n      match:\n"
                    "        - log_field: body\n          contains: x\n      keep: none\n")
    rec = Recorder()
    started(file_provider(path, rec))
    assert rec.wait(1, HANG)
    assert rec.ids == [["y1"]]


def test_file_policy_decode_errors_are_logged_and_the_rest_applies(tmp_path: Path, started, logs) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(orjson.dumps({"policies": [pol("good"), 42]}))
    rec = Recorder()
    started(file_provider(path, rec))
    assert rec.wait(1, HANG)
    assert rec.ids == [["good"]]
    assert warnings_with(logs, "policy #1: cannot decode")


def test_file_callback_error_does_not_kill_the_thread(tmp_path: Path, started, logs) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    rec = Recorder()
    attempts = []

    def flaky(provider_id: str, policies: list[pb.Policy]) -> None:
        attempts.append(provider_id)
        if len(attempts) == 1:
            raise RuntimeError("boom")
        rec(provider_id, policies)

    provider = started(FileProvider(ProviderConfig("f", "file", path=str(path), poll_interval=0.2), flaky))
    assert rec.wait(1, HANG), "the delivery was not retried after the callback failed"
    assert rec.ids == [["a"]]
    assert provider.running
    assert any("boom" in (r.exc_text or "") or r.exc_info for r in logs.records)


def test_file_provider_does_not_chase_its_own_reads(tmp_path: Path, started) -> None:
    """Reading the file raises opened/closed events in the watched directory; they must not trigger reads."""
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    opened: list[str] = []

    class Opens(FileSystemEventHandler):
        def on_opened(self, event: FileSystemEvent) -> None:
            if os.fsdecode(event.src_path) == str(path):
                opened.append(event.event_type)

    spy = Observer()
    spy.schedule(Opens(), str(tmp_path), recursive=False)
    spy.start()
    try:
        rec = Recorder()
        started(without_poll(file_provider(path, rec)))  # no poll: any read now is a chase
        assert rec.wait(1, HANG)
        assert wait_for(lambda: opened, HANG)  # the spy saw the first read
        # a provider chasing its own reads reads again at once, over and over: a bounded look
        assert not wait_for(lambda: len(opened) > 2, 1.0), f"the file was read {len(opened)} times while idle"
    finally:
        spy.stop()
        spy.join(1)


def test_file_provider_stops_promptly(tmp_path: Path) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(doc("a"))
    provider = without_poll(file_provider(path, Recorder()))  # an hour-long wait that stop must cut short
    provider.start()
    assert provider.wait_ready(HANG)
    provider.stop(timeout=HANG)
    assert not provider.running


# ── sync server ─────────────────────────────────────────────────────────────


@dataclass
class Seen:
    at: float
    content_type: str
    headers: dict[str, str]
    request: pb.SyncRequest


class SyncServer:
    """A policy server: answers JSON or protobuf (like the request), records every request."""

    def __init__(self, ids: tuple[str, ...] = ("a", "b"), hash_: str = "h1", interval: int = 0) -> None:
        self.policies = [pol(i) for i in ids]
        self.hash = hash_
        self.interval = interval
        self.status = 200
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                server.handle(self, body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/policy/sync"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        content_type = handler.headers.get("Content-Type", "")
        protobuf = content_type == PROTOBUF
        request = pb.SyncRequest.FromString(body) if protobuf else json_format.Parse(body, pb.SyncRequest())
        with self.lock:
            self.seen.append(Seen(time.monotonic(), content_type, dict(handler.headers.items()), request))
            status, policies, hash_, interval = self.status, list(self.policies), self.hash, self.interval
        if status != 200:
            handler.send_response(status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        if protobuf:
            answer = pb.SyncResponse(policies=decoded(*policies), hash=hash_,
                                     recommended_sync_interval_seconds=interval).SerializeToString()
        else:
            answer = orjson.dumps({"policies": policies, "hash": hash_, "recommendedSyncIntervalSeconds": interval,
                                   "syncType": "SYNC_TYPE_FULL"})
        handler.send_response(200)
        handler.send_header("Content-Type", PROTOBUF if protobuf else JSON)
        handler.send_header("Content-Length", str(len(answer)))
        handler.end_headers()
        handler.wfile.write(answer)

    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[SyncServer]:
    srv = SyncServer()
    yield srv
    srv.close()


def http_config(url: str, poll: float = 0.2, headers: tuple[tuple[str, str], ...] = ()) -> ProviderConfig:
    return ProviderConfig("h", "http", url=url, headers=headers, poll_interval=poll)


def status_of(request: pb.SyncRequest, pid: str) -> pb.PolicySyncStatus | None:
    return next((s for s in request.policy_statuses if s.id == pid), None)


# ── http provider ───────────────────────────────────────────────────────────


def test_http_json_sync_with_headers_and_metadata(server: SyncServer, started) -> None:
    rec = Recorder()
    config = http_config(server.url, headers=(("Authorization", f"Bearer {SECRET}"), ("X-Tenant", "t1")))
    started(HttpProvider(config, rec, service=ServiceConfig(name="svc", instance_id="i-1")))
    assert rec.wait(1, HANG)
    assert rec.calls[0][:2] == ("h", ["a", "b"])
    first = server.seen[0]
    assert first.content_type == JSON
    assert first.headers["Authorization"] == f"Bearer {SECRET}"
    assert first.headers["X-Tenant"] == "t1"
    assert first.request.full_sync
    attrs = {kv.key: kv.value.string_value for kv in first.request.client_metadata.resource_attributes}
    assert attrs["service.name"] == "svc"
    assert attrs["service.instance.id"] == "i-1"


def test_http_protobuf_wire(server: SyncServer, started) -> None:
    rec = Recorder()
    started(HttpProvider(http_config(server.url), rec, wire=PROTOBUF))
    assert rec.wait(1, HANG)
    assert rec.ids == [["a", "b"]]
    assert server.seen[0].content_type == PROTOBUF
    assert rec.calls[0][2] == {"a": "a", "b": "b"}


def test_http_configured_interval_vs_recommended(started) -> None:
    plain, recommending = SyncServer(interval=0), SyncServer(interval=1)
    try:
        fast = started(HttpProvider(http_config(plain.url, poll=0.2), Recorder()))
        slow = started(HttpProvider(http_config(recommending.url, poll=0.2), Recorder()))
        assert wait_for(lambda: recommending.count() >= 3, HANG)
        assert fast.interval == 0.2
        assert slow.interval == 1.0  # the server's 1 s replaced the configured 0.2 s...
        with recommending.lock:
            times = [seen.at for seen in recommending.seen]
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        assert all(gap >= 1.0 for gap in gaps), gaps  # ...and is waited (a wait is never shorter)
        # meanwhile the configured 0.2 s gave the other provider several syncs for each of these
        assert plain.count() >= 2 * recommending.count(), (plain.count(), recommending.count())
    finally:
        plain.close()
        recommending.close()


def test_http_same_hash_gives_no_update(server: SyncServer, started) -> None:
    rec = Recorder()
    started(HttpProvider(http_config(server.url), rec))
    assert rec.wait(1, HANG)
    assert wait_for(lambda: server.count() >= 4, HANG)
    assert len(rec.calls) == 1
    later = server.seen[1].request
    assert later.last_successful_hash == "h1"
    assert not later.full_sync
    with server.lock:  # new content, new hash: applied
        server.policies, server.hash = [pol("a"), pol("c")], "h2"
    assert rec.wait(2, HANG)
    assert rec.ids[1] == ["a", "c"]
    with server.lock:  # same content under a new hash: nothing to recompile
        server.hash = "h3"
    seen = server.count()
    assert wait_for(lambda: server.count() >= seen + 3, HANG)
    assert len(rec.calls) == 2


def test_http_failures_keep_policies_and_back_off(server: SyncServer, started, logs) -> None:
    rec = Recorder()
    config = http_config(server.url, headers=(("Authorization", f"Bearer {SECRET}"),))
    provider = started(HttpProvider(config, rec, backoff_base=0.05, rng=random.Random(0)))
    # the delays a seeded provider draws after its 1st..6th failure: full jitter under 0.05 * 2**(n-1)
    rng = random.Random(0)
    delays = [backoff_delay(n, 0.05, BACKOFF_CAP_MIN_S, rng) for n in range(1, 7)]
    assert all(0 <= d <= 0.05 * 2 ** i for i, d in enumerate(delays))
    assert sum(delays[-2:]) > 3 * sum(delays[:2])  # the seed's schedule slows down: the test can see it
    assert rec.wait(1, HANG)
    with server.lock:
        server.status = 503
        before = len(server.seen)
    assert wait_for(lambda: server.count() >= before + 7, HANG)
    with server.lock:
        times = [s.at for s in server.seen[before:before + 7]]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # each retry waited its drawn delay (a wait is never shorter; a busy machine only makes it longer;
    # 1 ms for clock rounding)
    assert all(gap >= delay - 0.001 for gap, delay in zip(gaps, delays, strict=True)), (gaps, delays)
    assert re.findall(r"retry in ([0-9.]+)s", logs.text)[:6] == [f"{d:.1f}" for d in delays], logs.text
    assert provider.failures >= 6
    assert len(rec.calls) == 1  # the last good policies stay, no empty set is delivered
    assert warnings_with(logs, "HTTP 503")
    assert SECRET not in logs.text


def test_http_server_down_keeps_last_policies(started, logs) -> None:
    srv = SyncServer()
    rec = Recorder()
    provider = started(HttpProvider(http_config(srv.url), rec, backoff_base=0.05))
    assert rec.wait(1, HANG)
    srv.close()
    assert wait_for(lambda: provider.failures >= 2, HANG)
    assert len(rec.calls) == 1
    assert warnings_with(logs, "unreachable")
    assert provider.running


def test_http_stats_drained_into_policy_statuses(server: SyncServer) -> None:
    stats = MatchStats()
    errors = {"b": ['log: match[0]: invalid regex "(["'], "elsewhere": ["not ours"]}
    provider = HttpProvider(http_config(server.url), Recorder(), stats_source=stats.drain,
                            stats_return=stats.merge, errors_source=lambda: errors)
    assert provider.sync_once()  # learns which policies are this server's
    stats.add("a", 3, 1)
    stats.add_stage("a", "redact", 2, 0)
    stats.add("not-from-this-server", 5, 0)
    assert provider.sync_once()
    request = server.seen[-1].request
    a = status_of(request, "a")
    assert (a.match_hits, a.match_misses, a.redact.hits) == (3, 1, 2)
    assert list(status_of(request, "b").errors) == ['log: match[0]: invalid regex "(["']
    assert status_of(request, "not-from-this-server") is None
    assert status_of(request, "elsewhere") is None
    left = stats.snapshot()
    assert set(left) == {"not-from-this-server"}  # drained, and the foreign counts handed back
    assert left["not-from-this-server"].hits == 5


def test_http_failed_sync_hands_stats_back(server: SyncServer) -> None:
    stats = MatchStats()
    provider = HttpProvider(http_config(server.url), Recorder(), stats_source=stats.drain, stats_return=stats.merge)
    assert provider.sync_once()
    stats.add("a", 7, 2)
    stats.add_stage("a", "rename", 1, 1)
    server.status = 500
    assert not provider.sync_once()
    assert status_of(server.seen[-1].request, "a").match_hits == 7  # they were sent...
    left = stats.snapshot()["a"]  # ...and are back for the next attempt
    assert (left.hits, left.misses, left.stages["rename"]) == (7, 2, [1, 1])
    server.status = 200
    assert provider.sync_once()
    assert status_of(server.seen[-1].request, "a").match_hits == 7
    assert stats.snapshot() == {}


def test_final_sync_sends_pending_stats(server: SyncServer, started) -> None:
    stats = MatchStats()
    provider = started(HttpProvider(http_config(server.url, poll=60), Recorder(), stats_source=stats.drain,
                                    stats_return=stats.merge))
    assert provider.wait_ready(HANG)
    stats.add("b", 4, 0)
    assert provider.final_sync()
    assert server.count() == 2
    assert status_of(server.seen[-1].request, "b").match_hits == 4
    assert stats.snapshot() == {}


def test_final_sync_against_a_dead_server_keeps_stats(started) -> None:
    srv = SyncServer()
    stats = MatchStats()
    provider = started(HttpProvider(http_config(srv.url, poll=60), Recorder(), stats_source=stats.drain,
                                    stats_return=stats.merge))
    assert provider.wait_ready(HANG)
    srv.close()
    stats.add("a", 1, 1)
    assert not provider.final_sync(timeout=1.0)
    assert stats.snapshot()["a"].hits == 1


def test_backoff_delay_bounds() -> None:
    rng = random.Random(5)
    for failures in range(1, 12):
        bound = min(60.0, 2.0 ** (failures - 1))
        samples = [backoff_delay(failures, 1.0, 60.0, rng) for _ in range(200)]
        assert all(0.0 <= s <= bound for s in samples)
        assert max(samples) > bound * 0.8  # full jitter spans the whole range
    assert backoff_delay(10_000, 1.0, 60.0, rng) <= 60.0


# ── merger and provider set ─────────────────────────────────────────────────


class Changes:
    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, str], str]] = []

    def __call__(self, policies: list[pb.Policy], version: str) -> None:
        self.calls.append(({p.id: p.name for p in policies}, version))


CONFIGS = (ProviderConfig("f1", "file", path="one.json"), ProviderConfig("h1", "http", url="http://x"),
           ProviderConfig("f2", "file", path="two.json"), ProviderConfig("h2", "http", url="http://y"))


def test_merger_http_wins_over_file_then_config_order() -> None:
    changes = Changes()
    merger = PolicyMerger(changes, CONFIGS)
    merger.update("h1", decoded(pol("p", "from-h1")))
    merger.update("f1", decoded(pol("p", "from-f1"), pol("q", "from-f1")))
    assert changes.calls[-1][0] == {"p": "from-h1", "q": "from-f1"}
    merger.update("f2", decoded(pol("q", "from-f2"), pol("r", "from-f2")))
    assert changes.calls[-1][0] == {"p": "from-h1", "q": "from-f1", "r": "from-f2"}
    merger.update("h2", decoded(pol("p", "from-h2"), pol("q", "from-h2")))
    assert changes.calls[-1][0] == {"p": "from-h1", "q": "from-h2", "r": "from-f2"}
    merger.update("h1", [])
    assert changes.calls[-1][0] == {"p": "from-h2", "q": "from-h2", "r": "from-f2"}
    policies, version = merger.current()
    assert [p.id for p in policies] == ["p", "q", "r"]
    assert version == merger.version == changes.calls[-1][1]


def test_merger_version_is_stable_and_identical_sets_do_not_fire() -> None:
    one, two = Changes(), Changes()
    a, b = PolicyMerger(one, CONFIGS), PolicyMerger(two, CONFIGS)
    a.update("f1", decoded(pol("x"), pol("y")))
    a.update("h1", decoded(pol("z")))
    b.update("h1", decoded(pol("z")))
    b.update("f1", decoded(pol("y"), pol("x")))
    assert a.version == b.version
    assert len(a.version) == 16
    assert a.version == policies_version(decoded(pol("z"), pol("y"), pol("x")))
    fired = len(one.calls)
    assert not a.update("f1", decoded(pol("y"), pol("x")))  # same set, other order
    assert not a.update("f2", decoded(pol("x")))  # shadowed by f1's identical x
    assert len(one.calls) == fired
    assert a.update("f1", decoded(pol("x"), pol("y", "renamed")))
    assert a.version != b.version
    assert PolicyMerger(Changes()).version == policies_version([])


def test_merger_concurrent_updates() -> None:
    changes = Changes()
    merger = PolicyMerger(changes)
    barrier = threading.Barrier(8)

    def feed(n: int) -> None:
        barrier.wait()
        for round_ in range(20):
            merger.update(f"p{n}", decoded(pol(f"id{n}", f"r{round_}")))

    threads = [threading.Thread(target=feed, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final, version = changes.calls[-1]
    assert final == {f"id{n}": "r19" for n in range(8)}
    assert version == merger.version


def test_provider_set_end_to_end(tmp_path: Path, server: SyncServer) -> None:
    path = tmp_path / "policies.json"
    path.write_bytes(orjson.dumps({"policies": [pol("a", "from-file"), pol("local")]}))
    configs = (ProviderConfig("file", "file", path=str(path), poll_interval=0.2), http_config(server.url))
    merged: list[dict[str, str]] = []
    merger = PolicyMerger(lambda policies, version: merged.append({p.id: p.name for p in policies}))
    stats = MatchStats()
    providers = ProviderSet(configs, merger, stats_source=stats.drain, stats_return=stats.merge)
    providers.start()
    try:
        assert providers.wait_ready(HANG)
        assert wait_for(lambda: merged and merged[-1] == {"a": "a", "b": "b", "local": "local"}, HANG), merged
        stats.add("a", 2, 0)
        providers.stop()
        assert providers.final_sync()
        assert status_of(server.seen[-1].request, "a").match_hits == 2
    finally:
        providers.stop()
    assert not any(p.running for p in providers.providers)  # stop cut their waits short


def test_merger_load_errors_in_config_order_once_per_change_and_retried() -> None:
    """Every provider's errors, prefixed with its id in config order; an unchanged list is not
    delivered again, and a delivery that failed is retried by the next report."""
    delivered: list[list[str]] = []
    failing = [True]

    def publish(errors: list[str], publish: bool) -> None:
        if failing[0]:
            raise RuntimeError("sink is full")
        assert publish  # errors alone: nothing else would publish them
        delivered.append(errors)

    merger = PolicyMerger(Changes(), CONFIGS, on_load_errors=publish)
    merger.report_errors("h1", ["sync failed: policy server unreachable"])
    assert (delivered, merger.load_errors) == ([], [])  # the delivery failed: not recorded
    failing[0] = False
    merger.report_errors("h1", ["sync failed: policy server unreachable"])
    merger.report_errors("f2", ["two.json is empty; keeping the last good policies"])
    merger.report_errors("f2", ["two.json is empty; keeping the last good policies"])  # unchanged: no delivery
    merger.report_errors("h1", [])
    assert delivered == [
        ["provider h1: sync failed: policy server unreachable"],
        ["provider h1: sync failed: policy server unreachable",
         "provider f2: two.json is empty; keeping the last good policies"],
        ["provider f2: two.json is empty; keeping the last good policies"],
    ]
    assert merger.load_errors == delivered[-1]


def test_merger_errors_that_come_with_new_policies_travel_in_their_snapshot() -> None:
    """A provider that recovers reports its (cleared) errors and then its new policies: one snapshot,
    compiled with the errors, instead of one for the errors and another for the policies."""
    calls: list[tuple] = []
    merger = PolicyMerger(lambda policies, version: calls.append(("compile", [p.id for p in policies])), CONFIGS,
                          on_load_errors=lambda errors, publish: calls.append(("errors", errors, publish)))
    merger.report_errors("h1", ["sync failed: policy server unreachable"])
    merger.report_errors("h1", [], deliver=False)
    merger.update("h1", decoded(pol("a")))
    assert calls == [("errors", ["provider h1: sync failed: policy server unreachable"], True),
                     ("errors", [], False), ("compile", ["a"])]
