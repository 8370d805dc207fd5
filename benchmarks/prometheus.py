"""Prometheus scrape filter throughput: exposition lines per CPU-second, one core.

    python benchmarks/prometheus.py [--series 20000] [--seconds 1] [--windows 3] [--chunk 262144]
                                    [--mixes names,labels,dense-labels,none-match]

Builds an exposition shaped like a busy service's /metrics (HTTP counters and latency
histograms with method/code/handler/instance labels, summaries, Go runtime gauges, a few
deprecated and debug families; every sample line carries a timestamp) and runs it through
`edge.formats.prometheus.exposition.ScrapeFilter` in chunks of the size the proxy reads from the upstream
(`edge.protocols.prometheus.READ_SIZE`), with four policy mixes:

- `names`: ten policies on name, type and HELP text only;
- `labels`: six of those plus four that test label values with literals (exact, starts_with),
  two of them on every family;
- `dense-labels`: the worst case, a regex on `le` of every bucket line and on `code` of a
  family, so most lines' label values have to be read;
- `none-match`: ten policies on names that never occur (the cost of looking).

Every scrape gets a fresh exposition: the same series with a new timestamp on every
sample line, as a real target answers, so no two scrapes of a run are the same bytes.
(The filter's verdict cache is keyed on the series name and its family, which repeat from
scrape to scrape in real life too; it is kept warm between scrapes, and "1st scrape" shows
the cost right after a snapshot change, when it is empty.)

The floor, measured in the same run: the same streaming filter with no policies at all
(split into lines, find every name, reassemble). Each of `--windows` windows scrapes
with the floor for `--seconds`/2, then with the mix for `--seconds`; "of floor" is the
median of the paired ratios. Reported: lines per CPU-second (the per-core figure: a
shared VM's wall clock also counts time given to others) as the median window
(headline) and the best, the floor's median, the first scrape after the policies were
(re)built, lines out and the share of output bytes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_best  # noqa: E402
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


TIMESTAMP = 1_700_000_000_000  # ms, on every sample line; `fresh()` moves it on per scrape
_TIMESTAMP_END = f" {TIMESTAMP}\n".encode()


def fresh(template: bytes, scrape: int) -> bytes:
    """The exposition of scrape number `scrape`: every sample's timestamp 15 s later per scrape."""
    return template.replace(_TIMESTAMP_END, f" {TIMESTAMP + 15_000 * scrape}\n".encode())


def make_exposition(series: int, seed: int = 3) -> bytes:
    """About `series` x 6 lines of Prometheus text format; every sample line ends with TIMESTAMP."""
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
    stamped = (line if line.startswith("#") else f"{line} {TIMESTAMP}" for line in out)
    return ("\n".join(stamped) + "\n").encode()


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


class Scrapes:
    """Fresh expositions, cut into the proxy's read size; a number never repeats within a run."""

    def __init__(self, template: bytes, chunk: int) -> None:
        self.template = template
        self.chunk = chunk
        self.lines = template.count(b"\n")
        self.number = 0

    def next(self) -> list[bytes]:
        self.number += 1
        body = fresh(self.template, self.number)
        return [body[i:i + self.chunk] for i in range(0, len(body), self.chunk)]


def run_once(engine: Engine, chunks: list[bytes]) -> list[bytes]:
    """One scrape through the filter, as the proxy feeds it; the output pieces."""
    scrape = ScrapeFilter(engine)
    out = []
    for chunk in chunks:
        out.append(scrape.feed(chunk))
        scrape.drain()
    out.append(scrape.finish())
    scrape.drain()
    if scrape.unfiltered:
        raise SystemExit("the filter failed and forwarded the exposition unfiltered: see the log above")
    return out


def timed(engine: Engine, chunks: list[bytes]) -> float:
    """CPU seconds of one scrape (only the filter: the exposition was made beforehand)."""
    cpu = time.process_time()
    run_once(engine, chunks)
    return time.process_time() - cpu


def window(engine: Engine, scrapes: Scrapes, seconds: float) -> tuple[float, float]:
    """(lines/CPU-s of the first scrape, lines/CPU-s of the scrapes after it) for `seconds` of wall time.

    The first scrape fills the verdict cache of the snapshot (one is kept per process, so
    switching between the floor and a mix empties it); the ones after it find it warm.
    """
    first = timed(engine, scrapes.next())
    cpu, runs = 0.0, 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or runs < 2:
        cpu += timed(engine, scrapes.next())
        runs += 1
    return scrapes.lines / first, scrapes.lines * runs / cpu


@dataclass
class Row:
    rates: list[float]  # lines/CPU-s of each mix window
    floors: list[float]  # of the paired floor windows
    firsts: list[float]  # first scrape of each mix window
    lines_out: int
    bytes_out: int


def measure(engine: Engine, floor: Engine, scrapes: Scrapes, seconds: float, windows: int) -> Row:
    rates, floors, firsts = [], [], []
    for _ in range(windows):
        floors.append(window(floor, scrapes, seconds / 2)[1])
        first, rate = window(engine, scrapes, seconds)
        firsts.append(first)
        rates.append(rate)
    out = b"".join(run_once(engine, scrapes.next()))
    return Row(rates, floors, firsts, out.count(b"\n"), len(out))


def _engine(policies: list[dict]) -> Engine:
    return Engine(compile_policies(load_document({"policies": policies}).policies))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", type=int, default=20_000, help="labelled series (about 6 lines each)")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of one mix window (floor: half)")
    parser.add_argument("--windows", type=int, default=3, help="windows per mix (median and best are shown)")
    parser.add_argument("--chunk", type=int, default=READ_SIZE, help="bytes fed to the filter at once")
    parser.add_argument("--mixes", default=",".join(MIXES), help="policy mixes to run, comma-separated")
    args = parser.parse_args()

    tune_gc()  # as every worker runs
    template = make_exposition(args.series)
    scrapes = Scrapes(template, args.chunk)
    floor = _engine([])
    print(f"exposition: {scrapes.lines:,} lines, {len(template) / 1e6:.1f} MB ({len(template) / scrapes.lines:.0f} "
          f"bytes a line), chunks of {args.chunk // 1024} KiB, a fresh one every scrape")
    print(f"{'policies':12} {'lines/s/core':>13} {'(best)':>11} {'floor':>11} {'of floor':>8} {'1st scrape':>11} "
          f"{'lines out':>10} {'bytes out':>9}")
    for mix in args.mixes.split(","):
        row = measure(_engine(MIXES[mix]), floor, scrapes, args.seconds, args.windows)
        median, best = median_best(row.rates)
        share = statistics.median(r / f for r, f in zip(row.rates, row.floors, strict=True))
        print(f"{mix:12} {median:13,.0f} {best:11,.0f} {statistics.median(row.floors):11,.0f} {share:8.0%} "
              f"{statistics.median(row.firsts):11,.0f} {row.lines_out:10,} {row.bytes_out / len(template):9.0%}")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
