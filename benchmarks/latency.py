"""Latencies edge promises or should keep under stress, measured (the test suite only checks behaviour).

    python benchmarks/latency.py [--rounds 10] [--only reload,capacity,s3,slow,bombs]

Each scenario starts the real `edge` command on loopback (with its policies listed before
anything is measured) next to a local upstream, and reports the median (headline) and the
worst of its samples:

- reload: a rewritten policy file until `/_edge/policies` lists the new set, against the
  README's promise (reloaded within 2 s of a change); the verdict line says whether the
  median and the worst kept it;
- capacity: `/_health`, `/_edge/policies` and `/_edge/metrics` while every slot of
  `max_connections` is held by a request the upstream does not answer yet;
- s3: OTLP requests whose dropped records go to an s3-dump target that accepts connections
  and never answers (a hanging store must not slow requests);
- slow: OTLP requests while 60 clients dribble headers and 10 dribble bodies, one byte
  every 50 ms;
- bombs: OTLP requests (p99 too) while two senders post 1 MiB bodies of empty gzip members.

The test suite runs these situations and asserts what must happen (answers, refusals,
drops); how fast is a property of the machine as much as of edge, so it is measured here.
Exit status 0 unless a scenario could not run or reload missed the 2 s promise at its median.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchmarkError, LoopbackUpstream, free_port, stop_process, wait_policies  # noqa: E402

EDGE = Path(sys.executable).parent / "edge"
RELOAD_PROMISE_S = 2.0  # README: a file provider's policies are reloaded within 2 s of a change
DROP_DEBUG = {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}],
                                          "keep": "none"}}
JSON_CT = {"Content-Type": "application/json"}


# ── the pieces: an upstream that can hold answers, edge, a client ──


class HoldingUpstream(LoopbackUpstream):
    """Answers 200 `{}` on loopback; while `held` is set, answers wait until it is cleared."""

    decompress = False

    def __init__(self) -> None:
        super().__init__()
        self.received = 0
        self.held = threading.Event()
        self._released = threading.Event()
        self._released.set()

    def hold(self) -> None:
        self._released.clear()
        self.held.set()

    def release(self) -> None:
        self.held.clear()
        self._released.set()

    def stop(self) -> None:
        self.release()
        super().stop()

    async def _handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.received += 1
        if self.held.is_set():
            await asyncio.to_thread(self._released.wait, 60)
        return web.Response(body=b"{}", content_type="application/json")


@contextmanager
def running_edge(upstream: HoldingUpstream, policies: list[dict[str, Any]],
                 **config: Any) -> Iterator[tuple[int, Path]]:
    """`edge` with a policy file, until its policies are listed; yields (port, policy file)."""
    with tempfile.TemporaryDirectory(prefix="edge-latency-") as tmp_dir:
        tmp, port = Path(tmp_dir), free_port()
        policy_file = tmp / "policies.json"
        policy_file.write_text(json.dumps({"policies": policies}))
        (tmp / "config.json").write_text(json.dumps({
            "listen_port": port, "workers": 2, "upstream_url": upstream.url,
            "policy_providers": [{"id": "bench", "type": "file", "path": str(policy_file)}], **config}))
        with open(tmp / "edge.log", "wb") as log:
            proc = subprocess.Popen([str(EDGE), str(tmp / "config.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_policies(f"http://127.0.0.1:{port}", [p["id"] for p in policies], timeout=30, process=proc)
            yield port, policy_file
        except BenchmarkError as exc:
            log = (tmp / "edge.log").read_text(errors="replace")[-3000:]
            raise BenchmarkError(f"{exc}; edge's log:\n{log}") from None
        finally:
            stop_process(proc)


def timed_request(port: int, method: str, path: str, body: bytes | None = None,
                  headers: dict[str, str] | None = None) -> tuple[int, float]:
    """(status, seconds) of one request on a fresh connection (so requests spread over the workers)."""
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            answer.read()
            status = answer.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.perf_counter() - started


def logs_body(n: int = 4) -> bytes:
    records = [{"severityText": "DEBUG" if i % 2 else "INFO", "body": {"stringValue": f"event {i}"}} for i in range(n)]
    return orjson.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]})


def sample_requests(port: int, count: int) -> list[float]:
    """Seconds of `count` OTLP requests; any answer but 200 makes the numbers meaningless."""
    seconds = []
    for _ in range(count):
        status, took = timed_request(port, "POST", "/v1/logs", logs_body(), JSON_CT)
        if status != 200:
            raise BenchmarkError(f"an OTLP request was answered {status}")
        seconds.append(took)
    return seconds


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise BenchmarkError("a scenario's precondition did not come about")
        time.sleep(0.01)


# ── the scenarios: each returns its samples in seconds ──


def reload_latency(upstream: HoldingUpstream, rounds: int) -> list[float]:
    """Rewrite the policy file (atomically, as a careful writer does) and time until edge lists it."""
    samples = []
    with running_edge(upstream, [DROP_DEBUG]) as (port, policy_file):
        for n in range(rounds):
            marker = {"id": f"marker-{n}", "log": {"match": [{"log_field": "body", "exact": f"never-{n}"}],
                                                   "keep": "none"}}
            tmp = policy_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"policies": [DROP_DEBUG, marker]}))
            started = time.perf_counter()
            tmp.replace(policy_file)
            wait_until(lambda m=marker["id"]: m in policy_ids(port))
            samples.append(time.perf_counter() - started)
    return samples


def policy_ids(port: int) -> set[str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_edge/policies?format=json", timeout=10) as answer:
        return {p["id"] for p in json.loads(answer.read()).get("policies") or []}


def admin_at_capacity(upstream: HoldingUpstream, rounds: int) -> list[float]:
    """Fill every slot with requests the upstream holds, then time the admin routes."""
    samples: list[float] = []
    with running_edge(upstream, [DROP_DEBUG], max_connections=4) as (port, _):
        for _ in range(rounds):
            samples += admin_round(upstream, port)
    return samples


def admin_round(upstream: HoldingUpstream, port: int, requests: int = 12) -> list[float]:
    upstream.hold()
    before = upstream.received
    answered: list[int] = []

    def send() -> None:
        answered.append(timed_request(port, "POST", "/v1/logs", logs_body(), JSON_CT)[0])

    senders = [threading.Thread(target=send) for _ in range(requests)]
    for t in senders:
        t.start()
    # every request is held upstream (a slot taken) or already answered (refused): edge is full
    wait_until(lambda: upstream.received - before + len(answered) == requests)
    try:
        return [timed_request(port, "GET", path)[1] for path in ("/_health", "/_edge/policies", "/_edge/metrics")]
    finally:
        upstream.release()
        for t in senders:
            t.join(60)


class Blackhole:
    """Accepts TCP connections and never answers (an S3 endpoint that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.held.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


def s3_store_hanging(upstream: HoldingUpstream, rounds: int) -> list[float]:
    hole = Blackhole()
    dump = {**DROP_DEBUG, "extensions": [{"type": "com.usetero/s3-dump", "mode": "dropped"}]}
    s3 = {"enabled": True, "flush_interval_ms": 50, "max_batch_records": 1, "max_queued_batches": 2,
          "targets": [{"name": "t", "endpoint": f"http://127.0.0.1:{hole.port}", "bucket": "b"}]}
    try:
        with running_edge(upstream, [dump], s3_dump=s3) as (port, _):
            return sample_requests(port, 20 * rounds)
    finally:
        hole.close()


def slow_clients(upstream: HoldingUpstream, rounds: int) -> list[float]:
    stop = threading.Event()
    started: list[int] = []  # slow clients that have sent their first bytes

    def dribble(port: int, data: bytes) -> None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                for i in range(len(data)):
                    if stop.is_set():
                        return
                    sock.sendall(data[i:i + 1])
                    if i == 4:
                        started.append(1)
                    time.sleep(0.05)  # the slow client: one byte every 50 ms
        except OSError:
            return

    head = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Slow: " + b"s" * 200
    body = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n"
    with running_edge(upstream, [DROP_DEBUG]) as (port, _):
        threads = [threading.Thread(target=dribble, args=(port, head)) for _ in range(60)]
        threads += [threading.Thread(target=dribble, args=(port, body + b"{" * 400)) for _ in range(10)]
        for t in threads:
            t.start()
        try:
            wait_until(lambda: len(started) == len(threads))  # all part-way through (they take 15 s and more)
            return sample_requests(port, 10 * rounds)
        finally:
            stop.set()
            for t in threads:
                t.join(10)


def bombs_in_flight(upstream: HoldingUpstream, rounds: int) -> list[float]:
    member = gzip.compress(b"")
    bomb = member * ((1 << 20) // len(member))
    done = threading.Event()
    samples: list[float] = []
    with running_edge(upstream, [DROP_DEBUG], max_body_size=1 << 20) as (port, _):
        sample_requests(port, 20)  # warm both workers

        def send_bombs() -> None:
            for _ in range(3 * rounds):
                timed_request(port, "POST", "/v1/logs", bomb, {**JSON_CT, "Content-Encoding": "gzip"})

        def watch(senders: list[threading.Thread]) -> None:
            for t in senders:
                t.join()
            done.set()

        senders = [threading.Thread(target=send_bombs) for _ in range(2)]
        for t in senders:
            t.start()
        threading.Thread(target=watch, args=(senders,), daemon=True).start()
        while not done.is_set():
            samples += sample_requests(port, 1)
    return samples


SCENARIOS: dict[str, tuple[str, Callable[[HoldingUpstream, int], list[float]]]] = {
    "reload": ("policy file rewrite -> listed", reload_latency),
    "capacity": ("admin routes at max_connections", admin_at_capacity),
    "s3": ("OTLP request, s3-dump store hanging", s3_store_hanging),
    "slow": ("OTLP request among 70 slow clients", slow_clients),
    "bombs": ("OTLP request beside 1 MiB gzip bombs", bombs_in_flight),
}


def report(name: str, label: str, samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return (f"{name:9} {label:40} median {statistics.median(ordered) * 1000:8.1f} ms   "
            f"p99 {p99 * 1000:8.1f} ms   worst {ordered[-1] * 1000:8.1f} ms   ({len(ordered)} samples)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="rounds per scenario (default 10)")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios (default: all)")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown or args.rounds <= 0:
        parser.error(f"unknown scenarios {unknown}" if unknown else "--rounds must be positive")
    upstream = HoldingUpstream().start()
    verdict = 0
    try:
        for name in chosen:
            label, scenario = SCENARIOS[name]
            samples = scenario(upstream, args.rounds)
            print(report(name, label, samples), flush=True)
            if name == "reload":
                median, worst = statistics.median(samples), max(samples)
                print(f"          README promise {RELOAD_PROMISE_S:.0f} s: median "
                      f"{'kept' if median <= RELOAD_PROMISE_S else 'MISSED'}, worst "
                      f"{'kept' if worst <= RELOAD_PROMISE_S else 'missed'}", flush=True)
                verdict |= median > RELOAD_PROMISE_S
    except BenchmarkError as exc:
        print(f"latency.py: {exc}", file=sys.stderr)
        return 1
    finally:
        upstream.stop()
    return verdict


if __name__ == "__main__":
    sys.exit(main())
