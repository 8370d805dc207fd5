"""Real processes on loopback for the HTTP worker tests: a recording upstream and the worker stack.

`RecordingUpstream` is an aiohttp server in a background thread that records every request
(method, raw path, raw query, headers, raw body: it never decompresses) and answers with a
switchable behaviour (status and headers, a delay, closing the connection unanswered).

`EdgeStack` starts the HTTP workers exactly as the supervisor does: a run directory with the
resolved config and `runtime.json`, the snapshot control segment and rate-limit table in
shared memory, `EDGE_RUN_DIR` and `PROMETHEUS_MULTIPROC_DIR` in the environment, then
gunicorn with the supervisor's worker class and `workers.app:app`. Closing it stops gunicorn, unlinks
the shared memory and checks that nothing with the instance's prefix is left in /dev/shm.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from edge.channels.ratelimit import create_table
from edge.channels.run_dir import RUN_DIR_ENV, RuntimePaths
from edge.channels.snapshots import SnapshotPublisher
from edge.config import build
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from edge.policy.snapshot import Snapshot
from supervisor.main import WORKER_CLASS
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
HOLD_LIMIT = 60.0  # seconds a held upstream answer waits for its release at most (a test that forgot it)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ── the upstream ──


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)

    def header_names(self) -> set[str]:
        return {n.lower() for n, _ in self.headers}


@dataclass
class Behaviour:
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "application/json",
                                                             "X-Upstream": "recorder"})
    body: bytes = b'{"partialSuccess":{}}'
    delay: float = 0.0  # seconds before answering
    close: bool = False  # drop the connection without answering
    chunked: bool = False  # send the body with chunked transfer encoding
    hold: threading.Event | None = None  # answer only once this is set (at most HOLD_LIMIT seconds later)


class RecordingUpstream:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.behaviour = Behaviour()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="recording-upstream", daemon=True)

    def start(self) -> RecordingUpstream:
        for name in ("aiohttp.server", "aiohttp.access", "aiohttp.web"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the recording upstream did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def reset(self, **behaviour: Any) -> None:
        with self._lock:
            self.requests.clear()
            self.behaviour = Behaviour(**behaviour)

    def received(self, path_prefix: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(path_prefix)]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        raw = request.raw_path
        path, _, query = raw.partition("?")
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        with self._lock:
            self.requests.append(Recorded(request.method, path, query, headers, body))
            b = self.behaviour
        if b.hold is not None:  # a request held in flight for exactly as long as the test needs
            await asyncio.to_thread(b.hold.wait, HOLD_LIMIT)
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.close:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if b.chunked:
            response = web.StreamResponse(status=b.status, headers=b.headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for start in range(0, len(b.body), 1000):
                await response.write(b.body[start:start + 1000])
            await response.write_eof()
            return response
        return web.Response(status=b.status, headers=b.headers, body=b.body)


# ── the worker stack ──


def compile_snapshot(policies: list[dict[str, Any]], version: str = "test") -> Snapshot:
    loaded = load_document({"policies": policies})
    assert not loaded.errors, loaded.errors
    return compile_policies(loaded.policies, version=version, load_errors=loaded.errors)


class EdgeStack:
    def __init__(self, upstream_url: str, policies: list[dict[str, Any]] | None, *, workers: int = 2,
                 **config: Any) -> None:
        self.prefix = f"edge-t{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.run_dir = Path(tempfile.mkdtemp(prefix="edge-http-"))
        self.port = free_port()
        self.workers = workers
        self.publisher = SnapshotPublisher(self.prefix, keep_seconds=0.5)
        self.table = create_table(f"{self.prefix}-rl")
        if policies is not None:
            self.publish(policies)
        doc = {"upstream_url": upstream_url, "listen_port": self.port, **config}
        (self.run_dir / "config.json").write_bytes(build(doc, env={}).to_json())
        self.prom_dir = self.run_dir / "prometheus"
        self.prom_dir.mkdir()
        self.paths = RuntimePaths(config=str(self.run_dir / "config.json"),
                                  snapshot_control=self.publisher.control_name, rate_table=self.table.name,
                                  rate_lock=str(self.run_dir / "ratelimit.lock"),
                                  stats_spool=str(self.run_dir / "stats"), prometheus_dir=str(self.prom_dir))
        self.paths.write(self.run_dir)
        self.log_path = self.run_dir / "gunicorn.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def publish(self, policies: list[dict[str, Any]], version: str | None = None) -> int:
        generation = self.publisher.publish(compile_snapshot(policies, version or f"v{self.publisher.generation + 1}"))
        self.publisher.tick()
        return generation

    def start(self, timeout: float = 30.0) -> EdgeStack:
        env = {**os.environ, RUN_DIR_ENV: str(self.run_dir), "PROMETHEUS_MULTIPROC_DIR": str(self.prom_dir)}
        cmd = [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS, "-w", str(self.workers),
               "-b", f"127.0.0.1:{self.port}", "--graceful-timeout", "5", "--no-control-socket", "workers.app:app"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        if wait_for(self._ready, timeout, 0.1):
            return self
        raise RuntimeError(f"the edge workers did not become healthy:\n{self.log()}")

    def _ready(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
        return self._healthy() and len(self.worker_pids()) >= self.workers

    def worker_pids(self) -> set[str]:
        """Workers that have created their metric files (they do so while importing the app)."""
        return {p.stem.rsplit("_", 1)[-1] for p in self.prom_dir.glob("counter_*.db")}

    def _healthy(self) -> bool:
        try:
            return request(self.port, "GET", "/_health", timeout=1).status == 200
        except OSError:
            return False

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-5000:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(15)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5)
        finally:
            self.publisher.close()
            self.table.close()
            self.table.unlink()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        left = [p.name for p in Path("/dev/shm").glob(f"{self.prefix}*")]
        assert not left, f"shared memory left behind: {left}"


# ── a plain HTTP client: a fresh connection per request, so requests spread over the workers ──


@dataclass
class Reply:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for n, v in self.headers if n.lower() == name), None)


def request(port: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
            timeout: float = 10.0, chunked: bool = False) -> Reply:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return Reply(resp.status, resp.getheaders(), resp.read())
    finally:
        conn.close()


@contextlib.contextmanager
def distribution(command: str, tmp_path: Path, upstream_url: str, policies: list[dict[str, Any]]
                 ) -> Iterator[int]:
    """Run an installed edge command (`edge-datadog`, ...) with one worker and a policy file
    until its policies are published; yields its port and checks it exits 0 on SIGTERM."""
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": policies}))
    port = free_port()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"listen_port": port, "workers": 1, "upstream_url": upstream_url,
                                  "policy_providers": [{"id": "f", "type": "file", "path": str(policy_file)}]}))
    log_path = tmp_path / "edge.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).parent / command), str(config)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        def published() -> bool:  # healthy and the policies published
            assert proc.poll() is None, log_path.read_text()
            try:
                doc = json.loads(request(port, "GET", "/_edge/policies?format=json", timeout=1).body)
            except (OSError, ValueError):
                return False
            return len(doc.get("policies") or []) == len(policies)

        assert wait_for(published, 30, 0.1), log_path.read_text()
        yield port
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
