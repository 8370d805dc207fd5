"""A scrape far larger than memory should hold, through the real `edge` command.

The upstream generates a ~210 MB exposition on the fly (one 1 MiB block of realistic
families sent again and again, chunked), edge filters it with file-provided metric policies
and byte limits switched off, and the test reads the response as a stream. The resident
memory of the whole instance (supervisor, gunicorn master, workers) is sampled throughout
and must grow by less than 50 MB; the output must be exactly the filtered blocks.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from edge.formats.prometheus.exposition import ScrapeFilter
from tests.engine_helpers import clean_engine
from tests.waiting import wait_for

BLOCKS = 210  # x ~1 MiB
POLICIES = [
    {"id": "drop-debug", "metric": {"match": [{"metric_field": "name", "starts_with": "debug_"}], "keep": False}},
    {"id": "drop-health", "metric": {"match": [{"datapoint_attribute": "handler", "exact": "/healthz"}],
                                     "keep": False}},
    {"id": "drop-fine-buckets", "metric": {"match": [{"metric_field": "name", "ends_with": "_bucket"},
                                                     {"datapoint_attribute": "le", "exact": "0.005"}],
                                           "keep": False}},
    {"id": "keep-http", "metric": {"match": [{"metric_field": "name", "starts_with": "http_"}], "keep": True}},
]


def make_block(size: int = 1 << 20) -> bytes:
    """About `size` bytes of exposition: counters, histograms and debug gauges with labels."""
    rng = random.Random(5)
    lines: list[str] = []
    family = 0
    while sum(map(len, lines)) + len(lines) < size - 4096:
        family += 1
        name = ("http_requests", "http_latency_seconds", "debug_queue_depth")[family % 3] + f"_{family}"
        kind = ("counter", "histogram", "gauge")[family % 3]
        lines += [f"# HELP {name} Family {family}.", f"# TYPE {name} {kind}"]
        for s in range(40):
            labels = f'handler="{rng.choice(["/api", "/login", "/healthz"])}",instance="10.1.{s}.{family % 250}:9100"'
            if kind == "histogram":
                lines += [f'{name}_bucket{{{labels},le="{le}"}} {rng.randrange(9999)}' for le in
                          ("0.005", "0.05", "0.5", "5", "+Inf")]
                lines += [f"{name}_sum{{{labels}}} {rng.random():.4f}", f"{name}_count{{{labels}}} 9999"]
            else:
                lines.append(f"{name}{{{labels}}} {rng.randrange(10**6)}")
    return ("\n".join(lines) + "\n").encode()


class Generator(ThreadingHTTPServer):
    """Serves `GET /metrics?blocks=N`: N copies of the block, written as they are produced."""

    daemon_threads = True

    def __init__(self, block: bytes) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                blocks = int(self.path.rpartition("blocks=")[2] or 1)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                chunk = b"%x\r\n%s\r\n" % (len(server.block), server.block)
                try:
                    for _ in range(blocks):
                        self.wfile.write(chunk)
                    self.wfile.write(b"0\r\n\r\n")
                except OSError:
                    pass

        self.block = block
        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def edge_command() -> list[str]:
    script = Path(sys.executable).with_name("edge")
    return [str(script)] if script.exists() else [sys.executable, "-m", "supervisor.main"]


def instance_rss(root: int) -> int:
    """Resident bytes of `root` and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return total


@pytest.fixture
def generator() -> Iterator[Generator]:
    server = Generator(make_block())
    yield server
    server.shutdown()


def test_a_200_mb_scrape_streams_through_edge_in_bounded_memory(tmp_path: Path, generator: Generator) -> None:
    block = generator.block
    expected_block = _filtered(block)
    assert 0.3 * len(block) < len(expected_block) < 0.9 * len(block)
    upstream = f"http://127.0.0.1:{generator.server_address[1]}"
    port = free_port()
    (tmp_path / "policies.json").write_text(json.dumps({"policies": POLICIES}))
    config = {"listen_port": port, "workers": 2, "upstream_url": upstream, "metrics_url": upstream,
              "grpc": {"enabled": False}, "log_level": "warn", "upstream_timeout": 20,
              "prometheus": {"max_input_bytes_per_scrape": 0, "max_output_bytes_per_scrape": 0},
              "policy_providers": [{"id": "f", "type": "file", "path": str(tmp_path / "policies.json")}]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    log = open(tmp_path / "edge.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([*edge_command(), str(tmp_path / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_policies(port, len(POLICIES), proc, tmp_path)
        for _ in range(2):  # warm both workers: imports, per-snapshot caches, connection pools
            assert _scrape(port, 3) == (3 * len(expected_block), True)
        baseline = instance_rss(proc.pid)
        peak = [baseline]
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], instance_rss(proc.pid))
                time.sleep(0.1)  # the sampling rate of the measurement (not synchronisation)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        started = time.monotonic()
        size, exact = _scrape(port, BLOCKS, expected_block)
        elapsed = time.monotonic() - started
        done.set()
        sampler.join()
        assert size == BLOCKS * len(expected_block) and exact
        growth = peak[0] - baseline
        print(f"\n{BLOCKS * len(block) / 1e6:.0f} MB in, {size / 1e6:.0f} MB out in {elapsed:.1f} s; "
              f"RSS {baseline / 1e6:.0f} MB -> peak {peak[0] / 1e6:.0f} MB")
        assert growth < 50e6, f"RSS grew by {growth / 1e6:.0f} MB"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        finally:
            log.close()


def _filtered(block: bytes) -> bytes:
    """What edge must send for one block (checked to be the same for every repetition)."""
    scrape = ScrapeFilter(clean_engine(POLICIES))
    once = scrape.feed(block)
    assert scrape.feed(block) == once
    return once


def _scrape(port: int, blocks: int, expected_block: bytes | None = None) -> tuple[int, bool]:
    """(bytes received, whether every block came out exactly filtered), read as a stream."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", f"/metrics?blocks={blocks}")
        response = conn.getresponse()
        assert response.status == 200
        size, exact, pending = 0, True, b""
        while chunk := response.read(1 << 20):
            size += len(chunk)
            if expected_block is not None:
                pending += chunk
                while len(pending) >= len(expected_block):
                    exact = exact and pending[:len(expected_block)] == expected_block
                    pending = pending[len(expected_block):]
        return size, exact and not pending
    finally:
        conn.close()


def _wait_for_policies(port: int, count: int, proc: subprocess.Popen[bytes], tmp_path: Path) -> None:
    def loaded() -> bool:
        assert proc.poll() is None, (tmp_path / "edge.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_edge/policies?format=json", timeout=2) as resp:
                return len(json.loads(resp.read()).get("policies") or []) == count
        except OSError:
            return False

    assert wait_for(loaded, 30, 0.1), "edge did not load the policies: " + (tmp_path / "edge.log").read_text()
