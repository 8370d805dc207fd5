"""Proxy throughput: edge vs nginx as a plain reverse proxy, same upstream, same load.

    python benchmarks/proxy.py [--seconds 10] [--connections 32] [--workers 2] [--floor]

Starts (all on loopback, all stopped at the end):
- an upstream: nginx answering 200 `{}` to every POST (fast, so the proxies are measured);
- edge (`python -m supervisor.main`) with the ten core policies of benchmarks/engine.py;
- nginx as a plain reverse proxy to the same upstream;
then drives each proxy with `wrk` POSTing OTLP/JSON logs of ~4 KB and ~1 MB and reports
req/s, p50/p99 latency, MB/s, edge's req/s as a ratio of nginx's, and edge's total RSS
(supervisor + gunicorn master + workers). With `--floor` it also serves
`benchmarks/floor_app.py` (the same gunicorn/Falcon/aiohttp stack forwarding bodies with
no policy work) to show how much of the gap to nginx is the stack itself. Needs
Debian's `nginx-light` and `wrk`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.engine import CORE_POLICIES, make_request  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


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
    upstream backend {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{ {body} }}
    }}
}}
"""


def start_nginx(tmp: Path, name: str, port: int, body: str, workers: int, upstream_port: int = 0) -> None:
    conf = tmp / f"nginx-{name}.conf"
    conf.write_text(NGINX_CONF.format(tmp=tmp, name=name, port=port, body=body, workers=workers,
                                      upstream_port=upstream_port or port))
    subprocess.run(["nginx", "-c", str(conf), "-p", str(tmp)], check=True)


def stop_nginx(tmp: Path, name: str) -> None:
    pid_file = tmp / f"nginx-{name}.pid"
    if pid_file.exists():
        os.kill(int(pid_file.read_text()), signal.SIGQUIT)


def wrk(url: str, body_file: Path, seconds: float, connections: int) -> dict[str, float]:
    script = body_file.with_suffix(".lua")
    script.write_text(f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("{body_file}", "rb"); wrk.body = f:read("*all"); f:close()
""")
    out = subprocess.run(["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:.0f}s", "--latency",
                          "-s", str(script), url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rate, "p50": _ms(out, "50%"), "p99": _ms(out, "99%"),
            "non2xx": float(errors.group(1)) if errors else 0.0}


def _ms(out: str, label: str) -> float:
    m = re.search(rf"{re.escape(label)}\s+([\d.]+)(us|ms|s)\b", out)
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (OSError, AttributeError):
            continue
        todo.extend(int(c) for c in children)
    return total / 1024


def start_floor(port: int, upstream_port: int, workers: int) -> subprocess.Popen:
    """benchmarks/floor_app.py under gunicorn with edge's worker settings."""
    argv = [sys.executable, "-m", "gunicorn", "-k", "asgi", "--asgi-loop", "uvloop", "--workers", str(workers),
            "--bind", f"127.0.0.1:{port}", "--keep-alive", "75", "--log-level", "warning", "--no-control-socket",
            "benchmarks.floor_app:app"]
    process = subprocess.Popen(argv, cwd=ROOT, env={**os.environ, "FLOOR_UPSTREAM": f"http://127.0.0.1:{upstream_port}"})
    wait_http(f"http://127.0.0.1:{port}/_health")
    return process


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--floor", action="store_true", help="also measure benchmarks/floor_app.py")
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"proxy.py: {tool} is missing (apt-get install nginx-light wrk)", file=sys.stderr)
            return 2

    tmp = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    bodies = {"4KB": make_request(10), "1MB": make_request(2400)}
    files = {}
    for label, doc in bodies.items():
        files[label] = tmp / f"body-{label}.json"
        files[label].write_bytes(json.dumps(doc).encode())
    (tmp / "policies.json").write_text(json.dumps({"policies": CORE_POLICIES}))
    upstream_port, nginx_port, edge_port, floor_port = free_port(), free_port(), free_port(), free_port()
    config = {"listen_port": edge_port, "upstream_url": f"http://127.0.0.1:{upstream_port}", "log_level": "warn",
              "workers": args.workers, "max_body_size": 16 << 20,
              "policy_providers": [{"id": "bench", "type": "file", "path": str(tmp / "policies.json")}]}
    (tmp / "config.json").write_text(json.dumps(config))

    edge = floor = None
    proxies = [("nginx", nginx_port), ("edge", edge_port)]
    try:
        start_nginx(tmp, "upstream", upstream_port, "return 200 '{}';", 1)
        start_nginx(tmp, "proxy", nginx_port, "proxy_pass http://backend; proxy_http_version 1.1; "
                    "proxy_set_header Connection '';", args.workers, upstream_port)
        edge = subprocess.Popen([sys.executable, "-m", "supervisor.main", str(tmp / "config.json")], cwd=ROOT)
        wait_http(f"http://127.0.0.1:{edge_port}/_health")
        if args.floor:
            floor = start_floor(floor_port, upstream_port, args.workers)
            proxies.append(("floor", floor_port))
        time.sleep(1.0)  # policies load in the background
        print(f"{'payload':8} {'proxy':6} {'req/s':>9} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8}")
        for label, path in files.items():
            size_mb = path.stat().st_size / 1e6
            results = {}
            for name, port in proxies:
                r = wrk(f"http://127.0.0.1:{port}/v1/logs", path, args.seconds, args.connections)
                results[name] = r
                print(f"{label:8} {name:6} {r['rps']:9,.0f} {r['rps'] * size_mb:8,.1f} {r['p50']:8.2f} "
                      f"{r['p99']:8.2f} {r['non2xx']:8.0f}")
                sys.stdout.flush()
            for name in results:
                if name != "nginx":
                    print(f"{label:8} {name}/nginx req/s ratio: {results[name]['rps'] / results['nginx']['rps']:.0%}")
        loaded = tree_rss_mb(edge.pid)
        time.sleep(3)
        print(f"edge total RSS (supervisor + gunicorn + {args.workers} workers): {loaded:.0f} MB right after "
              f"the load, {tree_rss_mb(edge.pid):.0f} MB 3 s later")
    finally:
        if floor is not None:
            floor.send_signal(signal.SIGTERM)
            floor.wait(30)
        if edge is not None:
            edge.send_signal(signal.SIGTERM)
            edge.wait(30)
        stop_nginx(tmp, "proxy")
        stop_nginx(tmp, "upstream")
        time.sleep(0.3)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
