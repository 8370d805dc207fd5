"""gzip for a response that is produced as a stream: whether the client takes it, and the encoder.

Prometheus always sends `Accept-Encoding: gzip` and an exposition compresses 10-20x, so a
filtered scrape is compressed on its way out. The body is compressed piece by piece as
the filter produces it: memory stays bounded by zlib's window whatever the scrape's size.
Level 1 (what Prometheus' own Go client uses): most of the size win for a fraction of the CPU.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator

GZIP_LEVEL = 1
GZIP_WBITS = 31  # zlib's "gzip container" mode: header and CRC trailer included
ACCEPT_ENCODING = b"accept-encoding"


def _quality(params: list[str]) -> float:
    """The `q` parameter of one Accept-Encoding entry (1 when absent, 0 when unreadable)."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def accepts_gzip(raw_headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's Accept-Encoding takes gzip (RFC 9110 §12.5.3: named, or `*`, with q > 0)."""
    named: float | None = None
    wildcard: float | None = None
    for name, value in raw_headers:
        if name.lower() != ACCEPT_ENCODING:
            continue
        for entry in value.decode("latin-1").split(","):
            coding, *params = entry.split(";")
            coding = coding.strip().lower()
            if coding in ("gzip", "x-gzip"):
                named = _quality(params)
            elif coding == "*":
                wildcard = _quality(params)
    quality = named if named is not None else wildcard
    return quality is not None and quality > 0


async def gzip_stream(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`body` gzip-compressed as it comes; the gzip trailer once it ends (an aborted body gets none).

    Each piece is flushed (Z_SYNC_FLUSH, 5 bytes): what the filter produced so far is on its way
    to the scraper now, not held in zlib's buffers until the upstream sends more. Pieces are
    the filtered output of at least 256 KiB read, so the flushes cost nothing measurable."""
    encoder = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, GZIP_WBITS)
    async for data in body:
        yield encoder.compress(data) + encoder.flush(zlib.Z_SYNC_FLUSH)
    yield encoder.flush()
