"""Soak: a real edge under mixed traffic for a bounded time, watching throughput, losses and memory.

    python benchmarks/soak.py [--duration 600] [--interval 10] [--concurrency 8] [--workers 2]
                              [--rss-slope-limit 2.0] [--json SUMMARY.json]

Everything runs on loopback and stops by itself: a counting upstream (aiohttp, in a thread),
the `edge` command with a policy file, and an asyncio client sending a fixed mix: OTLP/JSON
logs (plain and gzip), OTLP/protobuf metrics, OTLP/JSON traces, passthrough GET/POST and the
admin routes. Every `--interval` seconds it prints requests/s, failures and the RSS of the
supervisor, gunicorn and the workers. At the end it checks that every record of every
acknowledged batch reached the upstream or was dropped by a policy (the upstream counts them),
and gives a verdict on memory: RSS is flat when the slope over the last third of the run is
below `--rss-slope-limit` MB/min. The load starts only once edge lists its policies. The
summary gives the median req/s of the reporting intervals (the headline) and the best one.
Exit status 0 when there were no failures (any answer but 200 is one), no lost records and
RSS was flat. A soak has no floor: it judges losses and memory, not speed.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    BenchmarkError,
    CountingUpstream,
    free_port,
    median_best,
    stop_process,
    tree_rss_mb,
    wait_policies,
)

EDGE = Path(sys.executable).parent / "edge"
POLICIES = [
    {"id": "drop-debug", "name": "drop debug logs",
     "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "redact-card", "name": "redact card numbers",
     "log": {"match": [{"log_field": "body", "contains": "card"}], "keep": "all",
             "transform": {"redact": [{"log_field": "body", "regex": "[0-9]{16}", "replacement": "<card>"}]}}},
    {"id": "drop-internal", "name": "drop internal metrics",
     "metric": {"match": [{"metric_field": "name", "starts_with": "internal."}], "keep": False}},
    {"id": "sample-health", "name": "drop health-check spans",
     "trace": {"match": [{"trace_field": "name", "exact": "GET /health"}], "keep": {"percentage": 0}}},
]


# ── traffic: fixed bodies with known record counts ──


@dataclass(frozen=True)
class Request:
    kind: str
    method: str
    path: str
    body: bytes
    headers: dict[str, str]
    signal: str = ""  # OTLP requests: the signal and how many records must arrive
    expected: int = 0


def _logs(n: int) -> dict[str, Any]:
    records = []
    for i in range(n):
        severity = "DEBUG" if i % 4 == 0 else "INFO"
        text = f"order {i} paid with card 4111111111111111" if i % 5 == 0 else f"request {i} served"
        records.append({"timeUnixNano": "1700000000000000000", "severityText": severity,
                        "body": {"stringValue": text},
                        "attributes": [{"key": "http.method", "value": {"stringValue": "GET"}}]})
    return {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "soak"}}]},
                              "scopeLogs": [{"scope": {"name": "soak"}, "logRecords": records}]}]}


def _metrics(n: int) -> dict[str, Any]:
    metrics = [{"name": ("internal." if i % 3 == 0 else "app.") + f"m{i}",
                "gauge": {"dataPoints": [{"asDouble": float(i), "timeUnixNano": "1700000000000000000"}]}}
               for i in range(n)]
    return {"resourceMetrics": [{"resource": {}, "scopeMetrics": [{"scope": {"name": "soak"}, "metrics": metrics}]}]}


def _traces(n: int) -> dict[str, Any]:
    spans = [{"name": "GET /health" if i % 2 == 0 else f"GET /item/{i}", "traceId": f"{i + 1:032x}",
              "spanId": f"{i + 1:016x}", "kind": 2, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}
             for i in range(n)]
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {"name": "soak"}, "spans": spans}]}]}


def traffic_mix() -> list[Request]:
    logs, metrics, traces = _logs(200), _metrics(150), _traces(100)
    kept_logs = sum(1 for i in range(200) if i % 4)
    kept_metrics = sum(1 for i in range(150) if i % 3)
    json_ct = {"Content-Type": "application/json"}
    metrics_pb = json_format.ParseDict(metrics, ExportMetricsServiceRequest()).SerializeToString()
    return [
        Request("otlp-json-logs", "POST", "/v1/logs", orjson.dumps(logs), json_ct, "log", kept_logs),
        Request("otlp-gzip-logs", "POST", "/v1/logs", gzip.compress(orjson.dumps(logs)),
                {**json_ct, "Content-Encoding": "gzip"}, "log", kept_logs),
        Request("otlp-proto-metrics", "POST", "/v1/metrics", metrics_pb, {"Content-Type": "application/x-protobuf"},
                "metric", kept_metrics),
        Request("otlp-json-traces", "POST", "/v1/traces", orjson.dumps(traces), json_ct, "trace", 50),
        Request("passthrough-post", "POST", "/api/ingest?x=1", os.urandom(2048), {"Content-Type": "text/plain"}),
        Request("passthrough-get", "GET", "/api/status", b"", {}),
        Request("admin-metrics", "GET", "/_edge/metrics", b"", {}),
        Request("admin-health", "GET", "/_health", b"", {}),
    ]


# ── the proxy and its memory ──


def start_edge(tmp: Path, upstream_url: str, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (tmp / "policies.json").write_text(json.dumps({"policies": POLICIES}))
    (tmp / "config.json").write_text(json.dumps({
        "listen_port": port, "workers": workers, "upstream_url": upstream_url,
        "policy_providers": [{"id": "soak", "type": "file", "path": str(tmp / "policies.json")}]}))
    log = open(tmp / "edge.log", "wb")  # noqa: SIM115 - the child keeps it; closed with the process
    proc = subprocess.Popen([str(EDGE), str(tmp / "config.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_policies(f"http://127.0.0.1:{port}", (p["id"] for p in POLICIES), timeout=30, process=proc)
    except BenchmarkError as exc:
        proc.kill()
        proc.wait(10)
        raise BenchmarkError(f"{exc}; edge's log:\n" + (tmp / "edge.log").read_text(errors="replace")[-3000:]) from None
    return proc, port


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return 0.0
    return 60 * sum((t - mean_t) * (m - mean_m) for t, m in samples) / var


# ── the run ──


@dataclass
class Summary:
    duration_s: float
    requests: int = 0
    failures: int = 0
    requests_per_s: float = 0.0
    interval_rates: list[float] = field(default_factory=list)  # req/s of each full reporting interval
    median_requests_per_s: float = 0.0
    best_requests_per_s: float = 0.0
    by_kind: dict[str, int] = field(default_factory=dict)
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    records_expected: dict[str, int] = field(default_factory=dict)
    records_received: dict[str, int] = field(default_factory=dict)
    records_lost: int = 0
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    rss_slope_mb_per_min: float = 0.0
    rss_flat: bool = False
    verdict: str = ""


async def drive(port: int, mix: list[Request], summary: Summary, deadline: float, concurrency: int,
                on_tick: Any, interval: float) -> None:
    """`concurrency` clients cycling through the mix until the deadline; `on_tick` every `interval` s."""
    expected = {"log": 0, "metric": 0, "trace": 0}
    summary.records_expected = expected
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=30)) as session:
        async def client(offset: int) -> None:
            for request in itertools.islice(itertools.cycle(mix), offset, None):
                if time.monotonic() >= deadline:
                    return
                status = 0
                try:
                    async with session.request(request.method, base + request.path, data=request.body or None,
                                               headers=request.headers) as resp:
                        await resp.read()
                        status = resp.status
                except (TimeoutError, aiohttp.ClientError):
                    status = 0
                summary.requests += 1
                summary.by_kind[request.kind] = summary.by_kind.get(request.kind, 0) + 1
                if status != 200:
                    summary.failures += 1
                    summary.failures_by_kind[request.kind] = summary.failures_by_kind.get(request.kind, 0) + 1
                elif request.signal:
                    expected[request.signal] += request.expected

        async def ticker() -> None:
            while time.monotonic() < deadline:
                await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
                on_tick()

        await asyncio.gather(ticker(), *(client(i) for i in range(concurrency)))


def run(duration: float, interval: float, concurrency: int, workers: int, slope_limit: float) -> Summary:
    upstream = CountingUpstream().start()
    tmp = Path(tempfile.mkdtemp(prefix="edge-soak-"))
    proc, port = start_edge(tmp, f"http://127.0.0.1:{upstream.port}", workers)
    summary = Summary(duration_s=duration)
    started = time.monotonic()
    last = [started, 0, 0]

    def tick() -> None:
        now = time.monotonic()
        rss = tree_rss_mb(proc.pid)
        summary.rss_mb.append((round(now - started, 1), round(rss, 1)))
        rate = (summary.requests - last[1]) / max(1e-9, now - last[0])
        if summary.rss_mb[1:] and now - last[0] >= interval / 2:  # not the first tick, not a short last one
            summary.interval_rates.append(round(rate, 1))
        print(f"[{now - started:6.1f} s] {rate:8.0f} req/s  failures {summary.failures - last[2]:4d}  "
              f"RSS {rss:7.1f} MB", flush=True)
        last[:] = [now, summary.requests, summary.failures]

    try:
        tick()
        asyncio.run(drive(port, traffic_mix(), summary, started + duration, concurrency, tick, interval))
        elapsed = time.monotonic() - started  # the load alone, not the shutdown below
        time.sleep(0.5)  # the last answers are in; let the upstream finish counting
    finally:
        stop_process(proc)
        upstream.stop()
    summary.requests_per_s = round(summary.requests / elapsed, 1)
    if summary.interval_rates:
        median, best = median_best(summary.interval_rates)
        summary.median_requests_per_s, summary.best_requests_per_s = round(median, 1), round(best, 1)
    summary.records_received = dict(upstream.records)
    summary.records_lost = sum(max(0, summary.records_expected[s] - upstream.records[s]) for s in upstream.records)
    last_third = [s for s in summary.rss_mb if s[0] >= duration * 2 / 3]
    summary.rss_slope_mb_per_min = round(slope_mb_per_min(last_third), 2)
    summary.rss_flat = summary.rss_slope_mb_per_min < slope_limit
    problems = [f"{summary.failures} failed requests"] if summary.failures else []
    if summary.records_lost:
        problems.append(f"{summary.records_lost} records lost")
    if summary.records_received != summary.records_expected:
        problems.append(f"records expected {summary.records_expected}, received {summary.records_received}")
    if not summary.rss_flat:
        problems.append(f"RSS grows {summary.rss_slope_mb_per_min} MB/min over the last third")
    summary.verdict = "; ".join(problems) or "ok: no failures, nothing lost, RSS flat"
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (default 600)")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between reports (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent clients (default 8)")
    parser.add_argument("--workers", type=int, default=2, help="edge workers (default 2)")
    parser.add_argument("--rss-slope-limit", type=float, default=2.0,
                        help="MB/min over the last third under which RSS counts as flat (default 2)")
    parser.add_argument("--json", type=Path, help="write the summary here as JSON")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.interval <= 0 or args.concurrency <= 0 or args.workers <= 0:
        parser.error("--duration, --interval, --concurrency and --workers must be positive")
    try:
        summary = run(args.duration, args.interval, args.concurrency, args.workers, args.rss_slope_limit)
    except BenchmarkError as exc:
        print(f"soak.py: {exc}", file=sys.stderr)
        return 1
    print(f"req/s per interval: median {summary.median_requests_per_s}, best {summary.best_requests_per_s} "
          f"({len(summary.interval_rates)} intervals)")
    print(f"{summary.requests} requests ({summary.requests_per_s} req/s overall), {summary.failures} failed; "
          f"records expected {summary.records_expected}, received {summary.records_received}; "
          f"RSS slope over the last third {summary.rss_slope_mb_per_min} MB/min")
    print(f"verdict: {summary.verdict}")
    if args.json:
        args.json.write_text(json.dumps(asdict(summary), indent=2))
    return 0 if summary.verdict.startswith("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
