"""Adversarial scrapes through a real `edge`: the Prometheus scrape proxy against a hostile exporter.

A real `edge` (supervisor + 2 gunicorn workers) scrapes a real loopback exporter that serves
what exporters get wrong or attackers send: huge label sets, a 10 MiB label value, a million
distinct series, broken escapes and invalid UTF-8, a last line without its newline, bodies
that never end (streamed fast or dripped) and gzip / zstd bodies corrupt mid-stream.

Whatever comes, the proxy logs no traceback and holds memory and time bounded; its output
parses wherever the input did; lines it cannot read go through unchanged (fail-open); a
scrape that a byte limit or the scrape's deadline stops ends at a line boundary, is logged
as truncated and counted in `edge_prometheus_scrapes_truncated_total`, and the workers stay
responsive to other requests meanwhile.
"""

from __future__ import annotations

import asyncio
import gzip
import http.client
import logging
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import zstandard
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from edge.protocols.prometheus import MAX_SCRAPE_SECONDS, scrape_seconds
from tests.reliability.harness import SIGNAL_PATHS, EdgeProcess, FaultUpstream, Ledger, batch, free_port

TEXT = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"
MAX_IN = 32 << 20  # the proxy's byte limits: above the largest legitimate scrape here
MAX_OUT = 32 << 20
POLICIES = [
    {"id": "drop-names", "metric": {"match": [{"metric_field": "name", "starts_with": "drop_"}], "keep": False}},
    {"id": "drop-dev", "metric": {"match": [{"datapoint_attribute": "env", "exact": "dev"}], "keep": False}},
    {"id": "drop-debug-path", "metric": {"match": [{"datapoint_attribute": "path", "regex": "^/debug"}],
                                         "keep": False}},
    {"id": "drop-debug-logs", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}},
]
RSS_GROWTH_MAX = 150e6  # the instance may cache verdicts and buffers; it must not hold whole scrapes


# ── the exporter ──


Chunks = Callable[[], AsyncIterator[bytes]]


@dataclass
class Scenario:
    """What one path of the exporter answers: headers and the body as it is written, piece by piece."""

    chunks: Chunks
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": TEXT})


def body_of(data: bytes, piece: int = 64 << 10) -> Chunks:
    async def gen() -> AsyncIterator[bytes]:
        for start in range(0, len(data), piece):
            yield data[start:start + piece]
    return gen


class Exporter:
    """An aiohttp exporter in a thread; `serve(name, scenario)` answers `GET /metrics/<name>`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.scenarios: dict[str, Scenario] = {}
        self.open_streams = 0  # bodies being written right now
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="exporter", daemon=True)

    def start(self) -> Exporter:
        logging.getLogger("aiohttp.server").setLevel(logging.CRITICAL)
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def serve(self, name: str, scenario: Scenario) -> str:
        self.scenarios[name] = scenario
        return f"/metrics/{name}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics/{name}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        scenario = self.scenarios[request.match_info["name"]]
        response = web.StreamResponse(headers=scenario.headers)
        response.enable_chunked_encoding()
        await response.prepare(request)
        self.open_streams += 1
        try:
            async for chunk in scenario.chunks():
                await response.write(chunk)
            await response.write_eof()
        except (ConnectionError, asyncio.CancelledError):
            pass  # the proxy went away: what a bounded scrape does to a body that never ends
        finally:
            self.open_streams -= 1
        return response


# ── fixtures and checks ──


@pytest.fixture(scope="module")
def exporter() -> Iterator[Exporter]:
    server = Exporter().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def prom_edge(exporter: Exporter, upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[EdgeProcess]:
    edge = EdgeProcess(tmp_path_factory.mktemp("prom"), upstream.url, policies=POLICIES, metrics_url=exporter.url,
                       upstream_timeout=1.5,
                       prometheus={"max_input_bytes_per_scrape": MAX_IN, "max_output_bytes_per_scrape": MAX_OUT})
    edge.start()
    yield edge
    assert edge.stop() == 0, edge.log()


@pytest.fixture
def edge(prom_edge: EdgeProcess) -> Iterator[EdgeProcess]:
    """The module's proxy; after each test it is healthy, has both workers and logged no traceback."""
    offset = prom_edge.log_path.stat().st_size
    yield prom_edge
    assert prom_edge.healthy(), prom_edge.log()
    assert len(prom_edge.worker_pids()) == 2, prom_edge.log()
    new_log = prom_edge.log_path.read_bytes()[offset:].decode(errors="replace")
    assert "Traceback" not in new_log, new_log[-6000:]


@dataclass
class Scrape:
    status: int
    body: bytes
    complete: bool  # the response ended properly (not aborted mid-body)
    seconds: float


def scrape(edge: EdgeProcess, path: str, headers: dict[str, str] | None = None, timeout: float = 20.0) -> Scrape:
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", edge.port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        try:
            body, complete = response.read(), True
        except http.client.IncompleteRead as exc:
            body, complete = exc.partial, False
        return Scrape(response.status, body, complete, time.monotonic() - started)
    finally:
        conn.close()


def parses(text: bytes) -> bool:
    try:
        list(text_string_to_metric_families(text.decode()))
        return True
    except Exception:  # noqa: BLE001 - any parser complaint means "does not parse"
        return False


def truncated_count(edge: EdgeProcess, limit: str) -> float:
    return edge.metrics()[f"edge_prometheus_scrapes_truncated_total{{limit={limit}}}"]


class PeakRss:
    """Samples the instance's resident memory in a thread; `growth` is the peak over the start."""

    def __init__(self, edge: EdgeProcess) -> None:
        self.edge = edge
        self.baseline = edge.rss()
        self.peak = self.baseline
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.edge.rss())
            time.sleep(0.05)  # the sampling rate of the measurement, not synchronisation

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def growth(self) -> float:
        return self.peak - self.baseline


def kept(lines: list[bytes]) -> list[bytes]:
    """The lines the suite's policies keep (the tests only use forms this simple check reads)."""
    return [line for line in lines
            if not line.startswith(b"drop_") and b'env="dev"' not in line and b'path="/debug' not in line]


def exposition(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\n" for line in lines)


# ── huge label sets ──


def test_a_sample_with_ten_thousand_labels_passes_and_the_rest_is_filtered(edge: EdgeProcess,
                                                                           exporter: Exporter) -> None:
    labels = ",".join(f'l{i}="v{i}"' for i in range(10_000)).encode()
    lines = [b"# TYPE wide gauge", b'wide{env="dev",' + labels + b"} 1", b'keep_a{env="prod"} 1',
             b'keep_a{env="dev"} 2', b"drop_b 3", b'keep_c{path="/debug/x"} 4', b'keep_c{path="/api"} 5']
    data = exposition(lines)
    assert parses(data)
    got = scrape(edge, exporter.serve("wide", Scenario(body_of(data, 4096))))
    assert got.status == 200 and got.complete
    # The 10,000-label line is far beyond what the filter reads: it passes unfiltered (fail-open).
    assert got.body == exposition([lines[0], lines[1], lines[2], lines[6]])
    assert parses(got.body)


def test_a_ten_mib_label_value_streams_through_in_bounded_memory(edge: EdgeProcess, exporter: Exporter) -> None:
    value = b"x" * (10 << 20)
    lines = [b'keep_a{env="prod"} 1', b'big{env="dev",blob="' + value + b'"} 2', b'keep_a{env="dev"} 3',
             b"drop_b 4", b'keep_z{env="prod"} 5']
    data = exposition(lines)
    with PeakRss(edge) as rss:
        got = scrape(edge, exporter.serve("big-value", Scenario(body_of(data))))
    assert got.status == 200 and got.complete
    assert got.body == exposition([lines[0], lines[1], lines[4]])
    assert parses(got.body)
    assert rss.growth < RSS_GROWTH_MAX, f"RSS grew by {rss.growth / 1e6:.0f} MB"


def million_series() -> Chunks:
    async def gen() -> AsyncIterator[bytes]:
        yield b"# HELP s Distinct series.\n# TYPE s gauge\n"
        for block in range(100):
            yield b"".join(b's{env="%s",i="%06d"} 1\n' % (b"dev" if i % 10 == 0 else b"prod", i)
                           for i in range(block * 10_000, (block + 1) * 10_000))
    return gen


def test_a_million_distinct_series_are_filtered_exactly_in_bounded_memory_and_time(edge: EdgeProcess,
                                                                                   exporter: Exporter) -> None:
    path = exporter.serve("million", Scenario(million_series()))
    with PeakRss(edge) as rss:
        got = scrape(edge, path, timeout=25)
    assert got.status == 200 and got.complete
    expected = [b"# HELP s Distinct series.", b"# TYPE s gauge"]
    expected += [b's{env="prod",i="%06d"} 1' % i for i in range(1_000_000) if i % 10]
    assert got.body == exposition(expected)
    assert got.seconds < 20, f"{got.seconds:.1f} s"
    assert rss.growth < RSS_GROWTH_MAX, f"RSS grew by {rss.growth / 1e6:.0f} MB"


def test_a_hundred_thousand_distinct_names_are_filtered_in_bounded_time(edge: EdgeProcess,
                                                                        exporter: Exporter) -> None:
    names = [b"m_%06d" % i for i in range(100_000)]
    lines = [(b"drop_" if i % 7 == 0 else b"") + name + b'{env="prod"} 1' for i, name in enumerate(names)]
    got = scrape(edge, exporter.serve("names", Scenario(body_of(exposition(lines)))))
    assert got.status == 200 and got.complete
    assert got.body == exposition(kept(lines))
    assert got.seconds < 15, f"{got.seconds:.1f} s"


# ── escapes and encodings ──


BROKEN = [
    b'esc_x{env="prod",v="a\\x"} 1',  # an escape the format does not define
    b'esc_lone{env="dev",v="abc\\"} 2',  # a lone backslash at the end: the quote is escaped, the value never ends
    b'esc_open{env="dev",v="abc} 3',  # an unterminated quote
    b'esc_utf8{env="prod",v="\xff\xfe\xc3"} 4',  # invalid UTF-8
    b'esc_nul{env="prod",v="a\x00b"} 5',
]


def test_broken_escapes_and_invalid_utf8_pass_unchanged_never_a_traceback(edge: EdgeProcess,
                                                                          exporter: Exporter) -> None:
    lines = [b'keep_a{env="prod"} 1', *BROKEN, b'keep_a{env="dev"} 6', b'drop_b{v="\xff"} 7', b'keep_z 8',
             b'esc_x{env="dev",v="a\\x"} 9']  # read as Prometheus reads it (`\x` is kept as it is): filtered
    got = scrape(edge, exporter.serve("broken", Scenario(body_of(exposition(lines), 7))))
    assert got.status == 200 and got.complete
    # Lines the filter cannot read go through byte for byte; the readable ones are filtered.
    assert got.body == exposition([lines[0], *BROKEN, lines[-2]])


def test_valid_escapes_are_read_and_what_parsed_still_parses(edge: EdgeProcess, exporter: Exporter) -> None:
    lines = [b"# HELP esc Values with \\\\ and \\n escapes.", b"# TYPE esc gauge",
             b'esc{env="dev",v="quote \\" back \\\\ nl \\n"} 1', b'esc{env="prod",v="quote \\" back \\\\"} 2',
             'esc{env="prod",v="ünïcødé ✓"} 3'.encode(), b'esc{v="x\\"env=\\"dev\\""} 4',
             b'esc{env="d\\u0065v"} 5']
    data = exposition(lines)
    assert parses(data)
    got = scrape(edge, exporter.serve("escapes", Scenario(body_of(data, 5))))
    assert got.status == 200 and got.complete
    assert got.body == exposition([lines[0], lines[1], *lines[3:]])
    assert parses(got.body)


# ── the last line ──


@pytest.mark.parametrize("encoding", ["identity", "gzip", "zstd"])
@pytest.mark.parametrize(("last", "delivered"), [
    (b'keep_last{env="prod"} 9', True),
    (b'keep_last{env="dev"} 9', False),
    (b"drop_last 9", False),
    (b'keep_last{env="prod",v="abc} 9', True),  # unreadable: passes
    (b'keep_long{env="dev",v="' + b"y" * 6000 + b'"} 9', True),  # beyond the line buffer: passes
], ids=["kept", "dropped-label", "dropped-name", "malformed", "long"])
def test_a_last_line_without_newline_is_filtered_like_any_other(edge: EdgeProcess, exporter: Exporter,
                                                                encoding: str, last: bytes, delivered: bool) -> None:
    head = [b"# TYPE keep_a gauge", b'keep_a{env="prod"} 1', b'keep_a{env="dev"} 2']
    data = exposition(head) + last
    headers = {"Content-Type": TEXT}
    if encoding == "gzip":
        data, headers["Content-Encoding"] = gzip.compress(data), "gzip"
    elif encoding == "zstd":
        data, headers["Content-Encoding"] = zstandard.ZstdCompressor().compress(data), "zstd"
    got = scrape(edge, exporter.serve(f"last-{encoding}", Scenario(body_of(data, 3), headers)))
    assert got.status == 200 and got.complete
    assert got.body == exposition(head[:2]) + (last if delivered else b"")


def test_a_last_type_header_alone_and_an_openmetrics_eof_without_newline(edge: EdgeProcess,
                                                                         exporter: Exporter) -> None:
    data = b'keep_a{env="prod"} 1\n# TYPE keep_b gauge\nkeep_b{env="dev"} 2\n# EOF'
    got = scrape(edge, exporter.serve("om-eof", Scenario(body_of(data, 5), {"Content-Type": OPENMETRICS})))
    assert got.status == 200 and got.complete
    assert got.body == b'keep_a{env="prod"} 1\n# EOF'


# ── scrapes that never end ──


def endless(line: bytes, pause: float = 0.0, per_write: int = 2000) -> Chunks:
    async def gen() -> AsyncIterator[bytes]:
        chunk = line * per_write
        while True:
            yield chunk
            await asyncio.sleep(pause)
    return gen


def test_an_endless_fast_scrape_stops_at_the_input_limit_is_logged_and_counted(edge: EdgeProcess,
                                                                               exporter: Exporter) -> None:
    before = truncated_count(edge, "input")
    path = exporter.serve("endless-fast", Scenario(endless(b'fast{env="prod",i="1"} 1\nfast{env="dev"} 2\n')))
    with PeakRss(edge) as rss:
        got = scrape(edge, path, timeout=25)
    assert got.status == 200 and got.complete
    assert got.body and got.body.endswith(b"\n") and len(got.body) <= MAX_OUT
    assert set(got.body.split(b"\n")[:-1]) == {b'fast{env="prod",i="1"} 1'}
    assert got.seconds < 20, f"{got.seconds:.1f} s"
    assert rss.growth < RSS_GROWTH_MAX, f"RSS grew by {rss.growth / 1e6:.0f} MB"
    assert truncated_count(edge, "input") == before + 1
    assert "truncated" in edge.log()


def assert_responsive(edge: EdgeProcess) -> None:
    """Health checks and OTLP posts are answered quickly (called while scrapes keep both workers busy)."""
    ledger = Ledger()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        # A worker held by the scrape would not answer at all: the timeouts bound that hang, they are
        # not a latency target (latencies are measured in benchmarks/, not asserted here).
        assert edge.request("GET", "/_health", timeout=10).status == 200
        body, sent = batch(ledger, "log", keep=2, drop=1)
        reply = edge.request("POST", SIGNAL_PATHS["log"], body, {"Content-Type": "application/json"}, timeout=10)
        sent.status = reply.status
        assert reply.status == 200
        time.sleep(0.05)  # pacing the other traffic, not synchronisation


@pytest.mark.parametrize("drip", [b"drip 1\n", b"d"], ids=["lines", "one-line-never-ending"])
def test_a_dripping_scrape_ends_by_its_deadline_and_workers_stay_responsive(edge: EdgeProcess, exporter: Exporter,
                                                                            drip: bytes) -> None:
    before = truncated_count(edge, "time")
    path = exporter.serve(f"drip-{len(drip)}", Scenario(endless(drip, pause=0.2, per_write=1)))
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "2"}
    with ThreadPoolExecutor(4) as pool:
        scrapes = [pool.submit(scrape, edge, path, headers, 15) for _ in range(4)]
        time.sleep(0.3)
        assert_responsive(edge)
        results = [s.result() for s in scrapes]
    for got in results:
        assert got.status == 200 and got.complete, got
        # ended by the scraper's deadline (1.8 s), not by the client giving up at 15 s: a hang bound
        assert got.seconds < 12, f"{got.seconds:.1f} s"
        if drip == b"d":
            assert got.body == b""  # the one line never ended: nothing of it may go out
        else:
            assert set(got.body.split(b"\n")) <= {b"drip 1", b""} and got.body.endswith(b"\n")
    assert truncated_count(edge, "time") == before + 4
    assert "truncated" in edge.log()
    assert _wait(lambda: exporter.open_streams == 0, 5), "the proxy still reads an abandoned scrape"


def test_an_upstream_silent_mid_body_aborts_the_scrape_it_is_not_a_clean_end(edge: EdgeProcess,
                                                                              exporter: Exporter) -> None:
    async def stalls() -> AsyncIterator[bytes]:
        yield b'keep_a{env="prod"} 1\n'
        await asyncio.sleep(8)  # well beyond the proxy's upstream_timeout (1.5 s)
        yield b'keep_a{env="prod"} 2\n'

    path = exporter.serve("stalls", Scenario(stalls))
    started = time.monotonic()
    try:  # nothing was written yet: the connection closes before the (buffered) status line, or mid-body
        got = scrape(edge, path, timeout=20)
        assert got.status == 200 and not got.complete, got
    except http.client.RemoteDisconnected:
        pass
    assert time.monotonic() - started < 6  # aborted at upstream_timeout (1.5 s), not after the 8 s stall
    assert "aborting the scrape" in edge.log()


@pytest.mark.parametrize(("header", "seconds"), [
    (None, MAX_SCRAPE_SECONDS), (b"10", 9.0), (b"2", 1.8), (b"120", 119.0), (b"1e9", MAX_SCRAPE_SECONDS),
    (b"0", MAX_SCRAPE_SECONDS), (b"-3", MAX_SCRAPE_SECONDS), (b"nan", MAX_SCRAPE_SECONDS), (b"x", MAX_SCRAPE_SECONDS),
])
def test_the_deadline_follows_the_scrapers_stated_timeout(header: bytes | None, seconds: float) -> None:
    headers = [(b"accept", b"text/plain")] + ([(b"x-prometheus-scrape-timeout-seconds", header)] if header else [])
    assert scrape_seconds(headers) == pytest.approx(seconds)


def _wait(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ── corrupt compressed bodies ──


def corrupt_midway(codec: str, cut: bool) -> tuple[bytes, bytes]:
    """A compressed exposition whose second half is garbage (or missing), and what decodes cleanly before it."""
    data = exposition([b'keep_a{env="prod",i="%d"} %d' % (i, i) for i in range(20_000)])
    if codec == "gzip":
        packed = gzip.compress(data)
        clean = zlib.decompressobj(31).decompress(packed[:len(packed) // 2])
    else:
        packed = zstandard.ZstdCompressor().compress(data)
        clean = zstandard.ZstdDecompressor().decompressobj().decompress(packed[:len(packed) // 2])
    half = len(packed) // 2
    return packed[:half] + (b"" if cut else bytes(range(256)) * 8 + packed[half + 2048:]), clean


@pytest.mark.parametrize("cut", [False, True], ids=["garbage", "cut-short"])
@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_a_body_corrupt_midstream_aborts_the_response(edge: EdgeProcess, exporter: Exporter, codec: str,
                                                      cut: bool) -> None:
    packed, clean = corrupt_midway(codec, cut)
    headers = {"Content-Type": TEXT, "Content-Encoding": codec}
    got = scrape(edge, exporter.serve(f"corrupt-{codec}-{cut}", Scenario(body_of(packed, 4096), headers)))
    assert got.status == 200
    assert not got.complete  # the client sees a failed scrape, never a silently shortened one
    assert got.body.count(b"\n") >= clean.count(b"\n") // 2  # it streamed, it did not hold the body back
    # What decoded before the damage went out exactly. (Past it, gzip may inflate garbage into text
    # before its CRC tells: the abort is what makes the client drop it.)
    assert got.body[:len(clean)] == clean[:len(got.body)]
    assert "aborting the scrape" in edge.log()


def test_a_scrape_after_the_abuse_is_exact(edge: EdgeProcess, exporter: Exporter) -> None:
    lines = [b"# TYPE keep_a gauge", b'keep_a{env="prod"} 1', b'keep_a{env="dev"} 2', b"drop_b 3"]
    got = scrape(edge, exporter.serve("after", Scenario(body_of(exposition(lines)))))
    assert got.status == 200 and got.complete and got.body == exposition(lines[:2])


def test_no_scrape_left_an_upstream_connection_behind(edge: EdgeProcess, exporter: Exporter) -> None:
    assert _wait(lambda: exporter.open_streams == 0, 15)  # the stalled exporter's own stream ends after 8 s
    leftover = [c for c in edge.sockets() if c.raddr and c.raddr.port == exporter.port and c.status == "ESTABLISHED"]
    assert len(leftover) <= 4, leftover  # a few pooled keep-alive connections at most
