"""Memory of a worker filtering batches near the 20 MiB default limits.

    python benchmarks/big_batches.py [--requests 5] [--mib 19]

`max_body_size` and `max_decoded_bytes` default to 20 MiB, as the OpenTelemetry Collector's
receivers accept. This runs the real `edge` (one worker, default limits, a redact and a drop
log policy) next to a counting loopback upstream and posts OTLP log batches of ~3 KB records
that decode to `--mib` MiB: protobuf and JSON, gzip-compressed, one at a time. It reports
the worker's RSS before (the floor, measured in the same run), its peak over the requests
and after them, the median request time, and checks that every kept record arrived.
Exit status 0 unless edge could not run or records went missing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import BenchmarkError, CountingUpstream, free_port, stop_process, wait_policies  # noqa: E402

EDGE = Path(sys.executable).parent / "edge"
RECORD_BYTES = 3000
POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "redact-secret", "log": {"match": [{"log_field": "body", "contains": "secret-"}], "keep": "all",
                                    "transform": {"redact": [{"log_field": "body", "regex": "secret-\\w+",
                                                              "replacement": "<redacted>"}]}}},
]


def batch(mib: float) -> tuple[dict[str, Any], int]:
    """An OTLP logs document of ~`mib` MiB of ~3 KB records (one in four DEBUG); and its kept count."""
    count = int(mib * (1 << 20) / (RECORD_BYTES + 60))
    records = [{"severityText": "DEBUG" if n % 4 == 0 else "INFO",
                "body": {"stringValue": f"rec-{n} token secret-{n}x used " + "p" * RECORD_BYTES}}
               for n in range(count)]
    doc = {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name",
                                                          "value": {"stringValue": "bench"}}]},
                             "scopeLogs": [{"scope": {"name": "bench"}, "logRecords": records}]}]}
    return doc, count - (count + 3) // 4


@contextmanager
def running_edge(upstream_url: str) -> Iterator[tuple[int, psutil.Process]]:
    """`edge` with one worker and the default body limits; yields (port, the worker process)."""
    with tempfile.TemporaryDirectory(prefix="edge-big-") as tmp_dir:
        tmp, port = Path(tmp_dir), free_port()
        (tmp / "policies.json").write_text(json.dumps({"policies": POLICIES}))
        (tmp / "config.json").write_text(json.dumps({
            "listen_port": port, "workers": 1, "upstream_url": upstream_url,
            "policy_providers": [{"id": "bench", "type": "file", "path": str(tmp / "policies.json")}]}))
        with open(tmp / "edge.log", "wb") as log:
            proc = subprocess.Popen([str(EDGE), str(tmp / "config.json")], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_policies(f"http://127.0.0.1:{port}", [p["id"] for p in POLICIES], timeout=30, process=proc)
            workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if not p.children()
                       and "gunicorn" in " ".join(p.cmdline())]
            if len(workers) != 1:
                raise BenchmarkError(f"expected one gunicorn worker, found {len(workers)}")
            yield port, workers[0]
        finally:
            stop_process(proc)


def post(port: int, body: bytes, content_type: str) -> float:
    """Seconds for one gzip POST to /v1/logs; raises unless it is answered 200."""
    started = time.perf_counter()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/logs", data=body, method="POST",
                                     headers={"Content-Type": content_type, "Content-Encoding": "gzip"})
    with urllib.request.urlopen(request, timeout=120) as answer:
        answer.read()
        if answer.status != 200:
            raise BenchmarkError(f"answered {answer.status}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5, help="requests per encoding (default 5)")
    parser.add_argument("--mib", type=float, default=19.0, help="decoded MiB per batch (default 19)")
    args = parser.parse_args()
    doc, kept = batch(args.mib)
    bodies = {"protobuf": (json_format.ParseDict(doc, ExportLogsServiceRequest()).SerializeToString(),
                           "application/x-protobuf"),
              "json": (json.dumps(doc).encode(), "application/json")}
    upstream = CountingUpstream().start()
    try:
        with running_edge(upstream.url) as (port, worker):
            floor = worker.memory_info().rss / (1 << 20)
            print(f"worker RSS before any request (floor): {floor:.0f} MiB")
            for name, (raw, content_type) in bodies.items():
                compressed = gzip.compress(raw, 1)
                before = upstream.records["log"]
                peak, times = 0.0, []
                for _ in range(args.requests):
                    times.append(post(port, compressed, content_type))
                    peak = max(peak, worker.memory_info().rss / (1 << 20))
                arrived = upstream.records["log"] - before
                print(f"{name}: {len(raw) / (1 << 20):.1f} MiB decoded ({len(compressed) / (1 << 20):.1f} MiB gzip), "
                      f"median {statistics.median(times):.2f} s; worker RSS peak {peak:.0f} MiB, after "
                      f"{worker.memory_info().rss / (1 << 20):.0f} MiB; records kept {arrived}/{kept * args.requests}")
                if arrived != kept * args.requests:
                    raise BenchmarkError(f"{name}: {kept * args.requests - arrived} kept records missing upstream")
    except BenchmarkError as exc:
        print(f"big_batches: {exc}", file=sys.stderr)
        return 1
    finally:
        upstream.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
