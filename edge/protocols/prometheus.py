"""GET /metrics and /metrics/*: the Prometheus scrape proxy.

The exposition is fetched from `metrics_url` + the same path and query with the client's
headers (hop-by-hop ones dropped) and streamed back through `edge.formats.prometheus.exposition`:
chunk by chunk, so memory stays bounded whatever the size of the scrape. The upstream is
asked for `Accept-Encoding: identity`; a gzip or zstd body it sends anyway is decoded as it
streams, and the filtered body goes out unencoded with the upstream's Content-Type.

Fail-open: with no metric policy, an upstream status other than 200, a body that is not a
text exposition (protobuf, HTML...) or a Content-Encoding we cannot decode, the response is
relayed untouched. Unreachable upstream: 502; too slow: 504. Once the headers are out, an
upstream that fails or sends undecodable bytes aborts the connection: the client sees an
incomplete response, never a corrupted one.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import zstandard

from edge.formats.prometheus.exposition import LineCut, ScrapeFilter
from edge.policy.model import METRIC
from edge.protocols.content_encoding import GZIP, ZSTD, codec_of
from edge.protocols.passthrough import UpstreamBody
from edge.protocols.self_metrics import Metrics
from edge.protocols.upstream import Upstream, relay_headers, request_head, request_target, url
from edge.runtime import Runtime

log = logging.getLogger(__name__)

READ_SIZE = 256 * 1024  # filter at least this much at once: per-chunk costs are amortised over more lines
DECODE_STEP = 256 * 1024  # the filter gets at most this much at a time (a small gzip can inflate a lot)
ZSTD_FEED = 64  # compressed bytes per zstd step: zstd has no output cap (64 bytes inflate to 2 MiB at most)
ZSTD_MAX_WINDOW = 8 << 20  # real encoders stay below it; a frame asking for more is refused, not allocated
_TEXT_TYPES = ("text/plain", "application/openmetrics-text")
_SKIP_RESPONSE_HEADERS = frozenset({b"content-encoding"})


class CorruptStream(Exception):
    """The upstream's gzip or zstd stream is corrupt or cut short."""


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


class FilteredScrape:
    """The filtered exposition as Falcon's `resp.stream`; `close()` releases the upstream connection."""

    def __init__(self, response: aiohttp.ClientResponse, upstream: Upstream, decoder: StreamDecoder,
                 scrape: ScrapeFilter, metrics: Metrics, source: str) -> None:
        self.response = response
        self.upstream = upstream
        self.decoder = decoder
        self.scrape = scrape
        self.metrics = metrics
        self.source = source
        self._reported = False
        self._read_to_end = False
        self._body = self._filtered()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._body

    async def close(self) -> None:
        await self._body.aclose()
        if self._read_to_end:
            self.response.release()  # the connection can serve the next scrape
        else:
            self.response.close()  # a part of the body is unread: the connection cannot be reused

    async def _filtered(self) -> AsyncIterator[bytes]:
        scrape = self.scrape
        try:
            async for raw in self._reads():
                for data in self.decoder.decode(raw):
                    out = scrape.feed(data)
                    self._account()
                    if out:
                        yield out
                    if scrape.done:
                        return
            self.decoder.finish()
            out = scrape.finish()
            self._account()
            if out:
                yield out
        except (CorruptStream, LineCut) as exc:
            log.warning("aborting the scrape of %s: %s", self.source, exc)
            raise

    async def _reads(self) -> AsyncIterator[bytes]:
        """The upstream body in pieces of at least READ_SIZE bytes (except the last)."""
        content = self.response.content
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                chunk = await content.readany()
            except Exception as exc:  # noqa: BLE001 - the headers are out: abort the client connection
                raise self.upstream.failed(exc) from exc
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
        limit = self.scrape.truncated
        if limit is not None and not self._reported:
            self._reported = True
            self.metrics.scrape_truncated(limit)
            log.warning("scrape of %s ended early: prometheus.max_%s_bytes_per_scrape reached (%d bytes in, "
                        "%d out)", self.source, limit, self.scrape.bytes_in, self.scrape.bytes_out)


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

    async def __call__(self, req: Any, resp: Any) -> None:
        scope = req.scope
        engine = self.runtime.engine()
        filtering = engine is not None and engine.snapshot.targets(METRIC)
        headers = request_head(scope["headers"]).pairs()
        if filtering:
            headers = [(n, v) for n, v in headers if n.lower() != "accept-encoding"]
            headers.append(("Accept-Encoding", "identity"))
        target = url(self.base_url, request_target(scope))
        response = await self.upstream.open("GET", target, headers, None, streaming=True)
        how = filterable(response) if filtering else None
        if how is None:
            self._relay(resp, response)
            return
        codec, openmetrics = how
        try:
            scrape = ScrapeFilter(engine, max_input=self.max_input, max_output=self.max_output,
                                  openmetrics=openmetrics)
        except Exception:  # noqa: BLE001 - fail-open: an exposition we cannot filter goes through as it is
            log.exception("preparing the metric policies for a scrape failed; relaying it unfiltered")
            self._relay(resp, response)
            return
        resp.stream = FilteredScrape(response, self.upstream, StreamDecoder(codec), scrape, self.metrics,
                                     str(target.with_query(None)))
        relay_headers(resp, response.status,
                      [(n, v) for n, v in response.raw_headers if n.lower() not in _SKIP_RESPONSE_HEADERS],
                      keep_length=False)

    def _relay(self, resp: Any, response: aiohttp.ClientResponse) -> None:
        """Untouched: status, headers (with the length) and the body as it streams."""
        if response.content_length == 0:
            response.release()
        else:
            resp.stream = UpstreamBody(response, self.upstream)
        relay_headers(resp, response.status, response.raw_headers, keep_length=True)


def prometheus_routes(runtime: Runtime, upstream: Upstream, metrics: Metrics
                      ) -> tuple[dict[str, dict[str, PrometheusRoute]], dict[str, dict[str, PrometheusRoute]]]:
    """(exact routes, prefix routes) of the scrape proxy, for the router."""
    route = PrometheusRoute(runtime.config.metrics_url, runtime, upstream, metrics)
    return {"/metrics": {"GET": route}}, {"/metrics/": {"GET": route}}
