"""The upstream client's cost per request: edge's `Upstream` (aiohttp) against other asyncio HTTP clients.

    python benchmarks/upstream_client.py [--seconds 3] [--windows 3] [--concurrency 32]

One process on uvloop, as a worker runs, POSTs a ~5 KB OTLP/JSON body of 10 records from
`--concurrency` tasks to nginx on loopback (it reads the body and answers 200 `{}`) and reads
each answer whole. Reported per client: req/s and CPU time per request (user + system of the
whole process, threads included: a client that works in its own threads is not flattered),
both medians of `--windows` windows taken in turns.

Clients: `edge` is `edge.protocols.upstream.Upstream.exchange`, exactly as the OTLP routes call
it (aiohttp, headers filtered, timeouts); `aiohttp` is a bare `ClientSession.post`, for what
edge's use adds; `httpx`, `aiosonic` and `pyreqwest` (Rust: reqwest and hyper) are measured
when installed (`pip install httpx aiosonic pyreqwest`), else named as skipped.

Last measured on a shared 2-core machine (CPU us/request, concurrency 32; 1): edge ~60-100,
aiohttp alike, pyreqwest ~35 (50), aiosonic ~65 (185), httpx ~2,000 (690). pyreqwest is the
cheapest but does not keep edge's behaviour: a response header value that is not UTF-8 makes
its headers unreadable (edge relays such a value as received), and it sends through the proxy
named by HTTP_PROXY unless told not to. edge keeps aiohttp.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import orjson
import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import free_port, wait_http  # noqa: E402
from benchmarks.engine import make_request  # noqa: E402
from benchmarks.proxy import UPSTREAM_HTTP, start_nginx, stop_nginx  # noqa: E402
from edge.config import build  # noqa: E402
from edge.protocols.self_metrics import get_metrics  # noqa: E402
from edge.protocols.upstream import Upstream, request_head  # noqa: E402

Send = Callable[[], Awaitable[None]]
JSON_TYPE = "application/json"


async def edge_client(stack: AsyncExitStack, url: str, body: bytes) -> Send:
    upstream = Upstream(build({"upstream_url": url}, env={}), get_metrics())
    await upstream.start()
    stack.push_async_callback(upstream.close)
    headers = [(b"host", b"edge"), (b"content-type", JSON_TYPE.encode()), (b"content-length", b"%d" % len(body))]
    scope = {"path": "/v1/logs", "raw_path": b"/v1/logs", "query_string": b"", "method": "POST", "headers": headers}

    async def send() -> None:
        await upstream.exchange(url, "POST", scope, request_head(headers), body)
    return send


async def aiohttp_client(stack: AsyncExitStack, url: str, body: bytes) -> Send:
    import aiohttp

    session = await stack.enter_async_context(aiohttp.ClientSession(auto_decompress=False))

    async def send() -> None:
        async with session.post(url + "/v1/logs", data=body, headers={"Content-Type": JSON_TYPE}) as answer:
            await answer.read()
    return send


async def httpx_client(stack: AsyncExitStack, url: str, body: bytes) -> Send:
    import httpx

    client = await stack.enter_async_context(httpx.AsyncClient(limits=httpx.Limits(max_connections=256)))

    async def send() -> None:
        (await client.post(url + "/v1/logs", content=body, headers={"Content-Type": JSON_TYPE})).read()
    return send


async def aiosonic_client(stack: AsyncExitStack, url: str, body: bytes) -> Send:
    import aiosonic
    from aiosonic.connectors import TCPConnector

    client = aiosonic.HTTPClient(TCPConnector(pool_configs={":default": {"size": 256}}))

    async def send() -> None:
        await (await client.post(url + "/v1/logs", data=body, headers={"Content-Type": JSON_TYPE})).content()
    return send


async def pyreqwest_client(stack: AsyncExitStack, url: str, body: bytes) -> Send:
    from pyreqwest.client import ClientBuilder

    client = await stack.enter_async_context(ClientBuilder().no_proxy().gzip(False).max_connections(256).build())

    async def send() -> None:
        answer = await client.post(url + "/v1/logs").header("Content-Type", JSON_TYPE).body_bytes(body).build().send()
        await answer.bytes()
    return send


CLIENTS: dict[str, Callable[[AsyncExitStack, str, bytes], Awaitable[Send]]] = {
    "edge": edge_client, "aiohttp": aiohttp_client, "httpx": httpx_client, "aiosonic": aiosonic_client,
    "pyreqwest": pyreqwest_client,
}


async def window(send: Send, seconds: float, concurrency: int) -> tuple[float, float]:
    """(req/s, CPU us per request) of `concurrency` tasks sending for `seconds`."""
    done = 0
    stop = time.monotonic() + seconds

    async def sender() -> None:
        nonlocal done
        while time.monotonic() < stop:
            await send()
            done += 1

    cpu, start = time.process_time(), time.monotonic()
    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return done / (time.monotonic() - start), (time.process_time() - cpu) / max(1, done) * 1e6


async def measure(args: argparse.Namespace, url: str, body: bytes) -> None:
    async with AsyncExitStack() as stack:
        senders: dict[str, Send] = {}
        for name, make in CLIENTS.items():
            try:
                senders[name] = await make(stack, url, body)
            except ImportError:
                print(f"{name}: not installed, skipped", file=sys.stderr)
        for send in senders.values():
            await send()  # connect before measuring
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in senders}
        for _ in range(args.windows):
            for name, send in senders.items():
                results[name].append(await window(send, args.seconds, args.concurrency))
    print(f"{len(body) / 1024:.1f} KB body, concurrency {args.concurrency}, medians of {args.windows} windows")
    print(f"{'client':10} {'req/s':>9} {'CPU us/req':>11}")
    for name, rows in results.items():
        print(f"{name:10} {statistics.median(r for r, _ in rows):9,.0f} {statistics.median(c for _, c in rows):11,.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3, help="length of one window")
    parser.add_argument("--windows", type=int, default=3, help="windows per client (median shown)")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    args = parser.parse_args()
    if shutil.which("nginx") is None:
        print("upstream_client.py: nginx is missing (apt-get install nginx-light)", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    port = free_port()
    try:
        start_nginx(tmp, "upstream", 1, UPSTREAM_HTTP.format(tmp=tmp, port=port, sink_port=free_port()))
        wait_http(f"http://127.0.0.1:{port}/")
        body = orjson.dumps(make_request(10))
        uvloop.run(measure(args, f"http://127.0.0.1:{port}", body))
    finally:
        stop_nginx(tmp, "upstream")
        time.sleep(0.3)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
