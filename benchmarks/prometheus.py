"""Prometheus scrape filter throughput: exposition lines per CPU-second, one core.

    python benchmarks/prometheus.py [--series 20000] [--seconds 3] [--chunk 262144]

Builds an exposition shaped like a busy service's /metrics (HTTP counters and latency
histograms with method/code/handler/instance labels, summaries, Go runtime gauges, a few
deprecated and debug families; ~117 bytes a line) and runs it through
`edge.formats.prometheus.exposition.ScrapeFilter` in chunks of the size the proxy reads from the upstream
(`edge.protocols.prometheus.READ_SIZE`), with four policy mixes:

- `names`: ten policies on name, type and HELP text only;
- `labels`: six of those plus four that test label values with literals (exact, starts_with),
  two of them on every family;
- `dense-labels`: the worst case, a regex on `le` of every bucket line and on `code` of a
  family, so most lines' label values have to be read;
- `none-match`: ten policies on names that never occur (the cost of looking).

Reports lines per CPU-second (the per-core figure: a shared VM's wall clock also counts
time given to others) as the median and the best of repeated scrapes, lines out and the
share of output bytes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.engine.engine import Engine  # noqa: E402
from edge.formats.prometheus.exposition import ScrapeFilter  # noqa: E402
from edge.memory import tune_gc  # noqa: E402
from edge.policy.compiler import compile_policies  # noqa: E402
from edge.policy.loader import load_document  # noqa: E402
from edge.protocols.prometheus import READ_SIZE  # noqa: E402

METHODS = ["GET"] * 6 + ["POST", "PUT", "DELETE", "OPTIONS"]
CODES = ["200"] * 8 + ["404", "500"]
HANDLERS = ["/api/v1/users", "/api/v1/orders", "/api/v1/cart", "/api/v1/search", "/api/v1/items", "/healthz",
            "/metrics"]
BUCKETS = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]


def _labels(rng: random.Random, s: int) -> str:
    instance = f"canary-{s % 3}" if s % 17 == 0 else f"10.0.{s % 7}.{s % 13}:8080"
    return (f'method="{rng.choice(METHODS)}",code="{rng.choice(CODES)}",handler="{rng.choice(HANDLERS)}",'
            f'instance="{instance}"')


def make_exposition(series: int, seed: int = 3) -> bytes:
    """About `series` x 6 lines of Prometheus text format."""
    rng = random.Random(seed)
    out: list[str] = []
    families = 48
    for f in range(families):
        kind = ("counter", "histogram", "gauge", "summary")[f % 4]
        area = ("http", "db", "cache", "rpc", "app_debug", "queue")[f % 6]
        name = f"{area}_{kind}_{f}" + ("_total" if kind == "counter" else "")
        note = " DEPRECATED: use v2." if f % 11 == 0 else ""
        out.append(f"# HELP {name} The {kind} number {f} of the {area} subsystem.{note}")
        out.append(f"# TYPE {name} {kind}")
        for s in range(series // families):
            labels = _labels(rng, s)
            if kind == "histogram":
                for le in BUCKETS:
                    out.append(f'{name}_bucket{{{labels},le="{le}"}} {rng.randrange(10**6)}')
                out.append(f"{name}_sum{{{labels}}} {rng.random() * 1000:.3f}")
                out.append(f"{name}_count{{{labels}}} {rng.randrange(10**6)}")
            elif kind == "summary":
                for q in ("0.5", "0.9", "0.99"):
                    out.append(f'{name}{{{labels},quantile="{q}"}} {rng.random():.6f}')
                out.append(f"{name}_sum{{{labels}}} {rng.random() * 1000:.3f}")
                out.append(f"{name}_count{{{labels}}} {rng.randrange(10**6)}")
            else:
                out.append(f"{name}{{{labels}}} {rng.randrange(10**9)}")
                if kind == "counter" and s % 5 == 0:
                    out.append(f"{name[:-6]}_created{{{labels}}} 1.7e9")
    for g in range(60):  # Go runtime style: unlabelled gauges, one sample per family
        out.append(f"# HELP go_memstats_{g}_bytes Go runtime statistic {g}.")
        out.append(f"# TYPE go_memstats_{g}_bytes gauge")
        out.append(f"go_memstats_{g}_bytes {rng.randrange(10**9)}")
    for g in range(10):
        out.append(f"# HELP go_gc_duration_{g}_seconds GC pauses.")
        out.append(f"# TYPE go_gc_duration_{g}_seconds summary")
        for q in ("0", "0.25", "0.5", "0.75", "1"):
            out.append(f'go_gc_duration_{g}_seconds{{quantile="{q}"}} {rng.random():.9f}')
    return ("\n".join(out) + "\n").encode()


def _drop(pid: str, *match: dict) -> dict:
    return {"id": pid, "metric": {"match": list(match), "keep": False}}


NAME_POLICIES = [
    _drop("drop-go-gc", {"metric_field": "name", "starts_with": "go_gc_"}),
    _drop("drop-debug", {"metric_field": "name", "regex": "^app_debug_"}),
    _drop("drop-created", {"metric_field": "name", "ends_with": "_created"}),
    _drop("drop-deprecated", {"metric_field": "description", "contains": "DEPRECATED"}),
    _drop("drop-db-summaries", {"metric_type": "summary"}, {"metric_field": "name", "starts_with": "db_"}),
    {"id": "keep-http", "metric": {"match": [{"metric_field": "name", "starts_with": "http_"}], "keep": True}},
    _drop("drop-queue-buckets", {"metric_field": "name", "regex": "^queue_.*_bucket$"}),
    _drop("drop-memstats-odd", {"metric_field": "name", "regex": "^go_memstats_[13579]_bytes$"}),
    _drop("drop-rpc-gauges", {"metric_type": "gauge"}, {"metric_field": "name", "starts_with": "rpc_"}),
    _drop("drop-cache-counters", {"metric_type": "sum"}, {"metric_field": "name", "contains": "cache_"}),
]

LABEL_POLICIES = NAME_POLICIES[:6] + [
    _drop("drop-healthz", {"datapoint_attribute": "handler", "exact": "/healthz"}),
    _drop("drop-finest-bucket", {"metric_field": "name", "ends_with": "_bucket"},
          {"datapoint_attribute": "le", "exact": "0.005"}),
    _drop("drop-canary-http", {"metric_field": "name", "starts_with": "http_"},
          {"datapoint_attribute": "instance", "starts_with": "canary-"}),
    _drop("drop-options", {"datapoint_attribute": "method", "exact": "OPTIONS"}),
]

# The worst case: a regex and an `exists` on labels that most lines carry, so nearly every
# line's label value has to be read.
DENSE_LABEL_POLICIES = NAME_POLICIES[:6] + [
    _drop("drop-healthz", {"datapoint_attribute": "handler", "exact": "/healthz"}),
    _drop("drop-fine-buckets", {"metric_field": "name", "ends_with": "_bucket"},
          {"datapoint_attribute": "le", "regex": "^0\\.0"}),
    _drop("drop-canary-http", {"metric_field": "name", "starts_with": "http_"},
          {"datapoint_attribute": "instance", "starts_with": "canary-"}),
    _drop("drop-5xx-rpc", {"metric_field": "name", "starts_with": "rpc_"},
          {"datapoint_attribute": "code", "regex": "^5"}),
]

NO_MATCH_POLICIES = [_drop(f"absent-{i}", {"metric_field": "name", "starts_with": f"absent_{i}_"}) for i in range(10)]

MIXES = {"names": NAME_POLICIES, "labels": LABEL_POLICIES, "dense-labels": DENSE_LABEL_POLICIES,
         "none-match": NO_MATCH_POLICIES}


def run_once(engine: Engine, chunks: list[bytes]) -> tuple[int, ScrapeFilter]:
    scrape = ScrapeFilter(engine)
    size = 0
    for chunk in chunks:
        size += len(scrape.feed(chunk))
        scrape.drain()
    size += len(scrape.finish())
    scrape.drain()
    if scrape.unfiltered:
        raise SystemExit("the filter failed and forwarded the exposition unfiltered: see the log above")
    return size, scrape


def measure(engine: Engine, chunks: list[bytes], seconds: float) -> tuple[float, float, int]:
    """(median, best) lines per CPU-second over repeated scrapes for at least `seconds`; output bytes.

    Each scrape is timed on the process CPU clock; on a shared machine the median shows the
    typical cost and the best run the cost without interference from other processes.
    """
    lines = sum(c.count(b"\n") for c in chunks)
    size, _ = run_once(engine, chunks)  # warm the per-snapshot caches, as a second scrape finds them
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        cpu = time.process_time()
        run_once(engine, chunks)
        times.append(time.process_time() - cpu)
    return lines / statistics.median(times), lines / min(times), size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--chunk", type=int, default=READ_SIZE)
    parser.add_argument("--mixes", default=",".join(MIXES))
    args = parser.parse_args()

    tune_gc()  # as every worker runs
    body = make_exposition(args.series)
    chunks = [body[i:i + args.chunk] for i in range(0, len(body), args.chunk)]
    lines = body.count(b"\n")
    print(f"exposition: {lines:,} lines, {len(body) / 1e6:.1f} MB, chunks of {args.chunk // 1024} KiB")
    print(f"{'policies':12} {'lines/s/core':>13} {'(best run)':>11} {'lines out':>10} {'bytes out':>9}")
    for mix in args.mixes.split(","):
        loaded = load_document({"policies": MIXES[mix]})
        engine = Engine(compile_policies(loaded.policies))
        rate, best, size = measure(engine, chunks, args.seconds)
        kept_lines = _output_lines(engine, chunks)
        print(f"{mix:12} {rate:13,.0f} {best:11,.0f} {kept_lines:10,} {size / len(body):9.0%}")
        sys.stdout.flush()
    return 0


def _output_lines(engine: Engine, chunks: list[bytes]) -> int:
    scrape = ScrapeFilter(engine)
    return sum(scrape.feed(c).count(b"\n") for c in chunks) + scrape.finish().count(b"\n")


if __name__ == "__main__":
    sys.exit(main())
