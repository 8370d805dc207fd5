"""Datadog intake throughput: parse + evaluate + serialise `/api/v2/logs` batches, per core.

    python benchmarks/datadog.py [--records 2000] [--seconds 1] [--windows 5] [--policies 10,100,1000]

Builds Datadog logs payloads as agents send them (`message`, `status`, `service`,
`hostname`, `ddsource`, `ddtags`, a nested `http` object and `dd.trace_id`; one record in
ten carries a JSON-object message with `data.jsonPayload`), policy sets of the requested
sizes (ten typical policies - drops, sampling, a rate limit, a redaction, an add - plus
generated drop policies that rarely match), and reports records/s on one core through
`edge.formats.datadog.body.evaluate` (the call the proxy's Datadog route makes). A
series payload with ten metric policies is measured too, as JSON and as the agent's
protobuf `MetricPayload` (`series-pb`; its floor is parsing and serialising the message).

Records/s are per CPU-second of this process (the per-core figure). Each row is the
median of `--windows` windows (headline) and the best window. Every window is paired
with a floor window in the same run: decoding and re-encoding the same body with
msgspec (the route's parser) and no policies, the least any evaluation must do. "of
floor" is the median of the paired ratios, so a neighbour slowing the machine down
moves both sides of it.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import filler_policies, median_best  # noqa: E402
from edge.engine.engine import Engine  # noqa: E402
from edge.formats.datadog.body import evaluate  # noqa: E402
from edge.memory import tune_gc  # noqa: E402
from edge.policy.compiler import compile_policies  # noqa: E402
from edge.policy.loader import load_document  # noqa: E402
from edge.proto.datadog.agentpayload.agent_payload_pb2 import MetricPayload  # noqa: E402

SERVICES = ["checkout", "payments", "catalog", "search", "auth"]
STATUSES = ["info"] * 6 + ["debug"] * 2 + ["warn", "error"]
PATHS = ["/api/users", "/api/orders", "/api/cart", "/static/app.js", "/healthz", "/api/search"]
METHODS = ["GET"] * 5 + ["POST", "PUT", "OPTIONS"]


def _message(rng: random.Random, method: str, status: int) -> str:
    extra = rng.choice(["", " contact=jane.doe@example.com", " retry=1", " upstream timeout",
                        f" error-code-{rng.randrange(5000)}"])
    return (f"{method} {rng.choice(PATHS)}/{rng.randrange(10_000)} {status} {rng.randrange(1, 900)}ms "
            f"user_id={rng.randrange(100_000)}{extra}")


def make_logs(records: int, seed: int = 7) -> list[dict]:
    """One `/api/v2/logs` payload of `records` log objects."""
    rng = random.Random(seed)
    out = []
    for i in range(records):
        method, status = rng.choice(METHODS), rng.choice([200] * 8 + [404, 500])
        service = rng.choice(SERVICES)
        message = _message(rng, method, status)
        if i % 10 == 9:  # a structured (GCP-style) message
            message = orjson.dumps({"data": {"jsonPayload": {"message": message, "tenant": f"t-{rng.randrange(50)}"}},
                                    "severity": "INFO"}).decode()
        out.append({
            "message": message,
            "status": rng.choice(STATUSES),
            "timestamp": 1_700_000_000_000 + rng.randrange(10**6),
            "hostname": f"ip-10-0-{rng.randrange(8)}-{rng.randrange(250)}",
            "service": service,
            "ddsource": "python",
            "ddtags": f"env:prod,version:1.{rng.randrange(9)}.0,kube_namespace:shop,pod_name:{service}-{i % 7}",
            "http": {"method": method, "status_code": status},
            "dd": {"trace_id": str(rng.getrandbits(63))},
        })
    return out


CORE_POLICIES = [
    {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"}},
    {"id": "drop-health", "log": {"match": [{"log_field": "body", "contains": "/healthz"}], "keep": "none"}},
    {"id": "drop-static", "log": {"match": [{"log_field": "body", "regex": r"^GET /static/"}], "keep": "none"}},
    {"id": "drop-options", "log": {"match": [{"log_attribute": "http.method", "exact": "OPTIONS"}],
                                   "keep": "none"}},
    {"id": "sample-catalog", "log": {"match": [{"resource_attribute": "service", "exact": "catalog"}],
                                     "keep": "25%", "sample_key": {"log_attribute": "dd.trace_id"}}},
    {"id": "limit-errors", "log": {"match": [{"log_field": "severity_text", "exact": "error"}],
                                   "keep": "100000/s"}},
    {"id": "keep-5xx", "log": {"match": [{"log_attribute": "http.status_code", "gte": 500}], "keep": "all"}},
    {"id": "redact-email", "log": {"match": [{"log_field": "body", "contains": "@"}], "keep": "all",
                                   "transform": {"redact": [{"log_field": "body", "regex": r"[\w.]+@[\w.]+",
                                                             "replacement": "<email>"}]}}},
    {"id": "drop-timeouts-auth", "log": {"match": [
        {"resource_attribute": "service", "exact": "auth"},
        {"log_field": "body", "regex": r"upstream timeout$"}], "keep": "none"}},
    {"id": "tag-payments", "log": {"match": [{"resource_attribute": "service", "exact": "payments"}],
                                   "keep": "all", "transform": {"add": [{"log_attribute": "team",
                                                                         "value": "money"}]}}},
]

SERIES_POLICIES = [
    {"id": f"drop-{i}", "metric": {"match": matchers, "keep": False}} for i, matchers in enumerate([
        [{"metric_field": "name", "starts_with": "internal."}],
        [{"metric_field": "name", "regex": r"\.debug\.[a-z]+$"}],
        [{"datapoint_attribute": "env", "exact": "staging"}],
        [{"resource_attribute": "host", "starts_with": "canary-"}],
        [{"metric_type": "METRIC_TYPE_SUM"}, {"datapoint_attribute": "team", "exact": "none"}],
        [{"metric_field": "unit", "exact": "nanosecond"}],
        [{"datapoint_attribute": "source_type_name", "exact": "test"}],
        [{"metric_field": "name", "contains": "tmp_"}],
        [{"datapoint_attribute": "kube_namespace", "exact": "kube-system"}],
        [{"resource_attribute": "pod", "ends_with": "-debug"}],
    ])
]


def make_policies(count: int) -> dict:
    """The ten core policies plus generated, rarely matching drop policies."""
    policies = list(CORE_POLICIES[:count])
    return {"policies": policies + filler_policies(count - len(policies), "hostname", "ip-10-1-")}


def make_series(count: int, seed: int = 11) -> dict:
    rng = random.Random(seed)
    names = ["system.cpu.user", "app.requests", "internal.queue.depth", "app.cache.debug.hits", "app.latency"]
    series = [{
        "metric": rng.choice(names),
        "type": rng.choice([0, 1, 2, 3]),
        "unit": rng.choice(["", "request", "millisecond", "nanosecond"]),
        "tags": [f"env:{rng.choice(['prod', 'prod', 'staging'])}",
                 f"kube_namespace:{rng.choice(['shop', 'kube-system'])}",
                 f"team:{rng.choice(['core', 'none'])}", "version:1.2.3"],
        "resources": [{"name": f"{rng.choice(['web', 'canary'])}-{rng.randrange(30)}", "type": "host"}],
        "source_type_name": rng.choice(["kubernetes", "test"]),
        "points": [{"timestamp": 1_700_000_000 + k * 10, "value": rng.random() * 100} for k in range(3)],
    } for _ in range(count)]
    return {"series": series}


def series_protobuf(doc: dict) -> bytes:
    """The same series as the agent's protobuf MetricPayload."""
    message = MetricPayload()
    for item in doc["series"]:
        series = message.series.add(metric=item["metric"], type=item["type"], unit=item["unit"], tags=item["tags"],
                                    source_type_name=item["source_type_name"], interval=10)
        series.resources.add(**item["resources"][0])
        for point in item["points"]:
            series.points.add(value=point["value"], timestamp=point["timestamp"])
    return message.SerializeToString()


def _rate(step: Callable[[], object], records: int, seconds: float) -> float:
    """Records per CPU-second of repeating `step` for `seconds` of wall time.

    Per CPU-second is the per-core figure: on a shared VM the wall clock also counts
    time the hypervisor gave to someone else (steal), the process CPU clock does not.
    """
    runs, start, cpu_start = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        step()
        runs += 1
    return runs * records / (time.process_time() - cpu_start)


def floor_step(body: bytes, protobuf: bool = False) -> Callable[[], object]:
    """Decode and re-encode the body (msgspec, or upb for protobuf), no policies: the floor under any evaluation."""
    if protobuf:
        return lambda: MetricPayload.FromString(body).SerializeToString()
    decode, encode = msgspec.json.Decoder().decode, msgspec.json.encode
    return lambda: encode(decode(body))


@dataclass
class Row:
    rates: list[float]  # engine records/s per window
    floors: list[float]  # floor records/s of the paired windows
    total: int
    kept: int


def measure(engine: Engine, signal: str, body: bytes, seconds: float, windows: int, protobuf: bool = False) -> Row:
    """Engine and floor windows, paired: neighbours slow the CPU clock down too (shared caches)."""
    result = evaluate(engine, signal, body, protobuf)
    total = result.outcome.total
    floor = floor_step(body, protobuf)
    rates, floors = [], []
    for _ in range(windows):
        floors.append(_rate(floor, total, seconds / 2))
        rates.append(_rate(lambda: evaluate(engine, signal, body, protobuf), total, seconds))
    return Row(rates, floors, total, result.outcome.kept)


def report(payload: str, policies: int, row: Row, body: bytes, compile_s: float) -> None:
    median, best = median_best(row.rates)
    share = statistics.median(r / f for r, f in zip(row.rates, row.floors, strict=True))
    print(f"{payload:8} {policies:8d} {median:11,.0f} {best:11,.0f} {statistics.median(row.floors):11,.0f} "
          f"{share:8.0%} {row.total:6d} {row.kept:6d} {len(body) / 1024:8.0f} {compile_s:9.2f}")
    sys.stdout.flush()


def _engine(policies: dict) -> tuple[Engine, float]:
    started = time.perf_counter()
    snapshot = compile_policies(load_document(policies).policies)
    return Engine(snapshot, rng=random.Random(1)), time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one measuring window")
    parser.add_argument("--windows", type=int, default=5, help="windows per row (best and median are shown)")
    parser.add_argument("--policies", default="10,100,1000")
    args = parser.parse_args()

    tune_gc()  # as every evaluating process of edge runs
    logs = orjson.dumps(make_logs(args.records))
    print(f"{'payload':8} {'policies':>8} {'rec/s/core':>11} {'(best)':>11} {'floor':>11} {'of floor':>8} "
          f"{'in':>6} {'out':>6} {'body KB':>8} {'compile s':>9}   (medians of --windows; best engine window)")
    for count in (int(c) for c in args.policies.split(",")):
        engine, compile_s = _engine(make_policies(count))
        report("logs", count, measure(engine, "log", logs, args.seconds, args.windows), logs, compile_s)
    series_doc = make_series(args.records)
    series = orjson.dumps(series_doc)
    engine, compile_s = _engine({"policies": SERIES_POLICIES})
    report("series", len(SERIES_POLICIES), measure(engine, "metric", series, args.seconds, args.windows), series,
           compile_s)
    proto = series_protobuf(series_doc)
    report("series-pb", len(SERIES_POLICIES),
           measure(engine, "metric", proto, args.seconds, args.windows, protobuf=True), proto, compile_s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
