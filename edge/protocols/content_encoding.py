"""Content-Encoding of request bodies: gzip, x-gzip and zstd are decoded, filtered and re-encoded.

`decode()` never allocates more than the decoded-size limit (plus one read block): gzip is
inflated with `max_length`, zstd is read through a bounded stream reader with a capped
window size, so a decompression bomb costs at most the limit. Anything we cannot or may
not decode (other codecs, corrupt data, too large) returns None: the caller forwards the
original bytes unfiltered (fail-open).
"""

from __future__ import annotations

import zlib

import zstandard

IDENTITY = ""
GZIP = "gzip"
ZSTD = "zstd"

_CODECS = {"": IDENTITY, "identity": IDENTITY, "gzip": GZIP, "x-gzip": GZIP, "zstd": ZSTD}
GZIP_LEVEL = 1  # re-encoding is on the request path: favour speed over ratio
ZSTD_LEVEL = 3
_FEED = 512  # compressed bytes per zstd step: at most 16 MiB of output each
_MIN_WINDOW = 8 << 20  # zstd level 19 uses an 8 MiB window; real encoders stay below this

_zstd_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_zstd_decompressors: dict[int, zstandard.ZstdDecompressor] = {}


def codec_of(content_encoding: str | None) -> str | None:
    """The codec named by a Content-Encoding header: "" (none), "gzip", "zstd"; None if unsupported."""
    if not content_encoding:
        return IDENTITY
    return _CODECS.get(content_encoding.strip().lower())


def decode(body: bytes, codec: str, limit: int) -> bytes | None:
    """The decoded body, or None when it is corrupt, larger than `limit` or in an unknown codec."""
    if codec == IDENTITY:
        return body if len(body) <= limit else None
    try:
        if codec == GZIP:
            return _gunzip(body, limit)
        if codec == ZSTD:
            return _unzstd(body, limit)
    except (zlib.error, zstandard.ZstdError, MemoryError, ValueError):
        return None
    return None


def encode(data: bytes, codec: str) -> bytes:
    if codec == GZIP:
        return zlib.compress(data, GZIP_LEVEL, 31)
    if codec == ZSTD:
        return _zstd_compressor.compress(data)
    return data


def _gunzip(body: bytes, limit: int) -> bytes | None:
    """Every gzip member of the body (RFC 1952 allows several), at most `limit` bytes."""
    parts: list[bytes] = []
    total = 0
    data = body
    while True:
        inflater = zlib.decompressobj(31)
        chunk = inflater.decompress(data, limit + 1 - total)
        total += len(chunk)
        if total > limit:
            return None
        parts.append(chunk)
        if not inflater.eof:
            return None  # truncated
        data = inflater.unused_data
        if not data.strip(b"\0"):
            break
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _decompressor(limit: int) -> zstandard.ZstdDecompressor:
    window = max(_MIN_WINDOW, 1 << max(0, limit - 1).bit_length())
    dctx = _zstd_decompressors.get(window)
    if dctx is None:
        dctx = _zstd_decompressors[window] = zstandard.ZstdDecompressor(max_window_size=window)
    return dctx


def _unzstd(body: bytes, limit: int) -> bytes | None:
    """Every zstd frame of the body, at most `limit` bytes.

    Input is fed in small slices: one slice can expand to at most ~16 MiB (RLE blocks),
    so the limit is checked long before a bomb could exhaust memory.
    """
    dctx = _decompressor(limit)
    view = memoryview(body)
    size = len(view)
    parts: list[bytes] = []
    total = 0
    pos = 0
    while pos < size:
        inflater = dctx.decompressobj()
        while pos < size and not inflater.eof:
            chunk = inflater.decompress(view[pos:pos + _FEED])
            pos += _FEED
            if chunk:
                total += len(chunk)
                if total > limit:
                    return None
                parts.append(chunk)
        if not inflater.eof:
            return None  # truncated
        pos = min(pos, size) - len(inflater.unused_data)  # the next frame starts here
    if not parts:
        return b"" if size else None
    return parts[0] if len(parts) == 1 else b"".join(parts)
