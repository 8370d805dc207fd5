"""Tail sampling: spans/s per core through edge and its sampler, added latency, buffered memory, the channel.

    python benchmarks/tail_sampling.py [--seconds 5] [--windows 3] [--concurrency 16] [--buffered 200000]

Starts (all on loopback, all stopped at the end) a loopback upstream answering 200 to
everything, and edge (`python -m supervisor.main`, 2 workers) with tail sampling on:
`decision_wait` 1 s, an `errors` and a 10% `probabilistic` policy, the write-ahead log in a
temporary directory (fsync `interval`). Then:

1. throughput: `--concurrency` senders post OTLP/HTTP protobuf requests of 8 traces of 5-20
   spans each (about 100 spans) for `--seconds`, `--windows` times; spans/s per CPU-second
   of edge's process tree (supervisor, gunicorn, workers, sampler), median (best);
2. latency: the same requests one at a time, to this edge and to a second edge with tail
   sampling off (forwarding to the same upstream): p50 and p99, and the difference;
3. memory: a third edge with a 10-minute `decision_wait` takes `--buffered` spans; the
   sampler's RSS growth per 100k spans next to those spans' protobuf bytes (its
   `edge_tail_buffered_bytes`), and their ratio;
4. the worker-sampler channel alone: a client in this process, a server in another that
   accepts every submission at once, 64 requests in flight; submissions/s and MB/s.

Targets: at least 30,000 spans/s per core; buffered memory at most 2x the spans' protobuf size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue  # noqa: E402
from opentelemetry.proto.resource.v1.resource_pb2 import Resource  # noqa: E402
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    BenchmarkError,
    LoopbackUpstream,
    free_port,
    median_best,
    run_in_scratch,
    stop_process,
    tree_cpu_seconds,
    tree_rss_mb,
    wait_http,
)
from edge.tailsampling.client import SocketSamplerClient  # noqa: E402
from edge.tailsampling.interfaces import TraceFragment  # noqa: E402

POLICIES = [{"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
            {"name": "ten", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}]
TRACES_PER_REQUEST = 8
PB = {"Content-Type": "application/x-protobuf"}
CHANNEL_SERVER = """
import asyncio, functools, sys
from edge.tailsampling.channel import serve_connection
from edge.tailsampling.interfaces import Ack

async def accept(fragments, kind):
    return Ack.ACCEPTED

async def main():
    server = await asyncio.start_unix_server(functools.partial(serve_connection, submitted=accept), path=sys.argv[1])
    await server.serve_forever()

import uvloop
uvloop.run(main())
"""


class OkUpstream(LoopbackUpstream):
    """200 and an empty protobuf answer to everything; nothing counted (the upstream is not measured)."""

    decompress = False

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")


def traces_request(rng: random.Random, traces: int = TRACES_PER_REQUEST) -> tuple[bytes, int]:
    """A request of `traces` traces of 5-20 spans each (one in twenty with an error); its spans."""
    spans = []
    for _ in range(traces):
        trace_id = rng.randbytes(16)
        error = rng.random() < 0.05
        for n in range(rng.randint(5, 20)):
            spans.append(Span(trace_id=trace_id, span_id=rng.randbytes(8), name=f"GET /api/items/{n % 7}",
                              kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1_700_000_000_000_000_000 + n,
                              end_time_unix_nano=1_700_000_000_050_000_000 + n,
                              status=Status(code=Status.STATUS_CODE_ERROR if error and n == 0 else 0),
                              attributes=[KeyValue(key="http.status_code", value=AnyValue(int_value=200))]))
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="checkout"))])
    message = ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource,
                                                                      scope_spans=[ScopeSpans(spans=spans)])])
    return message.SerializeToString(), len(spans)


class Edge:
    """One edge instance with its own config, on a free port."""

    def __init__(self, tmp: Path, name: str, upstream: str, tail: dict | None) -> None:
        self.dir = tmp / name
        self.dir.mkdir()
        self.port = free_port()
        config = {"listen_port": self.port, "workers": 2, "upstream_url": upstream, "log_level": "warn",
                  "grpc": {"enabled": False}}
        if tail is not None:
            config["tail_sampling"] = {"enabled": True, "wal_dir": str(self.dir / "wal"), "policies": POLICIES,
                                       "rollup_interval": "5s", **tail}
        (self.dir / "config.json").write_text(json.dumps(config))
        self.process = subprocess.Popen([sys.executable, "-m", "supervisor.main", str(self.dir / "config.json")],
                                        cwd=ROOT)
        self.url = f"http://127.0.0.1:{self.port}"

    def ready(self) -> Edge:
        wait_http(f"{self.url}/_health", process=self.process)
        return self

    def sampler_pid(self) -> int:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        for pid in children:
            if b"workers.sampler" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return int(pid)
        raise BenchmarkError("no sampler process")

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.url}/_edge/metrics", timeout=10) as answer:
            for line in answer.read().decode().splitlines():
                if line.startswith(name + " ") or line.startswith(name + "{"):
                    return float(line.rsplit(" ", 1)[1])
        return 0.0

    def stop(self) -> None:
        stop_process(self.process, 30)


async def post(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    async with session.post(url, data=body, headers=PB) as answer:
        await answer.read()
        if answer.status != 200:
            raise BenchmarkError(f"{url} answered {answer.status}")


async def load(session: aiohttp.ClientSession, url: str, bodies: list[tuple[bytes, int]], seconds: float,
               concurrency: int) -> int:
    """Spans sent by `concurrency` senders in `seconds`."""
    deadline = time.monotonic() + seconds
    sent = 0

    async def sender(offset: int) -> None:
        nonlocal sent
        i = offset
        while time.monotonic() < deadline:
            body, count = bodies[i % len(bodies)]
            await post(session, url, body)
            sent += count
            i += 1

    await asyncio.gather(*(sender(n * 7) for n in range(concurrency)))
    return sent


async def drained(edge: Edge) -> None:
    """Until the sampler holds no trace: its decisions, exports and rollups belong to the window's cost."""
    while edge.metric("edge_tail_buffered_traces") > 0:
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.5)


async def throughput(edge: Edge, bodies: list[tuple[bytes, int]], args: argparse.Namespace) -> list[float]:
    """Spans per CPU-second of edge's process tree (the decisions after the load included), one rate per window."""
    rates = []
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
        for window in range(args.windows):
            print(f"throughput window {window + 1} of {args.windows} ...", file=sys.stderr, flush=True)
            before = tree_cpu_seconds(edge.process.pid)
            spans = await load(session, f"{edge.url}/v1/traces", bodies, args.seconds, args.concurrency)
            await drained(edge)
            rates.append(spans / (tree_cpu_seconds(edge.process.pid) - before))
    return rates


async def latencies(url: str, bodies: list[tuple[bytes, int]], count: int) -> list[float]:
    out = []
    async with aiohttp.ClientSession() as session:
        for i in range(count):
            start = time.perf_counter()
            await post(session, f"{url}/v1/traces", bodies[i % len(bodies)][0])
            out.append(time.perf_counter() - start)
    return out


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


async def buffered_memory(edge: Edge, rng: random.Random, spans_wanted: int) -> tuple[float, float]:
    """(RSS growth in MB, protobuf MB buffered) for `spans_wanted` spans held undecided."""
    await asyncio.sleep(1)
    before = tree_rss_mb(edge.sampler_pid())
    sent = 0
    async with aiohttp.ClientSession() as session:
        while sent < spans_wanted:
            body, count = traces_request(rng, 50)
            await post(session, f"{edge.url}/v1/traces", body)
            sent += count
    await asyncio.sleep(2)
    after = tree_rss_mb(edge.sampler_pid())
    return after - before, edge.metric("edge_tail_buffered_bytes") / 1e6


async def channel(path: str, per: int, size: int, seconds: float) -> tuple[float, float]:
    client = SocketSamplerClient(path, connect_wait=10)
    batch = [TraceFragment(os.urandom(16), os.urandom(size), 10) for _ in range(per)]
    done = 0
    deadline = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await client.submit(batch)
            done += 1

    start = time.monotonic()
    await asyncio.gather(*(sender() for _ in range(64)))
    elapsed = time.monotonic() - start
    await client.close()
    return done / elapsed, done * per * size / elapsed / 1e6


def run(args: argparse.Namespace, tmp: Path) -> None:
    rng = random.Random(7)
    bodies = [traces_request(rng) for _ in range(200)]
    upstream = OkUpstream().start()
    edges = [Edge(tmp, "tail", upstream.url, {"decision_wait": "1s"}), Edge(tmp, "plain", upstream.url, None),
             Edge(tmp, "held", upstream.url, {"decision_wait": "10m", "num_traces": 1_000_000})]
    server = subprocess.Popen([sys.executable, "-c", CHANNEL_SERVER, str(tmp / "bench.sock")], cwd=ROOT)
    try:
        tail, plain, held = (edge.ready() for edge in edges)
        time.sleep(2)  # the samplers listening
        rates = asyncio.run(throughput(tail, bodies, args))
        median, best = median_best(rates)
        print(f"\nspans/s per CPU-second of edge (2 workers + sampler), {args.concurrency} requests in flight, "
              f"~{sum(c for _, c in bodies) / len(bodies):.0f} spans/request: {median:,.0f} ({best:,.0f})")
        tail_lat = asyncio.run(latencies(tail.url, bodies, 500))
        plain_lat = asyncio.run(latencies(plain.url, bodies, 500))
        for name, values in (("tail sampling", tail_lat), ("forwarding", plain_lat)):
            p50, p99 = percentile(values, 50) * 1e3, percentile(values, 99) * 1e3
            print(f"latency, {name}: p50 {p50:.2f} ms, p99 {p99:.2f} ms")
        print(f"added p99: {(percentile(tail_lat, 99) - percentile(plain_lat, 99)) * 1e3:.2f} ms")
        grown, protobuf = asyncio.run(buffered_memory(held, rng, args.buffered))
        per = 100_000 / args.buffered
        print(f"sampler RSS growth per 100k buffered spans: {grown * per:.1f} MB for {protobuf * per:.1f} MB of "
              f"protobuf: {grown / protobuf:.2f}x")
        for shape in ((1, 200), (8, 1500), (8, 100_000)):
            rate, mbps = asyncio.run(channel(str(tmp / "bench.sock"), *shape, seconds=3))
            print(f"channel, {shape[0]} fragments of {shape[1]} B per submission: {rate:,.0f} submissions/s, "
                  f"{mbps:,.1f} MB/s")
    finally:
        for edge in edges:
            edge.stop()
        stop_process(server, 5)
        upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="length of one throughput window")
    parser.add_argument("--windows", type=int, default=3, help="throughput windows (median and best shown)")
    parser.add_argument("--concurrency", type=int, default=16, help="requests in flight")
    parser.add_argument("--buffered", type=int, default=200_000, help="spans held for the memory measurement")
    args = parser.parse_args()
    return run_in_scratch("tail_sampling.py", run, args)


if __name__ == "__main__":
    sys.exit(main())
