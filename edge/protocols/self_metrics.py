"""The proxy's own Prometheus metrics, summed over every worker of the instance.

The supervisor sets `PROMETHEUS_MULTIPROC_DIR` before the workers start: each worker then
writes its values to memory-mapped files there and `/_edge/metrics` merges them with a
`MultiProcessCollector`. Without the variable (a single process, tests) the metrics live
in the default registry. Label children are resolved once and cached, so recording a
request costs a dict lookup and a few memory-mapped adds.

prometheus_client checks the process id before every write to a memory-mapped value, to
notice a fork; `os.getpid()` is a system call, about a dozen of them per request. The values
ask `current_pid` instead: the same answer, kept by a fork hook.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
SIGNALS = ("log", "metric", "trace")
UPSTREAM_ERRORS = ("connect", "timeout", "disconnect", "protocol", "internal")


_pid = os.getpid()


def current_pid() -> int:
    """This process's id, as `os.getpid()` answers it, without asking the kernel."""
    return _pid


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


class Metrics:
    """One instance per process (`get_metrics()`): prometheus-client refuses duplicate names."""

    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower()))
        if self.multiprocess:
            values.ValueClass = values.MultiProcessValue(process_identifier=current_pid)
        # In multiprocess mode values go to the mmap files, not to a registry.
        registry = None if self.multiprocess else REGISTRY
        self.requests = Counter("edge_requests", "HTTP requests answered, by route and status",
                                ("route", "status"), registry=registry)
        self.latency = Histogram("edge_request_duration_seconds", "Time to answer a request (until headers)",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=registry)
        self.evaluated = Counter("edge_records_evaluated", "Telemetry records evaluated by policies",
                                 ("signal",), registry=registry)
        self.kept = Counter("edge_records_kept", "Telemetry records kept", ("signal",), registry=registry)
        self.dropped = Counter("edge_records_dropped", "Telemetry records dropped", ("signal",), registry=registry)
        self.upstream_errors = Counter("edge_upstream_errors", "Failed upstream requests, by kind",
                                       ("kind",), registry=registry)
        self.policies_loaded = Gauge("edge_policies_loaded", "Policies in the current snapshot",
                                     registry=registry, multiprocess_mode="max")
        self.generation = Gauge("edge_snapshot_generation", "Generation of the current policy snapshot",
                                registry=registry, multiprocess_mode="max")
        self.s3_uploaded_records = Counter("edge_s3_dump_uploaded_records", "Records the s3-dump extension uploaded",
                                           registry=registry)
        self.s3_uploaded_objects = Counter("edge_s3_dump_uploaded_objects", "Objects the s3-dump extension uploaded",
                                           registry=registry)
        self.s3_uploaded_bytes = Counter("edge_s3_dump_uploaded_bytes", "NDJSON bytes the s3-dump extension uploaded",
                                         registry=registry)
        self.s3_upload_failures = Counter("edge_s3_dump_upload_failures", "Failed s3-dump upload attempts",
                                          registry=registry)
        self.s3_dropped_records = Counter("edge_s3_dump_dropped_records", "Records the s3-dump extension gave up, "
                                          "by reason", ("reason",), registry=registry)
        self.s3_dropped_batches = Counter("edge_s3_dump_dropped_batches", "Batches the s3-dump extension gave up, "
                                          "by reason", ("reason",), registry=registry)
        self.unfiltered_requests = Counter("edge_unfiltered_requests", "Requests that could not be filtered and "
                                           "were forwarded as received or refused (`unfiltered`), by route, "
                                           "signal and reason", ("route", "signal", "reason"), registry=registry)
        self.scrapes_truncated = Counter("edge_prometheus_scrapes_truncated", "Prometheus scrapes ended early at a "
                                         "byte limit, by limit (input or output)", ("limit",), registry=registry)
        self.grpc_requests = Counter("edge_grpc_requests", "OTLP/gRPC calls answered, by service and status code "
                                     "(every code but OK is an error)", ("service", "code"), registry=registry)
        self.grpc_latency = Histogram("edge_grpc_request_duration_seconds", "Time to answer an OTLP/gRPC call",
                                      ("service",), buckets=LATENCY_BUCKETS, registry=registry)
        self._requests: dict[tuple[str, int], Counter] = {}
        self._grpc: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self._latency: dict[str, Histogram] = {}
        self._records = {s: (self.evaluated.labels(s), self.kept.labels(s), self.dropped.labels(s))
                         for s in SIGNALS}
        self._errors = {k: self.upstream_errors.labels(k) for k in UPSTREAM_ERRORS}
        self._shown: tuple[int, int] | None = None
        if self.multiprocess:
            self._registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._registry)
        else:
            self._registry = REGISTRY

    # ── hot path ──

    def request(self, route: str, status: int, seconds: float) -> None:
        child = self._requests.get((route, status))
        if child is None:
            child = self._requests[(route, status)] = self.requests.labels(route, str(status))
        child.inc()
        hist = self._latency.get(route)
        if hist is None:
            hist = self._latency[route] = self.latency.labels(route)
        hist.observe(seconds)

    def grpc_request(self, service: str, code: str, seconds: float) -> None:
        children = self._grpc.get((service, code))
        if children is None:
            children = self._grpc[(service, code)] = (self.grpc_requests.labels(service, code),
                                                      self.grpc_latency.labels(service))
        children[0].inc()
        children[1].observe(seconds)

    def records(self, signal: str, total: int, kept: int) -> None:
        evaluated, kept_c, dropped = self._records[signal]
        evaluated.inc(total)
        if kept:
            kept_c.inc(kept)
        if total > kept:
            dropped.inc(total - kept)

    def upstream_error(self, kind: str) -> None:
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self.upstream_errors.labels(kind)
        child.inc()

    def unfiltered(self, route: str, signal: str, reason: str) -> None:
        """A request the policies were not applied to (rare: the child is looked up each time)."""
        self.unfiltered_requests.labels(route, signal, reason).inc()

    def scrape_truncated(self, limit: str) -> None:
        """A Prometheus scrape stopped at `prometheus.max_<limit>_bytes_per_scrape`."""
        self.scrapes_truncated.labels(limit).inc()

    # ── s3-dump extension (its upload thread, and the request path for unknown targets) ──

    def s3_dump_uploaded(self, records: int, size: int) -> None:
        self.s3_uploaded_records.inc(records)
        self.s3_uploaded_objects.inc()
        self.s3_uploaded_bytes.inc(size)

    def s3_dump_dropped(self, reason: str, records: int, batches: int = 1) -> None:
        self.s3_dropped_records.labels(reason).inc(records)
        if batches:
            self.s3_dropped_batches.labels(reason).inc(batches)

    def s3_dump_upload_failed(self) -> None:
        self.s3_upload_failures.inc()

    # ── background / scrape ──

    def snapshot_loaded(self, generation: int, policies: int) -> None:
        if self._shown != (generation, policies):
            self._shown = (generation, policies)
            self.generation.set(generation)
            self.policies_loaded.set(policies)

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self._registry), CONTENT_TYPE_LATEST


_metrics: Metrics | None = None


def get_metrics() -> Metrics:
    global _metrics
    if _metrics is None:
        _metrics = Metrics()
    return _metrics
