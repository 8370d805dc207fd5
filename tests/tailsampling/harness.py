"""Real edge instances with tail sampling on, traces built span by span, and what the upstream got.

`TailEdge` is the reliability suite's `EdgeProcess` with a `tail_sampling` section (its
write-ahead log under the test's directory) and helpers to find and kill its sampler.
`Upstream` is the recording upstream with the sampler's exports decoded: the spans of every
`/v1/traces` request (gzip protobuf) and the calls counted by every rollup on `/v1/metrics`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import signal
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from tests.proxy_fixtures import RecordingUpstream, Reply
from tests.reliability.harness import EdgeProcess
from tests.waiting import wait_for

PB = {"Content-Type": "application/x-protobuf"}
ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}
ALWAYS = {"name": "all", "type": "always_sample"}
CALLS = "traces.span.metrics.calls"


def tail_config(tmp: Path, policies: Sequence[dict[str, Any]], **keys: Any) -> dict[str, Any]:
    """A tail_sampling section with a short wait, a fast rollup and the log in the test's directory."""
    return {"enabled": True, "decision_wait": "1s", "rollup_interval": "1s", "wal_dir": str(tmp / "wal"),
            "policies": list(policies), **keys}


class TailEdge(EdgeProcess):
    """`edge` with tail sampling; no edge policy (the tail policies are in its config)."""

    def __init__(self, tmp: Path, upstream_url: str, tail: dict[str, Any],
                 policies: list[dict[str, Any]] | None = None, **config: Any) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        super().__init__(tmp, upstream_url, policies=policies or [], tail_sampling=tail, **config)
        self.port = self.config["listen_port"]  # a port chosen by the test (peers must know it beforehand)
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> TailEdge:
        """As `EdgeProcess.start`, and an edge that never became ready is killed, not left running."""
        try:
            super().start(timeout)
        except BaseException:
            if self.proc is not None and self.proc.poll() is None:
                self.kill_all()
            raise
        return self

    def _ready(self) -> bool:
        return super()._ready() and self.sampler_pid() is not None and self.sampler_listening()

    def sampler_pid(self) -> int | None:
        try:
            return next((c.pid for c in psutil.Process(self.pid).children()
                         if "workers.sampler" in " ".join(c.cmdline())), None)
        except psutil.Error:
            return None

    def sampler_listening(self) -> bool:
        pid = self.sampler_pid()
        try:
            return pid is not None and any(c.laddr for c in psutil.Process(pid).net_connections(kind="unix"))
        except psutil.Error:
            return False

    def kill_sampler(self) -> int:
        pid = self.sampler_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every process under it at once: no one gets to clean up."""
        processes = self.processes()
        for proc in processes:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                continue
        psutil.wait_procs(processes, timeout=10)
        assert self.proc is not None
        self.proc.wait(10)

    def post_spans(self, spans: Iterable[Span], service: str = "shop", timeout: float = 30.0) -> Reply:
        return self.request("POST", "/v1/traces", request(spans, service).SerializeToString(), PB, timeout=timeout)

    def metric(self, prefix: str) -> float:
        return sum(v for k, v in self.metrics().items() if k.startswith(prefix))


# ── spans ──


def trace_id(trace: int) -> bytes:
    """Trace number `trace`'s id: random-looking, as real ids are (the probabilistic policy hashes them)."""
    return hashlib.blake2b(trace.to_bytes(8, "big"), digest_size=16).digest()


def span(trace: int, n: int, error: bool = False, name: str = "op") -> Span:
    """Span `n` of trace number `trace` (its span id carries the trace number, so the test recognises it)."""
    return Span(trace_id=trace_id(trace), span_id=(trace * 1000 + n + 1).to_bytes(8, "big"), name=name,
                kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=1_700_000_000_000_000_000 + n,
                end_time_unix_nano=1_700_000_000_000_000_000 + n + 5_000_000,
                status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK))


def request(spans: Iterable[Span], service: str = "shop") -> ExportTraceServiceRequest:
    resource = Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value=service))])
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(resource=resource, scope_spans=[
        ScopeSpans(spans=list(spans))])])


def trace_of(span_id: bytes) -> int:
    return int.from_bytes(span_id, "big") // 1000


# ── log records ──


def log_request(*records: tuple[int, str]) -> bytes:
    """Log records (trace number, body); trace number 0: no trace id."""
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(scope_logs=[ScopeLogs(log_records=[
        LogRecord(trace_id=trace_id(t) if t else b"", body=AnyValue(string_value=text)) for t, text in records])])]
    ).SerializeToString()


def log_bodies(upstream: Upstream) -> list[str]:
    out = []
    for r in upstream.received("/v1/logs"):
        body = gzip.decompress(r.body) if r.header("content-encoding") == "gzip" else r.body
        out += [lr.body.string_value for rl in ExportLogsServiceRequest.FromString(body).resource_logs
                for sl in rl.scope_logs for lr in sl.log_records]
    return out


# ── the upstream ──


@dataclass
class Export:
    """One /v1/traces request the upstream received: the span ids it held, by trace number."""

    spans: dict[int, list[bytes]]


class Upstream(RecordingUpstream):
    def messages(self) -> list[ExportTraceServiceRequest]:
        """Every /v1/traces request received, decoded."""
        out = []
        for r in self.received("/v1/traces"):
            body = gzip.decompress(r.body) if r.header("content-encoding") == "gzip" else r.body
            out.append(ExportTraceServiceRequest.FromString(body))
        return out

    def exports(self) -> list[Export]:
        """The requests' spans by trace number (spans made by `span`)."""
        out = []
        for message in self.messages():
            by_trace: dict[int, list[bytes]] = {}
            for rs in message.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        by_trace.setdefault(trace_of(s.span_id), []).append(s.span_id)
            out.append(Export(by_trace))
        return out

    def spans(self) -> Counter[bytes]:
        """Every span id exported, with how often it arrived."""
        return Counter(s for e in self.exports() for ids in e.spans.values() for s in ids)

    def traces(self) -> dict[int, set[bytes]]:
        out: dict[int, set[bytes]] = {}
        for e in self.exports():
            for trace, ids in e.spans.items():
                out.setdefault(trace, set()).update(ids)
        return out

    def rolled_up_calls(self) -> int:
        """Spans counted by every rollup received (the calls sums' data points)."""
        total = 0
        for r in self.received("/v1/metrics"):
            body = gzip.decompress(r.body) if r.header("content-encoding") == "gzip" else r.body
            for rm in ExportMetricsServiceRequest.FromString(body).resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name == CALLS:
                            total += sum(p.as_int or int(p.as_double) for p in m.sum.data_points)
        return total


def accounted(upstream: Upstream, sent: int, timeout: float = 30.0) -> bool:
    """Every one of `sent` spans exported, or counted in a rollup, by now (duplicates count too)."""
    return wait_for(lambda: sum(upstream.spans().values()) + upstream.rolled_up_calls() >= sent, timeout, 0.2)
