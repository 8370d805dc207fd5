"""GET and HEAD /metrics and /metrics/*: the Prometheus scrape proxy.

The exposition is fetched from `prometheus.scrape_url` (default `metrics_url`) + the same
path and query with the client's headers (hop-by-hop ones dropped) and streamed back through
`edge.formats.prometheus.exposition`: chunk by chunk, so memory stays bounded whatever the
size of the scrape. The upstream is asked for `Accept-Encoding: identity`; a gzip or zstd
body it sends anyway is decoded as it streams. The filtered body goes out with the
upstream's Content-Type, gzip-compressed as it is produced when the scraper accepts gzip
(Prometheus always does), else unencoded; either way with `Vary: Accept-Encoding`.
HEAD is answered with the status and headers the GET would have, without a body: the
upstream is asked with a GET (exporters such as Python's prometheus_client answer HEAD
with 501) whose body is never read, its connection closed.

Fail-open: with no metric policy, an upstream status other than 200, a body that is not a
text exposition (protobuf, HTML...) or a Content-Encoding we cannot decode, the response is
relayed untouched; the last two (and a filter that cannot be prepared) are unfiltered scrapes,
counted and logged, or refused under `unfiltered: reject` (`edge.protocols.unfiltered`).
Unreachable upstream: 502; too slow: 504. Once the headers are out, an upstream that fails
or sends undecodable bytes aborts the connection (one warning, no traceback): the client
sees an incomplete response and discards the scrape. (gzip checks its CRC only at the end
of a member, so garbage may decode into text before the error is seen; the abort is what
keeps such text out of the client's data.)

A filtered scrape has a deadline: the scraper's own timeout, which Prometheus sends as
`X-Prometheus-Scrape-Timeout-Seconds` (less a small margin, so the answer arrives in time),
else MAX_SCRAPE_SECONDS. An upstream that drips its body or never ends it would otherwise
hold the upstream connection and the worker's attention for as long as it likes (the
client's disconnect is not seen while nothing is written). At the deadline the scrape ends
at a line boundary, like at a byte limit: logged as truncated and counted with
limit="time".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import zstandard

from edge.formats.prometheus.exposition import LineCut, ScrapeFilter
from edge.policy.model import METRIC
from edge.protocols.content_encoding import GZIP, ZSTD, codec_of
from edge.protocols.gzip_response import accepts_gzip, gzip_stream
from edge.protocols.passthrough import UpstreamBody
from edge.protocols.self_metrics import Metrics
from edge.protocols.unfiltered import (
    INTERNAL_ERROR,
    REJECT,
    UNKNOWN_CODEC,
    UNSUPPORTED_FORMAT,
    Reason,
    Refused,
    note,
    refusal,
)
from edge.protocols.upstream import Upstream, UpstreamError, relay_headers, request_head, request_target, url
from edge.runtime import Runtime

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # filter at least this much at once: per-chunk costs are amortised over more lines
DECODE_STEP = 256 * 1024  # the filter gets at most this much at a time (a small gzip can inflate a lot)
ZSTD_FEED = 64  # compressed bytes per zstd step: zstd has no output cap (64 bytes inflate to 2 MiB at most)
ZSTD_MAX_WINDOW = 8 << 20  # real encoders stay below it; a frame asking for more is refused, not allocated
MAX_SCRAPE_SECONDS = 300.0  # a filtered scrape's deadline when the scraper states none (nor a shorter one)
SCRAPE_TIMEOUT_HEADER = b"x-prometheus-scrape-timeout-seconds"
DEADLINE_MARGIN = 0.1  # of the scraper's timeout (at most 1 s) kept for the answer to reach it
_TEXT_TYPES = ("text/plain", "application/openmetrics-text")
_SKIP_RESPONSE_HEADERS = frozenset({b"content-encoding", b"vary"})  # edge's own encoding and Vary replace them
ACCEPT_ENCODING = "Accept-Encoding"


class CorruptStream(Exception):
    """The upstream's gzip or zstd stream is corrupt or cut short."""


class ScrapeAborted(asyncio.CancelledError):
    """Drops the client connection mid-body, the one way to tell a client the scrape failed.

    Raised from the response stream once the reason is logged. An ASGI server takes a
    CancelledError as a request that ended early and closes the connection quietly; any
    other exception would also be logged with a traceback, for what is the upstream's
    fault and already said in one line.
    """


def scrape_seconds(raw_headers: list[tuple[bytes, bytes]]) -> float:
    """How long a filtered scrape may take: the scraper's stated timeout less a margin, else the maximum."""
    for name, value in raw_headers:
        if name == SCRAPE_TIMEOUT_HEADER:
            try:
                stated = float(value)
            except ValueError:
                break
            if stated > 0:  # also False for NaN
                return min(MAX_SCRAPE_SECONDS, stated - min(1.0, stated * DEADLINE_MARGIN))
            break
    return MAX_SCRAPE_SECONDS


class StreamDecoder:
    """Incremental Content-Encoding decoding with bounded output per step."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._gzip = zlib.decompressobj(31) if codec == GZIP else None
        self._zstd = _zstd_decompressor() if codec == ZSTD else None
        self._fed = False

    def decode(self, data: bytes) -> Iterator[bytes]:
        try:
            if self.codec == GZIP:
                yield from self._gunzip(data)
            elif self.codec == ZSTD:
                yield from self._unzstd(data)
            else:
                yield data
        except (zlib.error, zstandard.ZstdError) as exc:
            raise CorruptStream(f"{self.codec} body: {exc}") from None

    def finish(self) -> None:
        """The upstream body ended: the last gzip member or zstd frame must be complete."""
        if self._fed and not (self._gzip or self._zstd).eof:
            raise CorruptStream(f"{self.codec} body cut short")

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        """Every member (RFC 1952 allows several), at most DECODE_STEP bytes at a time."""
        while data:
            inflater = self._gzip
            assert inflater is not None
            self._fed = True
            if inflater.eof:
                if not data.strip(b"\0"):
                    return  # padding after the last member
                inflater = self._gzip = zlib.decompressobj(31)
            out = inflater.decompress(data, DECODE_STEP)
            if out:
                yield out
            data = inflater.unconsumed_tail if not inflater.eof else inflater.unused_data

    def _unzstd(self, data: bytes) -> Iterator[bytes]:
        """Every frame, fed in small slices so that one step cannot inflate without bound."""
        view = memoryview(data)
        for start in range(0, len(view), ZSTD_FEED):
            piece = view[start:start + ZSTD_FEED]
            while piece:
                inflater = self._zstd
                assert inflater is not None
                if inflater.eof:
                    inflater = self._zstd = _zstd_decompressor()
                self._fed = True
                out = inflater.decompress(piece)
                for start in range(0, len(out), DECODE_STEP):
                    yield out[start:start + DECODE_STEP]
                piece = inflater.unused_data if inflater.eof else b""


def _zstd_decompressor() -> Any:
    return zstandard.ZstdDecompressor(max_window_size=ZSTD_MAX_WINDOW).decompressobj()


class NoBody:
    """The body of a HEAD answer: set as `resp.stream`, so Falcon adds no Content-Length the GET would not have."""

    def __aiter__(self) -> NoBody:
        return self

    async def __anext__(self) -> bytes:
        raise StopAsyncIteration


NO_BODY = NoBody()


def filterable(response: aiohttp.ClientResponse) -> tuple[str, bool] | None:
    """(codec, is OpenMetrics) when the response is a text exposition we can decode; else None."""
    if response.status != 200:
        return None
    content_type = (response.headers.get("Content-Type") or "").strip().lower()
    if content_type and not content_type.startswith(_TEXT_TYPES):
        return None
    codec = codec_of(response.headers.get("Content-Encoding"))
    if codec is None:
        return None
    return codec, content_type.startswith("application/openmetrics-text")


def unfilterable(response: aiohttp.ClientResponse) -> Reason | None:
    """Why a scrape `filterable` turned down is unfiltered; None for an error status (relayed as it is)."""
    if response.status != 200:
        return None
    return UNKNOWN_CODEC if codec_of(response.headers.get("Content-Encoding")) is None else UNSUPPORTED_FORMAT


class FilteredScrape:
    """The filtered exposition as Falcon's `resp.stream`; `close()` releases the upstream connection."""

    def __init__(self, response: aiohttp.ClientResponse, upstream: Upstream, decoder: StreamDecoder,
                 scrape: ScrapeFilter, metrics: Metrics, source: str, deadline: float, gzip: bool) -> None:
        self.response = response
        self.upstream = upstream
        self.decoder = decoder
        self.scrape = scrape
        self.metrics = metrics
        self.source = source
        self.deadline = deadline  # event-loop time
        self._reported = False
        self._unfiltered_reported = False
        self._read_to_end = False
        self._expired = False
        self._lines = self._filtered()
        self._body = gzip_stream(self._lines) if gzip else self._lines

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body

    async def close(self) -> None:
        await self._body.aclose()
        await self._lines.aclose()
        if self._read_to_end:
            self.response.release()  # the connection can serve the next scrape
        else:
            self.response.close()  # a part of the body is unread: the connection cannot be reused

    async def _filtered(self) -> AsyncIterator[bytes]:
        scrape = self.scrape
        try:
            async with contextlib.aclosing(self._pieces()) as pieces:
                async for data in pieces:
                    out = scrape.feed(data)
                    self._account()
                    if out:
                        yield out
                    if scrape.done:
                        return
            out = scrape.stop("time") if self._expired else self._finish()
            self._account()
            if out:
                yield out
        except (CorruptStream, LineCut, UpstreamError) as exc:
            self._account()  # a limit that fell inside a long line still truncated the scrape: logged and counted
            log.warning("aborting the scrape of %s: %s", self.source, exc)
            raise ScrapeAborted(str(exc)) from None

    def _finish(self) -> bytes:
        """The body ended: the encoding must be complete, and a last line without a newline is filtered too."""
        self.decoder.finish()
        return self.scrape.finish()

    async def _pieces(self) -> AsyncIterator[bytes]:
        """The decoded body piece by piece, until it ends or the scrape's deadline passes."""
        loop = asyncio.get_running_loop()
        async with contextlib.aclosing(self._reads()) as reads:
            async for raw in reads:
                for data in self.decoder.decode(raw):
                    yield data
                    if loop.time() >= self.deadline:
                        self._expired = True
                        return

    async def _reads(self) -> AsyncIterator[bytes]:
        """The upstream body in pieces of at least READ_SIZE bytes (except the last)."""
        parts: list[bytes] = []
        size = 0
        while True:
            deadline = asyncio.timeout_at(self.deadline)
            try:
                async with deadline:
                    chunk = await self.upstream.read(self.response)
            except Exception as exc:  # noqa: BLE001 - the headers are out: abort the client connection
                if not deadline.expired():  # the upstream failed or was silent for upstream_timeout
                    raise self.upstream.failed(exc) from exc
                self._expired = True  # the scrape's own deadline: it ends cleanly
                if parts:
                    yield b"".join(parts)
                return
            if chunk:
                parts.append(chunk)
                size += len(chunk)
            if size >= READ_SIZE or (not chunk and parts):
                yield parts[0] if len(parts) == 1 else b"".join(parts)
                parts, size = [], 0
            if not chunk:
                self._read_to_end = True
                return

    def _account(self) -> None:
        """Match statistics to the engine, record counts and truncation to the proxy's metrics."""
        records = self.scrape.drain()
        if records.evaluated:
            self.metrics.records(METRIC, records.evaluated, records.kept)
        if self.scrape.unfiltered and not self._unfiltered_reported:  # the headers are out: counted, not refused
            self._unfiltered_reported = True
            note(self.metrics, PrometheusRoute.route, METRIC, False, INTERNAL_ERROR, "the rest of the scrape")
        limit = self.scrape.truncated
        if limit is not None and not self._reported:
            self._reported = True
            self.metrics.scrape_truncated(limit)
            why = ("its deadline passed" if limit == "time"
                   else f"prometheus.max_{limit}_bytes_per_scrape reached")
            log.warning("scrape of %s truncated: %s (%d bytes in, %d out)", self.source, why,
                        self.scrape.bytes_in, self.scrape.bytes_out)


class PrometheusRoute:
    """One worker's scrape proxy for `/metrics` and everything under `/metrics/`."""

    route = "prometheus"

    def __init__(self, base_url: str, runtime: Runtime, upstream: Upstream, metrics: Metrics) -> None:
        self.base_url = base_url
        self.runtime = runtime
        self.upstream = upstream
        self.metrics = metrics
        limits = runtime.config.prometheus
        self.max_input = limits.max_input_bytes_per_scrape
        self.max_output = limits.max_output_bytes_per_scrape
        self.reject = runtime.config.unfiltered == REJECT

    async def __call__(self, req: Any, resp: Any) -> None:
        scope = req.scope
        method = scope["method"]
        deadline = asyncio.get_running_loop().time() + scrape_seconds(scope["headers"])
        engine = self.runtime.engine()
        filtering = engine is not None and engine.snapshot.targets(METRIC)
        headers = request_head(scope["headers"]).pairs()
        if filtering:
            headers = [(n, v) for n, v in headers if n.lower() != "accept-encoding"]
            headers.append((ACCEPT_ENCODING, "identity"))
        target = url(self.base_url, request_target(scope))
        response = await self.upstream.open("GET", target, headers, None, streaming=True)
        how = filterable(response) if filtering else None
        if how is None:
            reason = unfilterable(response) if filtering else None
            if reason is None or self._unfiltered(resp, response, reason):
                self._relay(resp, response, method)
            return
        if method == "HEAD":
            response.close()  # the body is not wanted: the connection goes rather than reading it
            self._filtered_headers(resp, response, accepts_gzip(scope["headers"]))
            resp.stream = NO_BODY  # a stream, not data: no Content-Length, as the GET has none
            return
        codec, openmetrics = how
        try:
            scrape = ScrapeFilter(engine, max_input=self.max_input, max_output=self.max_output,
                                  openmetrics=openmetrics)
        except Exception:  # noqa: BLE001 - fail-open: an exposition we cannot filter goes through as it is
            log.exception("preparing the metric policies for a scrape failed; relaying it unfiltered")
            if self._unfiltered(resp, response, INTERNAL_ERROR):
                self._relay(resp, response, method)
            return
        gzip = accepts_gzip(scope["headers"])
        resp.stream = FilteredScrape(response, self.upstream, StreamDecoder(codec), scrape, self.metrics,
                                     str(target.with_query(None)), deadline, gzip)
        self._filtered_headers(resp, response, gzip)

    @staticmethod
    def _filtered_headers(resp: Any, response: aiohttp.ClientResponse, gzip: bool) -> None:
        """The upstream's status and headers but its length and encoding; ours, and the Vary that goes with them."""
        relay_headers(resp, response.status,
                      [(n, v) for n, v in response.raw_headers if n.lower() not in _SKIP_RESPONSE_HEADERS],
                      keep_length=False)
        if gzip:
            resp.set_header("Content-Encoding", GZIP)
        vary = [v.strip() for value in response.headers.getall("Vary", ()) for v in value.split(",") if v.strip()]
        if not any(v.lower() == ACCEPT_ENCODING.lower() for v in vary):
            vary.append(ACCEPT_ENCODING)
        resp.set_header("Vary", ", ".join(vary))

    def _unfiltered(self, resp: Any, response: aiohttp.ClientResponse, reason: Reason) -> bool:
        """Count and log a scrape relayed unfiltered; False when it was refused instead (`reject`)."""
        try:
            note(self.metrics, self.route, METRIC, self.reject, reason,
                 f"Content-Type {response.headers.get('Content-Type')!r}, "
                 f"Content-Encoding {response.headers.get('Content-Encoding')!r}")
        except Refused as refused:
            response.release()
            refusal(resp, refused.reason)
            return False
        return True

    def _relay(self, resp: Any, response: aiohttp.ClientResponse, method: str) -> None:
        """Untouched: status, headers (with the length) and the body as it streams (HEAD: no body)."""
        if method == "HEAD":
            response.close()
            resp.stream = NO_BODY  # the GET's headers, its Content-Length included: Falcon adds none
        elif response.content_length == 0:
            response.release()
        else:
            resp.stream = UpstreamBody(response, self.upstream)
        relay_headers(resp, response.status, response.raw_headers, keep_length=True)


def prometheus_routes(runtime: Runtime, upstream: Upstream, metrics: Metrics
                      ) -> tuple[dict[str, dict[str, PrometheusRoute]], dict[str, dict[str, PrometheusRoute]]]:
    """(exact routes, prefix routes) of the scrape proxy, for the router."""
    config = runtime.config
    route = PrometheusRoute(config.prometheus.scrape_url or config.http_url(config.metrics_url), runtime, upstream,
                            metrics)
    methods = {"GET": route, "HEAD": route}
    return {"/metrics": methods}, {"/metrics/": methods}
