"""Scaffolding the benchmarks share, so each one measures the same way.

- ports and readiness: `free_port`, `wait_http`, and `wait_policies`, which polls
  `GET /_edge/policies?format=json` until the expected policy ids are listed (a load sent
  before that measures raw passthrough, not policies);
- a loopback upstream that counts the requests, body bytes and OTLP records it receives;
- the RSS and the CPU time used of a process tree;
- `median_best`: the median is the headline of every table (it is what a run typically
  gets on a shared machine), the best run is shown next to it (the cost without
  interference);
- `filler_policies`: rarely matching drop policies that make a policy set large the way
  large sets look in practice.

Benchmarks do not import the test tree: what they share lives here.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Self

import orjson
from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]


class BenchmarkError(RuntimeError):
    """A run that cannot give honest numbers (edge not ready, failed requests): the benchmark exits non-zero."""


def run_in_scratch(script: str, run: Callable[[argparse.Namespace, Path], None], args: argparse.Namespace) -> int:
    """A benchmark's `run(args, scratch)` in a scratch folder removed afterwards; its exit status:
    0, or 1 with one line naming the script when it raised BenchmarkError."""
    scratch = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    try:
        run(args, scratch)
    except BenchmarkError as exc:
        print(f"{script}: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


# ── ports and readiness ──


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _check_alive(process: subprocess.Popen | None, what: str) -> None:
    if process is not None and process.poll() is not None:
        raise BenchmarkError(f"{what} exited with status {process.returncode} before it was ready")


def wait_http(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    """Until `url` answers at all; fails early when `process` (the server) has died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _check_alive(process, url)
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise BenchmarkError(f"{url} did not answer within {timeout:.0f} s")


def wait_policies(base_url: str, ids: Iterable[str], timeout: float = 30.0,
                  process: subprocess.Popen | None = None) -> None:
    """Until edge lists every id in `ids` as loaded, without errors.

    Edge answers (raw passthrough) before its first snapshot is published, so a load started
    on `/_health` alone, or after a fixed sleep on a busy machine, can measure no policy work.
    All workers read the same published snapshot, so one answer speaks for all of them.
    """
    wanted = set(ids)
    url = f"{base_url}/_edge/policies?format=json"
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while time.monotonic() < deadline:
        _check_alive(process, "edge")
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                doc = json.loads(answer.read())
        except (OSError, ValueError):
            time.sleep(0.1)
            continue
        listed = {p["id"]: p for p in doc.get("policies") or []}
        seen = set(listed)
        broken = {pid: listed[pid]["errors"] for pid in wanted & seen if listed[pid].get("errors")}
        if broken or doc.get("load_errors"):
            raise BenchmarkError(f"edge loaded the policies with errors: {broken or doc['load_errors']}")
        if wanted <= seen:
            return
        time.sleep(0.1)
    raise BenchmarkError(f"edge did not list its policies within {timeout:.0f} s; missing: "
                         f"{sorted(wanted - seen)[:10]} ({len(wanted - seen)} of {len(wanted)})")


# ── memory ──


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> None:
    """SIGTERM, as edge is stopped in production; SIGKILL when it has not exited within `timeout`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def process_tree(pid: int) -> list[int]:
    """A process and all its descendants, parents before their children."""
    tree, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        tree.append(current)
        todo.extend(int(c) for c in children)
    return tree


def rss_mb(pid: int) -> float:
    """One process's RSS (0 once it is gone)."""
    try:
        return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return 0.0


def pss_mb(pid: int) -> float:
    """One process's proportional set size: its private pages plus its share of pages shared with others
    (0 once it is gone). Forked workers share their master's imported modules: RSS counts those pages
    once per process, PSS once in total."""
    try:
        return int(re.search(r"Pss:\s+(\d+)", Path(f"/proc/{pid}/smaps_rollup").read_text()).group(1)) / 1024
    except (OSError, AttributeError):
        return 0.0


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (for edge: supervisor, gunicorn and every worker)."""
    return sum(rss_mb(p) for p in process_tree(pid))


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) the live processes of a tree have used so far.

    Read before and after a load, the difference is what serving it cost, whatever else the
    shared machine ran meanwhile: steadier than requests per second on a busy machine."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLOCK_TICKS


# ── statistics ──


def median_best(rates: Sequence[float]) -> tuple[float, float]:
    """(median, best) of per-window rates where higher is better."""
    if not rates:
        raise ValueError("no windows measured")
    return statistics.median(rates), max(rates)


# ── policies ──


def filler_policies(count: int, attribute: str, value_prefix: str) -> list[dict]:
    """`count` drop policies that rarely match: a body substring, an attribute value, a regex, a prefix.

    Large policy sets in practice are mostly such narrow rules; they cost matching work
    without changing what is kept. `attribute` is a log attribute the records carry, with
    values that never start with `value_prefix` followed by these numbers.
    """
    policies = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            match = {"log_field": "body", "contains": f"error-code-{10_000 + i}"}
        elif kind == 1:
            match = {"log_attribute": attribute, "exact": f"{value_prefix}{5000 + i}"}
        elif kind == 2:
            match = {"log_field": "body", "regex": f"order-{i}[0-9]+ failed"}
        else:
            match = {"log_field": "body", "starts_with": f"PATCH /v{i}/"}
        policies.append({"id": f"gen-{i:05d}", "log": {"match": [match], "keep": "none"}})
    return policies


# ── a counting loopback upstream ──

_OTLP_PATHS = {"/v1/logs": "log", "/v1/metrics": "metric", "/v1/traces": "trace"}
_OTLP_SHAPES = {"log": ("resourceLogs", "scopeLogs", "logRecords"),
                "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
                "trace": ("resourceSpans", "scopeSpans", "spans")}


def count_records(signal: str, body: bytes, content_type: str) -> int:
    """Records in an OTLP body, JSON or protobuf."""
    top, scopes, key = _OTLP_SHAPES[signal]
    if "protobuf" in content_type:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        message = {"log": ExportLogsServiceRequest, "metric": ExportMetricsServiceRequest,
                   "trace": ExportTraceServiceRequest}[signal].FromString(body)
        return sum(len(getattr(scope, _snake(key))) for resource in getattr(message, _snake(top))
                   for scope in getattr(resource, _snake(scopes)))
    doc = orjson.loads(body)
    return sum(len(sl.get(key, [])) for rl in doc.get(top, []) for sl in rl.get(scopes, []))


def _snake(name: str) -> str:
    """`resourceLogs` -> `resource_logs`: the protobuf field of a proto-JSON key."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


class LoopbackUpstream:
    """An aiohttp server on a free loopback port, run in a thread of the benchmark itself.

    Subclasses answer in `_handle`; `decompress` says whether aiohttp undoes gzip bodies first.
    """

    decompress = True

    def __init__(self) -> None:
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: self._loop.run_until_complete(self._serve()), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise BenchmarkError(f"the loopback upstream ({type(self).__name__}) did not start")
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    async def _serve(self) -> None:
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, auto_decompress=self.decompress, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        raise NotImplementedError


class CountingUpstream(LoopbackUpstream):
    """Answers 200 `{}` to everything on loopback and counts requests, body bytes and OTLP records.

    Exact counts for correctness runs (soak). Too slow to sit behind a throughput run;
    `proxy.py` counts at nginx instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.records = {"log": 0, "metric": 0, "trace": 0}
        self.requests = 0
        self.body_bytes = 0
        self._lock = threading.Lock()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp decompresses gzip bodies itself
        signal = _OTLP_PATHS.get(request.path)
        count = count_records(signal, body, request.content_type) if signal else 0
        with self._lock:
            self.requests += 1
            self.body_bytes += len(body)
            if signal:
                self.records[signal] += count
        return web.Response(body=b"{}", content_type="application/json")
