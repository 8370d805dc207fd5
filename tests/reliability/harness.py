"""The reliability suite's machinery: a real `edge`, a faulty upstream, a record ledger, the invariant.

`EdgeProcess` runs the `edge` console script (supervisor + gunicorn workers) on loopback with
a config and a policy file it writes itself. `FaultUpstream` is the recording upstream of
`tests/proxy_fixtures.py` with the faults a backend shows in real life (answering half a body
then resetting, dribbling the answer). `Ledger` remembers every record sent, whether a suite
policy drops it and what the sender was answered; `check_invariant` proves after every case
that the proxy is alive and healthy, leaked no socket or shared-memory segment, and that every
record was either delivered upstream intact or dropped by a policy (counted in the proxy's
own metrics), never lost or corrupted.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import psutil
import zstandard
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client.parser import text_string_to_metric_families

from tests.proxy_fixtures import RecordingUpstream, Reply, free_port, request
from tests.waiting import wait_for  # the suite's one condition wait; reliability tests import it from here

EDGE_SCRIPT = Path(sys.executable).parent / "edge"
SIGNAL_PATHS = {"log": "/v1/logs", "metric": "/v1/metrics", "trace": "/v1/traces"}
MESSAGES = {"log": ExportLogsServiceRequest, "metric": ExportMetricsServiceRequest,
            "trace": ExportTraceServiceRequest}
JSON_CT = {"Content-Type": "application/json"}
DECODE_LIMIT = 32 << 20  # the test upstream decodes at most this much of one body
PB_CT = {"Content-Type": "application/x-protobuf"}

# The suite's policies drop a known subset of every signal: DEBUG logs, metrics named
# `drop.*`, spans named `drop-*` (0 % sampling). Everything else must arrive upstream.
SUITE_POLICIES: list[dict[str, Any]] = [
    {"id": "drop-debug-logs", "name": "drop DEBUG logs",
     "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
    {"id": "drop-drop-metrics", "name": "drop metrics named drop.*",
     "metric": {"match": [{"metric_field": "name", "starts_with": "drop."}], "keep": False}},
    {"id": "drop-drop-spans", "name": "drop spans named drop-*",
     "trace": {"match": [{"trace_field": "name", "starts_with": "drop-"}], "keep": {"percentage": 0}}},
]


# ── records and the ledger ──


@dataclass
class Sent:
    """One request's records: ids, which of them a suite policy drops, and the answer."""

    signal: str
    ids: list[str]
    droppable: set[str]
    fingerprints: dict[str, bytes]
    status: int | None = None  # None: no HTTP answer (connection refused, reset, timed out)


@dataclass
class Ledger:
    """Every record sent during one case, for the accounting half of the invariant."""

    batches: list[Sent] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def next_id(self) -> str:
        with self._lock:
            return f"r{os.getpid()}-{next(self._ids)}"

    def add(self, sent: Sent) -> Sent:
        with self._lock:
            self.batches.append(sent)
        return sent

    def by_id(self) -> dict[str, Sent]:
        with self._lock:
            return {i: b for b in self.batches for i in b.ids}


def record_id(signal: str, record: dict[str, Any]) -> str | None:
    """The ledger id a suite record carries: log body, metric name or span name after `:`."""
    if signal == "log":
        body = record.get("body")
        text = body.get("stringValue") if isinstance(body, dict) else None
    else:
        text = record.get("name")
    if not isinstance(text, str) or ":" not in text:
        return None
    return text.rsplit(":", 1)[1]


def fingerprint(record: dict[str, Any]) -> bytes:
    """A canonical form of a record for equality (orjson stops at 254 levels; json goes deeper)."""
    try:
        return orjson.dumps(record, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return json.dumps(record, sort_keys=True, separators=(",", ":")).encode()


def make_records(ledger: Ledger, signal: str, keep: int, drop: int, extra: dict[str, Any] | None = None,
                 ) -> tuple[list[dict[str, Any]], set[str]]:
    """`keep` records no suite policy touches and `drop` records a suite policy drops."""
    records: list[dict[str, Any]] = []
    droppable: set[str] = set()
    for n in range(keep + drop):
        rid = ledger.next_id()
        dropped = n >= keep
        if dropped:
            droppable.add(rid)
        if signal == "log":
            record = {"severityText": "DEBUG" if dropped else "INFO", "body": {"stringValue": f"event:{rid}"}}
        elif signal == "metric":
            record = {"name": f"{'drop' if dropped else 'keep'}.m:{rid}",
                      "gauge": {"dataPoints": [{"asDouble": 1.5, "timeUnixNano": "1700000000000000000"}]}}
        else:
            record = {"name": f"{'drop' if dropped else 'keep'}-span:{rid}", "traceId": os.urandom(16).hex(),
                      "spanId": os.urandom(8).hex(), "kind": 2, "startTimeUnixNano": "1700000000000000000",
                      "endTimeUnixNano": "1700000000100000000"}
        record.update(extra or {})
        records.append(record)
    return records, droppable


def otlp_document(signal: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    top, scopes, key = {"log": ("resourceLogs", "scopeLogs", "logRecords"),
                        "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
                        "trace": ("resourceSpans", "scopeSpans", "spans")}[signal]
    return {top: [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "reliability"}}]},
                   scopes: [{"scope": {"name": "suite"}, key: records}]}]}


def batch(ledger: Ledger, signal: str = "log", keep: int = 3, drop: int = 2, protobuf: bool = False,
          extra: dict[str, Any] | None = None) -> tuple[bytes, Sent]:
    """An OTLP body (JSON or protobuf) with records registered in the ledger (answer still unknown)."""
    records, droppable = make_records(ledger, signal, keep, drop, extra)
    doc = otlp_document(signal, records)
    body = json_format.ParseDict(doc, MESSAGES[signal]()).SerializeToString() if protobuf else orjson.dumps(doc)
    ids = [record_id(signal, r) or "" for r in records]
    prints = {i: fingerprint(r) for i, r in zip(ids, records_of(signal, body, protobuf), strict=True)}
    return body, ledger.add(Sent(signal, ids, droppable, prints))


def records_of(signal: str, body: bytes, protobuf: bool) -> list[dict[str, Any]]:
    """The records of an OTLP body as canonical proto-JSON dicts (protobuf is converted for comparison)."""
    doc = json_format.MessageToDict(MESSAGES[signal].FromString(body)) if protobuf else orjson.loads(body)
    top, scopes, key = {"log": ("resourceLogs", "scopeLogs", "logRecords"),
                        "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
                        "trace": ("resourceSpans", "scopeSpans", "spans")}[signal]
    return [r for rl in doc.get(top) or [] for sl in rl.get(scopes) or [] for r in sl.get(key) or []]


def decoded_records(signal: str, body: bytes, content_type: str | None,
                    content_encoding: str | None) -> list[dict[str, Any]] | None:
    """What an upstream would see in a request: the records, or None when it is not OTLP."""
    try:
        encoding = (content_encoding or "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            inflater = zlib.decompressobj(31)
            body = inflater.decompress(body, DECODE_LIMIT)
            if inflater.unconsumed_tail:
                return None  # a bomb the proxy forwarded raw: checked byte for byte by its test
        elif encoding == "zstd":
            reader = zstandard.ZstdDecompressor().stream_reader(body)
            body = reader.read(DECODE_LIMIT + 1)
            if len(body) > DECODE_LIMIT:
                return None
        elif encoding not in ("", "identity"):
            return None
        return records_of(signal, body, bool(content_type) and "protobuf" in content_type)
    except Exception:  # noqa: BLE001 - not OTLP (an undecodable body forwarded raw): no records
        return None


# ── the upstream ──


@dataclass
class Fault:
    """Misbehaviour beyond `Behaviour`: `reset_after` body bytes then abort; `dribble` chunks with pauses."""

    reset_after: int | None = None
    dribble: float = 0.0  # seconds between chunks of `chunk` bytes
    chunk: int = 1000


class FaultUpstream(RecordingUpstream):
    """The recording upstream plus mid-response resets and slow (dribbled) answers."""

    def __init__(self) -> None:
        super().__init__()
        self.fault = Fault()

    def reset(self, fault: Fault | None = None, **behaviour: Any) -> None:
        super().reset(**behaviour)
        self.fault = fault or Fault()

    async def _serve(self) -> None:
        """As the parent's, with header limits above the proxy's so the proxy's own limits are tested."""
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, auto_decompress=False, access_log=None, handle_signals=False,
                               max_field_size=1 << 16, max_line_size=1 << 16)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.fault
        if fault.reset_after is None and not fault.dribble:
            return await super()._handle(request)
        await super()._handle(request)  # record it like any other request
        b = self.behaviour
        response = web.StreamResponse(status=b.status, headers={**b.headers, "Content-Length": str(len(b.body))})
        await response.prepare(request)
        end = len(b.body) if fault.reset_after is None else fault.reset_after
        for start in range(0, end, fault.chunk):
            await response.write(b.body[start:min(end, start + fault.chunk)])
            if fault.dribble:
                await asyncio.sleep(fault.dribble)
        if fault.reset_after is not None:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        await response.write_eof()
        return response

    def delivered(self) -> list[tuple[str, dict[str, Any]]]:
        """(signal, record) for every OTLP record received so far."""
        out = []
        for kind, path in SIGNAL_PATHS.items():
            for r in self.received(path):
                records = decoded_records(kind, r.body, r.header("content-type"), r.header("content-encoding"))
                out += [(kind, rec) for rec in records or []]
        return out


class PolicyServer:
    """A sync endpoint on a fixed port that can be stopped and started again.

    It keeps every request it receives (`seen`: path, lower-cased headers, body) and answers
    with `answer`, which subclasses override to misbehave.
    """

    def __init__(self, port: int, policies: list[dict[str, Any]], interval: int = 1) -> None:
        self.port = port
        self.policies = policies
        self.interval = interval  # recommendedSyncIntervalSeconds
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sync"

    @property
    def requests(self) -> int:
        return len(self.seen)

    def answer(self, handler: BaseHTTPRequestHandler) -> None:
        """The policies, their count as the hash, and the sync interval."""
        body = json.dumps({"policies": self.policies, "hash": str(len(self.policies)),
                           "recommendedSyncIntervalSeconds": self.interval}).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def start(self) -> PolicyServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                owner.answer(self)

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


# ── the proxy ──


class EdgeProcess:
    """The real `edge` command on a free loopback port, with a file policy provider.

    Its gRPC receiver is off unless a test passes a `grpc` section: otherwise every edge of
    the suite would start gRPC workers, all on the default port.
    """

    def __init__(self, tmp: Path, upstream_url: str, policies: list[dict[str, Any]] | None = None,
                 env: dict[str, str] | None = None, **config: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.policy_file = tmp / "policies.json"
        self.log_path = tmp / "edge.log"
        self.config: dict[str, Any] = {"listen_port": self.port, "workers": 2, "upstream_url": upstream_url,
                                       "policy_providers": [{"id": "suite", "type": "file",
                                                             "path": str(self.policy_file)}],
                                       "grpc": {"enabled": False}, **config}
        self.policies = SUITE_POLICIES if policies is None else policies
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> EdgeProcess:
        self.write_policies(self.policies)
        config_path = self.tmp / "config.json"
        config_path.write_text(json.dumps(self.config))
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(EDGE_SCRIPT), str(config_path)], stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, **self.env})
        if wait_for(self._ready, timeout, 0.1):
            return self
        raise AssertionError(f"edge did not become ready:\n{self.log()}")

    def _ready(self) -> bool:
        """Healthy, every worker forked and the policies listed (fails at once when edge has exited)."""
        assert self.proc is not None and self.proc.poll() is None, f"edge exited early:\n{self.log()}"
        return self.healthy() and len(self.worker_pids()) >= self.config["workers"] and (
            not self.policies or len(self.policy_doc().get("policies") or []) == len(self.policies))

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def write_policies(self, policies: list[dict[str, Any]]) -> None:
        tmp = self.policy_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"policies": policies}))
        tmp.replace(self.policy_file)  # atomic, as a careful writer does

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> Reply:
        return request(self.port, method, path, body, headers, timeout=timeout)

    def healthy(self) -> bool:
        try:
            return self.request("GET", "/_health", timeout=2).status == 200
        except OSError:
            return False

    def policy_doc(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.base + "/_edge/policies?format=json", timeout=5) as resp:
            return orjson.loads(resp.read())

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    # ── processes, sockets, shared memory ──

    def gunicorn(self) -> psutil.Process | None:
        children = psutil.Process(self.pid).children()
        return next((c for c in children if "gunicorn" in " ".join(c.cmdline())), None)

    def worker_pids(self) -> set[int]:
        try:
            master = self.gunicorn()
            return {c.pid for c in master.children()} if master is not None else set()
        except psutil.Error:
            return set()

    def processes(self) -> list[psutil.Process]:
        root = psutil.Process(self.pid)
        return [root, *root.children(recursive=True)]

    def sockets(self) -> list[Any]:
        """Every inet socket the supervisor, gunicorn and the workers hold open."""
        out = []
        for proc in self.processes():
            try:
                out += proc.net_connections(kind="inet")
            except psutil.Error:
                continue
        return out

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total

    def shm_segments(self) -> list[str]:
        return sorted(n for n in os.listdir("/dev/shm") if n.startswith(f"edge-{self.pid}-"))

    def metrics(self) -> Counter[str]:
        """Every sample of /_edge/metrics as `name{label=value,...}` -> value (summed over workers)."""
        text = self.request("GET", "/_edge/metrics").body.decode()
        values: Counter[str] = Counter()
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                values[f"{s.name}{{{labels}}}"] += s.value
        return values

    def dropped(self) -> float:
        """Records dropped by policies so far, all signals."""
        return sum(v for k, v in self.metrics().items() if k.startswith("edge_records_dropped_total"))

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(5)
        left = self.shm_segments()
        assert not left, f"shared memory left behind: {left}"
        return code


# ── the invariant ──


def leaked_sockets(edge: EdgeProcess, pool_bound: int) -> list[str]:
    """Sockets that should not exist once every client has gone: client-side connections still
    open, connections the peer has closed (CLOSE_WAIT), or more pooled upstream connections than
    the case could have opened."""
    problems = []
    pooled = 0
    for c in edge.sockets():
        if c.status == psutil.CONN_LISTEN:
            continue
        if c.status == psutil.CONN_CLOSE_WAIT:
            problems.append(f"CLOSE_WAIT {c.laddr} -> {c.raddr}")
        elif c.laddr and c.laddr.port == edge.port:
            problems.append(f"client connection still open {c.raddr} ({c.status})")
        else:
            pooled += 1
    if pooled > pool_bound:
        problems.append(f"{pooled} upstream connections open (bound {pool_bound})")
    return problems


def check_invariant(edge: EdgeProcess, upstream: FaultUpstream | None, ledger: Ledger | None,
                    dropped_before: float | None, *, pool_bound: int = 16, settle: float = 5.0) -> None:
    """After every case: alive, healthy, no leaked socket or shared memory, every record accounted for."""
    assert edge.proc is not None and edge.proc.poll() is None, f"edge died:\n{edge.log()}"
    assert edge.healthy(), f"/_health does not answer:\n{edge.log()}"
    assert wait_for(lambda: len(edge.worker_pids()) == edge.config["workers"], settle), "workers missing"
    problems: list[str] = []

    def no_leaks() -> bool:
        problems[:] = leaked_sockets(edge, pool_bound)
        return not problems

    assert wait_for(no_leaks, settle, 0.1), f"leaked sockets: {problems}"
    segments = edge.shm_segments()
    generations = [s for s in segments if s.rsplit("-", 1)[-1].startswith("g")]
    assert {f"edge-{edge.pid}-ctl", f"edge-{edge.pid}-rl"} <= set(segments), segments
    assert 1 <= len(generations) <= 3, f"snapshot segments pile up: {segments}"
    if ledger is not None and upstream is not None and dropped_before is not None:
        check_accounting(edge, upstream, ledger, dropped_before)


def check_accounting(edge: EdgeProcess, upstream: FaultUpstream, ledger: Ledger, dropped_before: float) -> None:
    """Every record of a request answered 2xx arrived upstream exactly once and intact, or a suite
    policy dropped it; the proxy's dropped counter agrees; nothing arrived that was not sent."""
    sent = ledger.by_id()
    arrived: Counter[str] = Counter()
    for kind, record in upstream.delivered():
        rid = record_id(kind, record)
        if rid is None:
            continue  # not a ledger record: a raw-forwarded body its test checks byte for byte
        assert rid in sent, f"upstream received a record nobody sent: {repr(record)[:300]}"
        assert sent[rid].signal == kind
        assert fingerprint(record) == sent[rid].fingerprints[rid], f"record {rid} corrupted: {repr(record)[:300]}"
        arrived[rid] += 1
    duplicated = [rid for rid, n in arrived.items() if n > 1]
    assert not duplicated, f"records delivered twice: {duplicated[:5]}"
    acknowledged = [b for b in ledger.batches if b.status is not None and 200 <= b.status < 300]
    lost = [rid for b in acknowledged for rid in b.ids if rid not in arrived and rid not in b.droppable]
    assert not lost, f"records acknowledged with 2xx but never delivered: {lost[:5]}"
    dropped = edge.dropped() - dropped_before
    if all(b.status is not None and 200 <= b.status < 300 for b in ledger.batches):
        expected = sum(1 for b in ledger.batches for rid in b.ids if rid not in arrived)
        assert dropped == expected, f"policies dropped {dropped} records, {expected} went missing"
        assert all(rid in b.droppable for b in ledger.batches for rid in b.ids if rid not in arrived)
    else:  # requests that failed may or may not have been evaluated before failing
        assert dropped <= sum(len(b.droppable) for b in ledger.batches)


# ── raw HTTP, for what http.client refuses to send ──


def raw_http(port: int, data: bytes, *, shutdown_write: bool = False, timeout: float = 5.0) -> bytes:
    """Send bytes as they are and read until the server closes (or `timeout` passes quietly)."""
    return raw_exchange(port, data, shutdown_write=shutdown_write, timeout=timeout)[0]


def raw_exchange(port: int, data: bytes, *, shutdown_write: bool = False, timeout: float = 5.0,
                 ) -> tuple[bytes, bool]:
    """As `raw_http`, and whether the server closed the connection (False: `timeout` passed with
    no byte from it first), so a test can tell a close from a wait without timing it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        if shutdown_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            return b"".join(chunks), False
        except ConnectionResetError:
            pass
        return b"".join(chunks), True


STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def statuses(raw: bytes) -> list[int]:
    """Status codes of every HTTP/1.1 response in a raw byte stream.

    A status line may follow the previous response's body without a line break, so it is
    searched anywhere, not only at the start of a line."""
    return [int(code) for code in STATUS_LINE.findall(raw)]


# ── the fault matrix's case (the `case` fixture of conftest.py hands one to each test) ──

MATRIX_TIMEOUT = 1.5  # upstream_timeout of the fault-matrix proxy (seconds)
MATRIX_MAX_BODY = 1 << 20
MATRIX_MAX_DECODED = 4 << 20


@dataclass
class Case:
    """One fault-matrix case: the shared proxy and upstream, and a fresh ledger checked after the test.

    It lives here rather than in conftest.py so that tests import it like every other helper.
    """

    edge: EdgeProcess
    upstream: FaultUpstream
    ledger: Ledger
    dropped_before: float
    pool_bound: int = 16
    check_accounting: bool = True

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        return self.edge.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})},
                                 timeout=timeout)
