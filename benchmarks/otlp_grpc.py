"""OTLP/gRPC throughput: records/s per core through edge over gRPC, next to OTLP/HTTP protobuf.

    python benchmarks/otlp_grpc.py [--seconds 3] [--windows 3] [--concurrency 16] [--workers 1] [--batches 100,1000]

Starts (all on loopback, all stopped at the end) a loopback upstream answering every
request 200 with an empty protobuf body, edge (`python -m supervisor.main`) with the ten
core policies of benchmarks/engine.py plus a 25% trace sampling policy (loaded before any
load starts), and a bare grpcio asyncio server on uvloop, as edge's gRPC workers are,
answering every call with an empty message (the floor: what gRPC framing alone costs a
Python process). Then, in each of `--windows`
windows, it sends the same logs and spans requests (`--batches` records each) with
`--concurrency` calls in flight, for `--seconds` each: to edge over gRPC, to edge over
OTLP/HTTP protobuf (`/v1/logs`, `/v1/traces`), and to the bare server.

Reported per signal and batch size: records/s per CPU-second of the serving process tree
(edge: supervisor, gunicorn, HTTP and gRPC workers; the floor: its one process) as the
median window (headline) and the best, and gRPC's share of HTTP's. The clients run in this
process and are not counted; the machine is shared by them, so read ratios, not absolutes.
Target: gRPC at least the HTTP path's records/s at the same batch size.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from aiohttp import web  # noqa: E402

from benchmarks.common import (  # noqa: E402
    ROOT,
    BenchmarkError,
    LoopbackUpstream,
    free_port,
    median_best,
    run_in_scratch,
    stop_process,
    tree_cpu_seconds,
    wait_policies,
)
from benchmarks.engine import CORE_POLICIES, SERVICES, _protobuf_body, make_request  # noqa: E402

LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
TRACES = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
TRACE_POLICY = {"id": "sample-checkout-traces", "trace": {
    "match": [{"resource_attribute": "service.name", "exact": "checkout"}], "keep": {"percentage": 25}}}
ECHO_SERVER = """
import sys, grpc, uvloop
class Echo(grpc.GenericRpcHandler):
    def service(self, details):
        async def answer(request, context):
            return b""
        return grpc.unary_unary_rpc_method_handler(answer, lambda b: b, lambda b: b)
async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((Echo(),))
    server.add_insecure_port(f"127.0.0.1:{sys.argv[1]}")
    await server.start()
    await server.wait_for_termination()
uvloop.run(main())
"""
Send = Callable[[bytes], Awaitable[None]]


class ProtobufUpstream(LoopbackUpstream):
    """Reads each body and answers 200 with an empty protobuf message (a full success)."""

    decompress = False

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")


def spans_request(records: int, seed: int = 7) -> bytes:
    """An ExportTraceServiceRequest: one resource per service, `records` spans in all."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
    from opentelemetry.proto.resource.v1.resource_pb2 import Resource
    from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span

    rng = random.Random(seed)
    per_service = max(1, records // len(SERVICES))
    message = ExportTraceServiceRequest()
    for service in SERVICES:
        spans = [Span(trace_id=rng.randbytes(16), span_id=rng.randbytes(8), name=f"GET /api/{service}",
                      start_time_unix_nano=1_700_000_000_000_000_000, end_time_unix_nano=1_700_000_000_100_000_000,
                      attributes=[KeyValue(key="http.status_code", value=AnyValue(int_value=200))])
                 for _ in range(per_service)]
        message.resource_spans.append(ResourceSpans(
            resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))]),
            scope_spans=[ScopeSpans(spans=spans)]))
    return message.SerializeToString()


async def load(send: Send, body: bytes, seconds: float, concurrency: int) -> int:
    """Requests answered while `concurrency` senders repeat `body` for `seconds`."""
    deadline = time.monotonic() + seconds
    done = 0

    async def sender() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await send(body)
            done += 1
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return done


async def window_rate(pid: int, send: Send, body: bytes, records: int, args: argparse.Namespace) -> float:
    """Records per CPU-second of the process tree `pid` during one load."""
    before = tree_cpu_seconds(pid)
    requests = await load(send, body, args.seconds, args.concurrency)
    cpu = tree_cpu_seconds(pid) - before
    if cpu <= 0:
        raise BenchmarkError("no CPU time measured for the server")
    return requests * records / cpu


def grpc_sender(channel: grpc.aio.Channel, method: str) -> Send:
    stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)

    async def send(body: bytes) -> None:
        await stub(body, timeout=30)
    return send


def http_sender(session: aiohttp.ClientSession, url: str) -> Send:
    async def send(body: bytes) -> None:
        async with session.post(url, data=body, headers={"Content-Type": "application/x-protobuf"}) as answer:
            await answer.read()
            if answer.status != 200:
                raise BenchmarkError(f"{url} answered {answer.status}")
    return send


async def measure(args: argparse.Namespace, edge: subprocess.Popen, edge_port: int, grpc_port: int,
                  echo: subprocess.Popen, echo_port: int) -> None:
    bodies = {("logs", n): _protobuf_body(make_request(n)) for n in args.batches}
    bodies |= {("spans", n): spans_request(n) for n in args.batches}
    results: dict[tuple[str, int, str], list[float]] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as edge_channel, \
            grpc.aio.insecure_channel(f"127.0.0.1:{echo_port}") as echo_channel, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
        for channel in (edge_channel, echo_channel):  # the gRPC servers start next to edge's HTTP workers
            await asyncio.wait_for(channel.channel_ready(), 30)
        for window in range(args.windows):
            print(f"window {window + 1} of {args.windows} ...", file=sys.stderr, flush=True)
            for (signal_name, records), body in bodies.items():
                method, path = (LOGS, "/v1/logs") if signal_name == "logs" else (TRACES, "/v1/traces")
                targets = [("edge gRPC", edge.pid, grpc_sender(edge_channel, method)),
                           ("edge HTTP", edge.pid, http_sender(session, f"http://127.0.0.1:{edge_port}{path}")),
                           ("bare grpcio", echo.pid, grpc_sender(echo_channel, method))]
                for name, pid, send in targets:
                    rate = await window_rate(pid, send, body, records, args)
                    results.setdefault((signal_name, records, name), []).append(rate)
    report(results, args)


def report(results: dict[tuple[str, int, str], list[float]], args: argparse.Namespace) -> None:
    print(f"\nrecords/s per CPU-second of the server, median (best) of {args.windows} windows, "
          f"{args.concurrency} calls in flight, edge workers: {args.workers}")
    print(f"{'signal':<7}{'batch':>7}  {'edge gRPC':>20}  {'edge HTTP':>20}  {'bare grpcio':>20}  gRPC/HTTP")
    for signal_name in ("logs", "spans"):
        for records in args.batches:
            cells, medians = [], {}
            for name in ("edge gRPC", "edge HTTP", "bare grpcio"):
                median, best = median_best(results[(signal_name, records, name)])
                medians[name] = median
                cells.append(f"{median:>10,.0f} ({best:>7,.0f})")
            ratio = medians["edge gRPC"] / medians["edge HTTP"]
            print(f"{signal_name:<7}{records:>7}  {cells[0]:>20}  {cells[1]:>20}  {cells[2]:>20}  {ratio:>8.2f}")


def run(args: argparse.Namespace, tmp: Path) -> None:
    upstream = ProtobufUpstream().start()
    edge_port, grpc_port, echo_port = free_port(), free_port(), free_port()
    policies = [*CORE_POLICIES, TRACE_POLICY]
    (tmp / "policies.json").write_text(json.dumps({"policies": policies}))
    (tmp / "config.json").write_text(json.dumps({
        "listen_port": edge_port, "workers": args.workers, "upstream_url": upstream.url, "log_level": "warn",
        "grpc": {"listen_port": grpc_port},
        "policy_providers": [{"id": "bench", "type": "file", "path": str(tmp / "policies.json")}]}))
    edge = subprocess.Popen([sys.executable, "-m", "supervisor.main", str(tmp / "config.json")], cwd=ROOT)
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, str(echo_port)])
    try:
        wait_policies(f"http://127.0.0.1:{edge_port}", [p["id"] for p in policies], process=edge)
        asyncio.run(measure(args, edge, edge_port, grpc_port, echo, echo_port))
    finally:
        for process in (edge, echo):
            stop_process(process, 20)
        upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3, help="length of one load")
    parser.add_argument("--windows", type=int, default=3, help="loads per target (median and best shown)")
    parser.add_argument("--concurrency", type=int, default=16, help="calls or requests in flight")
    parser.add_argument("--workers", type=int, default=1, help="edge workers (HTTP, and as many gRPC)")
    parser.add_argument("--batches", type=lambda text: [int(n) for n in text.split(",")], default=[100, 1000],
                        help="records per request, comma-separated")
    args = parser.parse_args()
    return run_in_scratch("otlp_grpc.py", run, args)


if __name__ == "__main__":
    sys.exit(main())
