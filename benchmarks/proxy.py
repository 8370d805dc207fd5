"""Proxy throughput: edge vs nginx as a plain reverse proxy, same upstream, same load.

    python benchmarks/proxy.py [--seconds 5] [--windows 3] [--connections 32] [--workers 2] [--floor]

Starts (all on loopback, all stopped at the end):
- a counting upstream: nginx reading every request body, logging its length
  (`$request_length`, `$content_length`) and answering 200 `{}`;
- edge (`python -m supervisor.main`) with the ten core policies of benchmarks/engine.py,
  loaded before any load starts (the benchmark polls `/_edge/policies?format=json` until
  their ids are listed: a load before that would measure raw passthrough);
- nginx as a plain reverse proxy to the same upstream;
then drives each proxy with `wrk` POSTing two OTLP/JSON logs bodies (10 and 2,400
records; the table names each by its measured size) for `--seconds` per window, the
proxies taking turns within each of `--windows` windows so that a busy neighbour slows
them all alike.

Reported per body and proxy: req/s as the median window (headline) and the best, p50 and
p99 latency (medians), the CPU time the proxy's processes used per request (median; on a
shared machine steadier than req/s), and the body bytes the upstream received per request
and per second. nginx forwards every record; edge forwards what its policies keep, so it
sends fewer bytes upstream per request: the record counts edge's policies keep of each body
are printed above its table. Then each proxy's req/s as a share of nginx's, edge's records
per second and per CPU-second, and edge's RSS and PSS by process (supervisor, gunicorn master, HTTP
workers, gRPC workers). With `--floor` it also serves `benchmarks/floor_app.py` (gunicorn,
Falcon and aiohttp forwarding bodies with no policy work) on each worker class considered
for edge's HTTP workers, side by side: `floor` on edge's own (`supervisor.main.WORKER_CLASS`),
the others named by theirs. edge's req/s and p99 are then also given against `floor`'s, to
show how much of the gap to nginx is the stack and how much is edge's own work, and edge's CPU
per request above the floor's is printed next to what evaluating the same body costs in this
process (parse, policies, serialise) and the budget 80% of the floor's req/s would leave.

Any answer other than 2xx during a load (wrk's "Non-2xx or 3xx responses") fails the run
with a non-zero exit. Needs Debian's `nginx-light` and `wrk`; the machine running it is
shared by wrk, the proxies and the upstream, so read the ratios rather than the absolutes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    ROOT,
    BenchmarkError,
    free_port,
    median_best,
    process_tree,
    pss_mb,
    rss_mb,
    run_in_scratch,
    tree_cpu_seconds,
    wait_http,
    wait_policies,
)
from benchmarks.engine import CORE_POLICIES, make_request  # noqa: E402
from edge.engine.engine import Engine  # noqa: E402
from edge.formats.otlp.body import evaluate  # noqa: E402
from edge.memory import tune_gc  # noqa: E402
from edge.policy.compiler import compile_policies  # noqa: E402
from edge.policy.loader import load_document  # noqa: E402
from supervisor.main import WORKER_CLASS  # noqa: E402

BODY_RECORDS = (10, 2400)
FLOOR = "floor"  # the floor app on edge's own worker class: what edge is measured against
# The floor app on every worker class considered for edge's HTTP workers: gunicorn's `-k` and its options.
FLOOR_CLASSES = {
    FLOOR: [WORKER_CLASS],  # uvicorn's worker with gunicorn's request-head limits
    "floor-uvicorn": ["uvicorn_worker.UvicornWorker"],  # the same without them: what the limits cost
    "floor-asgi": ["asgi", "--asgi-loop", "uvloop"],  # gunicorn's own ASGI worker (Python HTTP parser)
    "floor-h11": ["uvicorn_worker.UvicornH11Worker"],  # uvicorn's pure-Python parser (h11), asyncio's loop
}
COLLECTOR_PER_CORE = 10_000  # records/s per core, the OpenTelemetry Collector's published sizing

NGINX_CONF = """
worker_processes {workers};
pid {tmp}/nginx-{name}.pid;
error_log {tmp}/nginx-{name}.err warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body-{name};
    proxy_temp_path {tmp}/proxy-{name};
    client_max_body_size 16m;
    client_body_buffer_size 16m;
    {http}
}}
"""

# The proxy under test: keep-alive connections to the upstream, as edge keeps them.
PROXY_HTTP = """
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ''; }}
    }}
"""

# The upstream must read each body for `$request_length` to include it (`return` alone
# discards it unread): it proxies every request, without its body, to a sink on another
# loopback port that answers 200 `{}`; the body has been read and counted by then.
# (A TCP port, not a unix socket: the worker processes may run as another user.)
UPSTREAM_HTTP = """
    log_format counted '$request_length $content_length $status';
    upstream sink {{ server 127.0.0.1:{sink_port}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{port};
        access_log {tmp}/upstream.log counted;
        location / {{
            proxy_pass http://sink; proxy_http_version 1.1; proxy_set_header Connection '';
            proxy_pass_request_body off; proxy_set_header Content-Length '';
        }}
    }}
    server {{ listen 127.0.0.1:{sink_port}; location / {{ return 200 '{{}}'; }} }}
"""


def start_nginx(tmp: Path, name: str, workers: int, http: str) -> None:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, name=name, workers=workers, http=http))
    subprocess.run(["nginx", "-c", str(conf), "-p", str(tmp)], check=True)


def nginx_pid(tmp: Path, name: str) -> int | None:
    pid_file = tmp / f"nginx-{name}.pid"
    return int(pid_file.read_text()) if pid_file.exists() else None


def stop_nginx(tmp: Path, name: str) -> None:
    pid = nginx_pid(tmp, name)
    if pid is not None:
        os.kill(pid, signal.SIGQUIT)


CLIENT_CLOSED = b"499"  # nginx's status for a request whose client closed the connection first


class UpstreamLog:
    """What the upstream received since the last `take()`, from its access log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def take(self) -> tuple[int, int]:
        """(requests, body bytes) logged since the last call."""
        time.sleep(0.3)  # requests in flight when wrk stopped reach the upstream and the log
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        self.offset += len(data)
        requests = body = 0
        for line in data.splitlines():
            _, content_length, status = line.split()
            if status == CLIENT_CLOSED:
                continue  # in flight when wrk stopped: the proxy dropped its upstream request with its client
            if not status.startswith(b"2"):
                raise BenchmarkError(f"the upstream answered {status.decode()}: the benchmark is broken")
            requests += 1
            body += int(content_length) if content_length != b"-" else 0
        return requests, body


@dataclass
class Proxy:
    name: str
    port: int
    pid: int  # the root of its process tree, whose CPU time is measured


@dataclass
class Window:
    rps: float
    p50_ms: float
    p99_ms: float
    seconds: float  # wrk's own measure of the window
    cpu_seconds: float  # used by the proxy's processes during the load
    upstream_requests: int
    upstream_body: int  # body bytes the upstream received

    @property
    def upstream_per_request(self) -> float:
        return self.upstream_body / self.upstream_requests if self.upstream_requests else 0.0

    @property
    def cpu_us_per_request(self) -> float:
        return self.cpu_seconds / (self.rps * self.seconds) * 1e6


def wrk(url: str, body_file: Path, seconds: float, connections: int) -> tuple[float, float, float, float]:
    """(req/s, p50 ms, p99 ms, seconds) of one load; BenchmarkError on any non-2xx answer."""
    script = body_file.with_suffix(".lua")
    script.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body_file}", "rb"); wrk.body = f:read("*all"); f:close()
""")
    duration = max(1, round(seconds))  # wrk takes whole seconds
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{duration}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if failed:
        raise BenchmarkError(f"{url} gave {failed.group(1)} non-2xx answers under load:\n{out}")
    done = re.search(r"(\d+) requests in ([\d.]+)(ms|s|m)\b", out)
    if done is None or int(done.group(1)) == 0:
        raise BenchmarkError(f"{url} answered no request under load:\n{out}")
    errors = re.search(r"Socket errors: .*", out)
    if errors:
        print(f"proxy.py: {url}: {errors.group(0)}", file=sys.stderr)
    elapsed = float(done.group(2)) * {"ms": 1e-3, "s": 1.0, "m": 60.0}[done.group(3)]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return rate, _ms(out, "50%"), _ms(out, "99%"), elapsed


def _ms(out: str, label: str) -> float:
    m = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def start_floor(port: int, upstream_port: int, workers: int, worker_class: list[str]) -> subprocess.Popen:
    """benchmarks/floor_app.py under gunicorn with edge's worker settings, on `worker_class` (`-k` and options)."""
    argv = [sys.executable, "-m", "gunicorn", "-k", *worker_class, "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--keep-alive", "75", "--log-level", "warning", "--no-control-socket",
            "benchmarks.floor_app:app"]
    process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "FLOOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}"})
    wait_http(f"http://127.0.0.1:{port}/_health", process=process)
    return process


def body_label(body: bytes, records: int) -> str:
    size = f"{len(body) / 1024:.1f} KB" if len(body) < 1 << 20 else f"{len(body) / (1 << 20):.2f} MB"
    return f"{size} body ({records:,} records)"


def core_engine() -> Engine:
    """An engine with edge's policies in this benchmark, the core ten of benchmarks/engine.py."""
    return Engine(compile_policies(load_document({"policies": CORE_POLICIES}).policies), rng=random.Random(1))


def kept_records(body: bytes) -> tuple[int, int]:
    """(records in, records edge's policies keep) of a body, by edge's own evaluation."""
    engine = core_engine()
    outcome = evaluate(engine, "log", body, "application/json").outcome
    return outcome.total, outcome.kept


def median(windows: list[Window], value: str) -> float:
    return median_best([getattr(w, value) for w in windows])[0]


def report(label: str, body: bytes, results: dict[str, list[Window]]) -> None:
    total, kept = kept_records(body)
    print(f"\n{label}: nginx and the floors forward all {total} records, edge's policies keep {kept}")
    report_table(results)
    report_ratios(results)
    if FLOOR in results:
        report_budget(body, results)
    report_edge(body, total, results["edge"])
    sys.stdout.flush()


def report_table(results: dict[str, list[Window]]) -> None:
    print(f"{'proxy':13} {'req/s':>9} {'(best)':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU us/req':>11} "
          f"{'upstream KB/req':>16} {'upstream MB/s':>14}")
    for name, windows in results.items():
        rps, best = median_best([w.rps for w in windows])
        rate = median_best([w.upstream_body / w.seconds for w in windows])[0]
        print(f"{name:13} {rps:9,.0f} {best:9,.0f} {median(windows, 'p50_ms'):8.2f} {median(windows, 'p99_ms'):8.2f} "
              f"{median(windows, 'cpu_us_per_request'):11,.0f} {median(windows, 'upstream_per_request') / 1024:16,.1f} "
              f"{rate / 1e6:14,.1f}")


def report_ratios(results: dict[str, list[Window]]) -> None:
    """Every proxy's req/s against nginx's; edge's req/s, p99 and CPU per request against the floor's."""
    nginx = median(results["nginx"], "rps")
    for name, windows in results.items():
        if name != "nginx":
            print(f"{name}/nginx req/s (medians): {median(windows, 'rps') / nginx:.0%}")
    if FLOOR in results:
        edge, floor = results["edge"], results[FLOOR]
        print(f"edge/{FLOOR}: req/s {median(edge, 'rps') / median(floor, 'rps'):.0%}, "
              f"p99 {median(edge, 'p99_ms') / median(floor, 'p99_ms'):.2f}x, "
              f"CPU per request {median(edge, 'cpu_us_per_request') / median(floor, 'cpu_us_per_request'):.2f}x")


def evaluation_us(body: bytes) -> float:
    """CPU per request of edge's own work on a body, in this process: parse, the core policies, serialise
    (`evaluate`, as the proxy calls it, with the collector tuned as in a worker), the median of 5
    half-second runs."""
    tune_gc()
    engine = core_engine()
    runs = []
    for _ in range(5):
        count, start = 0, time.process_time()
        while (spent := time.process_time() - start) < 0.5:
            evaluate(engine, "log", body, "application/json")
            count += 1
        runs.append(spent / count * 1e6)
    return median_best(runs)[0]


def report_budget(body: bytes, results: dict[str, list[Window]]) -> None:
    """How edge's CPU per request above the floor's compares with evaluating the body alone.

    When the proxy's CPU sets the pace, 80% of the floor's req/s allows 1.25x its CPU per request:
    a quarter of the floor's CPU for everything edge adds, policies included."""
    edge, floor = (median(results[name], "cpu_us_per_request") for name in ("edge", FLOOR))
    print(f"edge's CPU per request above {FLOOR}'s: {edge - floor:,.0f} us; evaluating the body alone "
          f"(parse, policies, serialise; in-process, one core): {evaluation_us(body):,.0f} us; "
          f"80% of {FLOOR}'s req/s leaves ~{floor / 4:,.0f} us")


def report_edge(body: bytes, records: int, edge: list[Window]) -> None:
    """edge's throughput in body bytes and records, and records per CPU-second next to the Collector's sizing."""
    rps = median(edge, "rps")
    per_cpu = median_best([w.rps * w.seconds * records / w.cpu_seconds for w in edge])[0]
    print(f"edge: {rps * len(body) / 1e6:,.1f} MB/s of bodies in, {rps * records:,.0f} records/s, "
          f"{per_cpu:,.0f} records per CPU-second of its processes (per core; the OpenTelemetry Collector's "
          f"sizing: ~{COLLECTOR_PER_CORE:,} per core)")


def process_role(root: int, pid: int) -> str:
    """What a process of edge's tree (rooted at the supervisor) is, for the RSS breakdown."""
    if pid == root:
        return "supervisor"
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        parent = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except OSError:
        return "other"
    if "gunicorn" in command:
        return "gunicorn master" if parent == root else "HTTP workers"
    return "gRPC workers" if "workers.grpc" in command else "other"


def report_rss(pid: int, when: str) -> None:
    """edge's memory by process (the supervisor, gunicorn's master and workers, the gRPC workers, the rest):
    RSS, and PSS, which counts the pages forked workers share with their master once."""
    roles: dict[str, list[tuple[float, float]]] = {}
    for member in process_tree(pid):
        roles.setdefault(process_role(pid, member), []).append((rss_mb(member), pss_mb(member)))
    for name, column in (("RSS", 0), ("PSS", 1)):
        parts = ", ".join(f"{role} {sum(s[column] for s in sizes):.0f}" + (f" ({len(sizes)})" if len(sizes) > 1 else "")
                          for role, sizes in roles.items())
        total = sum(s[column] for sizes in roles.values() for s in sizes)
        print(f"edge {name} {when}: {total:.0f} MB = {parts}")


def run(args: argparse.Namespace, tmp: Path) -> None:
    bodies = {}
    for records in BODY_RECORDS:
        body = orjson.dumps(make_request(records))
        path = tmp / f"body-{records}.json"
        path.write_bytes(body)
        bodies[body_label(body, records)] = (body, path)
    (tmp / "policies.json").write_text(json.dumps({"policies": CORE_POLICIES}))
    upstream_port, nginx_port, edge_port = free_port(), free_port(), free_port()
    config = {"listen_port": edge_port, "upstream_url": f"http://127.0.0.1:{upstream_port}", "log_level": "warn",
              "workers": args.workers, "max_body_size": 16 << 20,
              "policy_providers": [{"id": "bench", "type": "file", "path": str(tmp / "policies.json")}]}
    (tmp / "config.json").write_text(json.dumps(config))

    edge = None
    floors: list[subprocess.Popen] = []
    try:
        upstream_http = UPSTREAM_HTTP.format(tmp=tmp, port=upstream_port, sink_port=free_port())
        start_nginx(tmp, "upstream", args.workers, upstream_http)
        start_nginx(tmp, "proxy", args.workers, PROXY_HTTP.format(port=nginx_port, upstream_port=upstream_port))
        edge = subprocess.Popen([sys.executable, "-m", "supervisor.main", str(tmp / "config.json")], cwd=ROOT)
        wait_http(f"http://127.0.0.1:{nginx_port}/")
        wait_policies(f"http://127.0.0.1:{edge_port}", (p["id"] for p in CORE_POLICIES), process=edge)
        proxies = [Proxy("nginx", nginx_port, nginx_pid(tmp, "proxy") or 0), Proxy("edge", edge_port, edge.pid)]
        for name, worker_class in FLOOR_CLASSES.items() if args.floor else ():
            port = free_port()
            floors.append(start_floor(port, upstream_port, args.workers, worker_class))
            proxies.append(Proxy(name, port, floors[-1].pid))
        measure(args, bodies, proxies, UpstreamLog(tmp / "upstream.log"))
        print()
        report_rss(edge.pid, "right after the load")
        time.sleep(3)
        report_rss(edge.pid, "3 s later")
    finally:
        for process in (*floors, edge):
            if process is not None:
                process.send_signal(signal.SIGTERM)
                process.wait(30)
        stop_nginx(tmp, "proxy")
        stop_nginx(tmp, "upstream")
        time.sleep(0.3)


def measure(args: argparse.Namespace, bodies: dict[str, tuple[bytes, Path]], proxies: list[Proxy],
            upstream: UpstreamLog) -> None:
    """Every window runs every proxy once per body, so drift on the machine hits all of them alike."""
    upstream.take()  # the readiness probes
    results: dict[str, dict[str, list[Window]]] = {label: {p.name: [] for p in proxies} for label in bodies}
    for window in range(args.windows):
        print(f"window {window + 1} of {args.windows} ...", file=sys.stderr, flush=True)
        for label, (_, path) in bodies.items():
            for proxy in proxies:
                cpu = tree_cpu_seconds(proxy.pid)
                rps, p50, p99, seconds = wrk(f"http://127.0.0.1:{proxy.port}/v1/logs", path, args.seconds,
                                             args.connections)
                cpu = tree_cpu_seconds(proxy.pid) - cpu
                requests, body_bytes = upstream.take()
                results[label][proxy.name].append(Window(rps, p50, p99, seconds, cpu, requests, body_bytes))
    for label, (body, _) in bodies.items():
        report(label, body, results[label])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="length of one load (whole seconds)")
    parser.add_argument("--windows", type=int, default=3, help="loads per proxy and body (median and best shown)")
    parser.add_argument("--connections", type=int, default=32, help="wrk's concurrent connections")
    parser.add_argument("--workers", type=int, default=2, help="edge workers, and nginx worker processes")
    parser.add_argument("--floor", action="store_true",
                        help="also measure benchmarks/floor_app.py on each worker class considered")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"proxy.py: {tool} is missing (apt-get install nginx-light wrk)", file=sys.stderr)
            return 2
    return run_in_scratch("proxy.py", run, args)


if __name__ == "__main__":
    sys.exit(main())
