"""Policy engine throughput: parse + evaluate + serialise OTLP log batches, per core.

    python benchmarks/engine.py [--records 10,100,3000] [--seconds 1] [--windows 5]
                                [--policies 10,1000] [--formats json,protobuf] [--mix full|filters]

Builds realistic OTLP logs requests (mixed services, severities, HTTP-ish bodies, a few
attributes) of each requested size, policy sets of the requested sizes (a core of ten
typical policies - drops, sampling, a rate limit, a redaction - plus generated
drop policies that rarely match, as large policy sets look in practice), and reports
records/s on one core for OTLP/JSON and OTLP/protobuf bodies, end to end through
`edge.formats.otlp.body.evaluate` (the same call the proxy makes).

Real senders post small batches (10 to 512 records), so every row measures each batch
size side by side: the windows of all sizes take turns, and a neighbour slowing the
machine down slows them all. From the smallest and the largest size each row derives the
engine's fixed cost per batch (time per batch = fixed + records x marginal cost per
record) and the ratio the engine is held to: records/s at the smallest size over
records/s at the largest, the median of the per-window ratios. At 50% or more a small
batch costs at most twice its records' share of a big one.

Records/s are per CPU-second of this process (the per-core figure). Each cell is the
median of `--windows` windows; every engine window is paired with a floor window in the
same run - parsing and re-serialising the same body with no policies (orjson for JSON,
protobuf for protobuf) - and "of floor" is the median of the paired ratios.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import filler_policies  # noqa: E402
from edge.engine.engine import Engine  # noqa: E402
from edge.formats.otlp.body import evaluate  # noqa: E402
from edge.memory import tune_gc  # noqa: E402
from edge.policy.compiler import compile_policies  # noqa: E402
from edge.policy.loader import load_document  # noqa: E402

SERVICES = ["checkout", "payments", "catalog", "search", "auth"]
SEVERITIES = ["INFO"] * 6 + ["DEBUG"] * 2 + ["WARN", "ERROR"]
PATHS = ["/api/users", "/api/orders", "/api/cart", "/static/app.js", "/healthz", "/api/search"]
METHODS = ["GET"] * 5 + ["POST", "PUT", "OPTIONS"]


def _body(rng: random.Random) -> str:
    method, path = rng.choice(METHODS), rng.choice(PATHS)
    status = rng.choice([200] * 8 + [404, 500])
    extra = rng.choice(["", " contact=jane.doe@example.com", " retry=1", " upstream timeout",
                        f" error-code-{rng.randrange(5000)}"])
    return (f"{method} {path}/{rng.randrange(10_000)} {status} {rng.randrange(1, 900)}ms "
            f"user_id={rng.randrange(100_000)} trace={rng.getrandbits(64):016x}{extra}")


def make_request(records: int, seed: int = 7) -> dict:
    """One OTLP logs request: 5 resources x 2 scopes, `records` records in all."""
    rng = random.Random(seed)
    per_scope = max(1, records // (len(SERVICES) * 2))
    resource_logs = []
    for service in SERVICES:
        scopes = []
        for scope in ("http", "app"):
            recs = []
            for _ in range(per_scope):
                recs.append({
                    "timeUnixNano": str(1_700_000_000_000_000_000 + rng.randrange(10**9)),
                    "severityText": rng.choice(SEVERITIES),
                    "body": {"stringValue": _body(rng)},
                    "attributes": [
                        {"key": "http.method", "value": {"stringValue": rng.choice(METHODS)}},
                        {"key": "http.status_code", "value": {"intValue": str(rng.choice([200, 200, 404, 500]))}},
                        {"key": "tenant", "value": {"stringValue": f"tenant-{rng.randrange(2000)}"}},
                    ],
                    "traceId": f"{rng.getrandbits(128):032x}",
                    "spanId": f"{rng.getrandbits(64):016x}",
                })
            scopes.append({"scope": {"name": scope}, "logRecords": recs})
        resource_logs.append({
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeLogs": scopes,
        })
    return {"resourceLogs": resource_logs}


CORE_POLICIES = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "drop-health", "log": {"match": [{"log_field": "body", "contains": "/healthz"}], "keep": "none"}},
    {"id": "drop-static", "log": {"match": [{"log_field": "body", "regex": r"^GET /static/"}], "keep": "none"}},
    {"id": "drop-options", "log": {"match": [{"log_attribute": "http.method", "exact": "OPTIONS"}],
                                   "keep": "none"}},
    {"id": "sample-catalog", "log": {"match": [{"resource_attribute": "service.name", "exact": "catalog"}],
                                     "keep": "25%", "sample_key": {"log_field": "trace_id"}}},
    {"id": "limit-errors", "log": {"match": [{"log_field": "severity_text", "exact": "ERROR"}],
                                   "keep": "100000/s"}},
    {"id": "keep-5xx", "log": {"match": [{"log_attribute": "http.status_code", "gte": 500}], "keep": "all"}},
    {"id": "redact-email", "log": {"match": [{"log_field": "body", "contains": "@"}], "keep": "all",
                                   "transform": {"redact": [{"log_field": "body",
                                                             "regex": r"[\w.]+@[\w.]+",
                                                             "replacement": "<email>"}]}}},
    {"id": "drop-timeouts-auth", "log": {"match": [
        {"resource_attribute": "service.name", "exact": "auth"},
        {"log_field": "body", "regex": r"upstream timeout$"}], "keep": "none"}},
    {"id": "tag-payments", "log": {"match": [{"resource_attribute": "service.name", "exact": "payments"}],
                                   "keep": "all", "transform": {"add": [{"log_attribute": "team",
                                                                         "value": "money"}]}}},
]


# The same ten without transforms (the two transform policies become plain filters):
# separates the cost of matching and keep decisions from the cost of rewriting records.
FILTER_POLICIES = [p for p in CORE_POLICIES if "transform" not in p["log"]] + [
    {"id": "drop-retries", "log": {"match": [{"log_field": "body", "ends_with": " retry=1"}], "keep": "none"}},
    {"id": "keep-payments", "log": {"match": [{"resource_attribute": "service.name", "exact": "payments"}],
                                    "keep": "all"}},
]


def make_policies(count: int, mix: str = "full") -> dict:
    """The ten core policies plus generated, rarely matching drop policies."""
    core = CORE_POLICIES if mix == "full" else FILTER_POLICIES
    policies = list(core[:count])
    return {"policies": policies + filler_policies(count - len(policies), "tenant", "tenant-")}


def _protobuf_body(doc: dict) -> bytes:
    from google.protobuf import json_format
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    return json_format.ParseDict(doc, ExportLogsServiceRequest()).SerializeToString()


def _rate(step: Callable[[], object], records: int, seconds: float) -> float:
    """Records per CPU-second of repeating `step` for `seconds`.

    Per CPU-second is the per-core figure: on a shared VM the wall clock also counts
    time the hypervisor gave to someone else (steal), the process CPU clock does not.
    """
    runs, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs * records / (time.process_time() - cpu_start)


def floor_step(body: bytes, content_type: str) -> Callable[[], object]:
    """Parsing and re-serialising the body with no policy work: the floor of any engine.

    Shared VMs drift by 2x within minutes (neighbours slow the CPU clock down too), so
    every engine window is paired with a floor window and the ratio is reported too.
    """
    if "protobuf" in content_type:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        def roundtrip() -> bytes:
            return ExportLogsServiceRequest.FromString(body).SerializeToString()
        return roundtrip
    return lambda: orjson.dumps(orjson.loads(body))


@dataclass
class Cell:
    """One batch size of one row: per-window engine and floor rates, in records/s/core."""

    records: int  # in the body (`measure` counts them)
    body: bytes
    content_type: str
    rates: list[float] = field(default_factory=list)
    floors: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def of_floor(self) -> float:
        return statistics.median(r / f for r, f in zip(self.rates, self.floors, strict=True))

    @property
    def seconds_per_batch(self) -> float:
        return self.records / self.rate


def measure(engine: Engine, cells: list[Cell], seconds: float, windows: int) -> None:
    """Fill every cell's windows, the sizes taking turns window by window."""
    steps = []
    for cell in cells:
        body, content_type = cell.body, cell.content_type
        cell.records = evaluate(engine, "log", body, content_type).outcome.total  # first use loads the databases
        steps.append((cell, floor_step(body, content_type),
                      lambda body=body, content_type=content_type: evaluate(engine, "log", body, content_type)))
    for _ in range(windows):
        for cell, floor, step in steps:
            cell.floors.append(_rate(floor, cell.records, seconds / 2))
            cell.rates.append(_rate(step, cell.records, seconds))


def fixed_cost(small: Cell, large: Cell) -> float:
    """Seconds per batch that do not depend on its size: time = fixed + records x per record."""
    per_record = (large.seconds_per_batch - small.seconds_per_batch) / (large.records - small.records)
    return small.seconds_per_batch - small.records * per_record


def size_ratio(small: Cell, large: Cell) -> float:
    """Records/s of the small batches over the large ones: the median of the per-window ratios."""
    return statistics.median(s / b for s, b in zip(small.rates, large.rates, strict=True))


def header(sizes: list[int]) -> str:
    cells = "".join(f"{f'@{records} rec/s':>13} {'floor':>5}" for records in sizes)
    ratio = f"@{sizes[0]}/@{sizes[-1]}"
    return (f"{'format':9} {'policies':>8}{cells} {'fixed µs/batch':>14} {ratio:>10} {'compile s':>9}"
            f"   (rec/s/core, medians of --windows; target: {ratio} >= 50%)")


def row(name: str, count: int, cells: list[Cell], compile_s: float) -> str:
    rates = "".join(f"{cell.rate:13,.0f} {cell.of_floor:5.0%}" for cell in cells)
    small, large = cells[0], cells[-1]
    derived = (f"{fixed_cost(small, large) * 1e6:14.1f} {size_ratio(small, large):10.0%}" if len(cells) > 1
               else f"{'-':>14} {'-':>10}")
    return f"{name:9} {count:8d}{rates} {derived} {compile_s:9.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="10,100,3000", help="batch sizes, measured side by side")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measuring window")
    parser.add_argument("--windows", type=int, default=5, help="windows per cell (the median is shown)")
    parser.add_argument("--policies", default="10,1000")
    parser.add_argument("--formats", default="json,protobuf")
    parser.add_argument("--mix", choices=("full", "filters"), default="full",
                        help="full: drops, sampling, a rate limit, a redaction and an add; filters: no transforms")
    args = parser.parse_args()

    tune_gc()  # as every evaluating process of edge runs
    sizes = sorted({int(r) for r in args.records.split(",")})
    docs = {records: make_request(records) for records in sizes}
    encoders = {"json": (orjson.dumps, "application/json"), "protobuf": (_protobuf_body, "application/x-protobuf")}
    print(header(sizes))
    for count in (int(c) for c in args.policies.split(",")):
        started = time.perf_counter()
        snapshot = compile_policies(load_document(make_policies(count, args.mix)).policies)
        compile_s = time.perf_counter() - started
        for name in args.formats.split(","):
            encode, content_type = encoders[name]
            cells = [Cell(records, encode(docs[records]), content_type) for records in sizes]
            measure(Engine(snapshot, rng=random.Random(1)), cells, args.seconds, args.windows)
            print(row(name, count, cells, compile_s))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
