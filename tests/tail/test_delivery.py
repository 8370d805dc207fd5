"""Forwarding limits: refused batches go to a dead-letter file, --max-retries, and SIGTERM with the target down."""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import Tailer, terminate, wait_until, write_lines
from tests.tail.test_parsed_records import records


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def dead_letters(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "state" / "dead-letter"
    return sorted(directory.iterdir()) if directory.exists() else []


def bodies_in(path: Path) -> list[str]:
    message = ExportLogsServiceRequest.FromString(gzip.decompress(path.read_bytes()))
    return [r.body.string_value for rl in message.resource_logs for sl in rl.scope_logs for r in sl.log_records]


def forward_args(src: Path, upstream: RecordingUpstream, *extra: str) -> list[str]:
    return [str(src), "--read-from", "checkpoint", "--forward-url", f"{upstream.url}/v1/logs",
            "--batch-interval-ms", "20", *extra]


def test_refused_batch_goes_to_dead_letter_once_and_tailing_goes_on(tmp_path: Path,
                                                                    upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    write_lines(src, ["bad 1", "bad 2", "bad 3"])
    upstream.reset(status=400)
    with Tailer(tmp_path, forward_args(src, upstream)) as tailer:
        assert wait_until(lambda: dead_letters(tmp_path)), tailer.stderr()
        [letter] = dead_letters(tmp_path)
        assert bodies_in(letter) == ["bad 1", "bad 2", "bad 3"]
        assert letter.name.endswith("-HTTP-400.otlp.pb.gz")
        message = (f"3 lines not delivered to {upstream.url}/v1/logs (HTTP 400, the target refused it); "
                   f"the batch is in {letter}")
        assert wait_until(lambda: message in tailer.stderr()), tailer.stderr()
        assert len(upstream.received()) == 1  # not retried
        upstream.reset(status=200)
        write_lines(src, ["good"])
        assert wait_until(lambda: [r.body.string_value for r in records(upstream)] == ["good"]), tailer.stderr()
        tailer.stop()
    assert tailer.stderr().count("not delivered") == 1


def test_max_retries_then_dead_letter(tmp_path: Path, upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    write_lines(src, ["flaky"])
    upstream.reset(status=503)
    with Tailer(tmp_path, forward_args(src, upstream, "--max-retries", "2", "--retry-backoff-ms", "10")) as tailer:
        assert wait_until(lambda: dead_letters(tmp_path)), tailer.stderr()
        # the line is logged once the dead letter is written: wait for it, as for the file
        assert wait_until(lambda: "(HTTP 503, still failing after 2 retries)" in tailer.stderr()), tailer.stderr()
        assert len(upstream.received()) == 3
        tailer.stop()


def test_sigterm_with_a_request_in_flight_exits_promptly_and_keeps_the_checkpoint(
        tmp_path: Path, upstream: RecordingUpstream) -> None:
    """The target holds the request; SIGTERM still ends the process (the issue asks for 2 s; 10 s is the hang
    bound here), and the next start sends the lines once the target answers."""
    src = tmp_path / "app.log"
    write_lines(src, ["one", "two"])
    release = threading.Event()
    upstream.reset(hold=release)
    tailer = Tailer(tmp_path, forward_args(src, upstream)).start()
    try:
        assert wait_until(lambda: upstream.received()), tailer.stderr()
        assert tailer.proc is not None
        start = time.monotonic()
        assert terminate(tailer.proc, tailer.stderr, timeout=10) == 0
        print(f"SIGTERM to exit with the request in flight: {(time.monotonic() - start) * 1000:.0f} ms")
    finally:
        release.set()
        tailer.kill()
    upstream.reset()
    with Tailer(tmp_path, forward_args(src, upstream)) as again:
        assert wait_until(lambda: [r.body.string_value for r in records(upstream)] == ["one", "two"]), again.stderr()
        again.stop()


def test_startup_connectivity_check_is_logged_not_fatal(tmp_path: Path, upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    write_lines(src, ["x"])
    url = f"{upstream.url}/v1/logs"
    with Tailer(tmp_path, forward_args(src, upstream)) as tailer:
        assert wait_until(lambda: f"forward target {url} reachable at 127.0.0.1:{upstream.port}" in tailer.stderr())
        assert wait_until(lambda: records(upstream)), tailer.stderr()
        tailer.stop()
    upstream.stop()
    (tmp_path / "state").rename(tmp_path / "old-state")
    with Tailer(tmp_path, forward_args(src, upstream)) as tailer:
        needle = f"forward target {url} is not reachable at start-up (ConnectionRefusedError: "
        assert wait_until(lambda: needle in tailer.stderr()), tailer.stderr()
        assert tailer.proc is not None and tailer.proc.poll() is None  # still running, waiting for the target
        tailer.stop()
