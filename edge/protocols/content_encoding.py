"""Content-Encoding of request bodies: gzip, x-gzip, deflate and zstd are decoded, filtered and re-encoded.

HTTP's `deflate` is the zlib format (RFC 1950), which is what the OpenTelemetry SDKs send; a raw
deflate stream does not decode and goes on unfiltered, as any undecodable body.

`decode()` never allocates more than the decoded-size limit (plus one read block): gzip is
inflated with `max_length`, zstd is fed in small slices with a capped window size, so a
decompression bomb costs at most the limit. Anything we cannot or may
not decode (other codecs, corrupt data, too large, more than MAX_MEMBERS members or frames)
returns None: the caller forwards the original bytes unfiltered (fail-open). `decode_or_raise()`
says which it was (`TooLarge` or `Corrupt`), for the unfiltered accounting and the answer
under `unfiltered: reject`. Decoding is linear in the body size (see `_members`).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import zstandard

IDENTITY = ""
GZIP = "gzip"
DEFLATE = "deflate"
ZSTD = "zstd"

_CODECS = {"": IDENTITY, "identity": IDENTITY, "gzip": GZIP, "x-gzip": GZIP, "deflate": DEFLATE, "zstd": ZSTD}
GZIP_LEVEL = 1  # re-encoding is on the request path: favour speed over ratio
ZSTD_LEVEL = 3
_ZSTD_FEED = 512  # compressed bytes per zstd step at most: at most 16 MiB of output each
_GZIP_FEED = 256 << 10  # compressed bytes per gzip step at most (its output is bounded by max_length)
_FIRST_FEED = 32  # a member's first step: an empty gzip member is 20 bytes, an empty zstd frame 9
# Gzip members / zstd frames decoded per body. Real senders write one per body (a few when they
# concatenate); past the cap a body counts as undecodable and is forwarded raw, as a bomb over
# the decoded-size limit is, so one request's decoding cost is bounded whatever its member count.
MAX_MEMBERS = 1024
_MIN_WINDOW = 8 << 20  # zstd level 19 uses an 8 MiB window; real encoders stay below this

_zstd_compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
_zstd_decompressors: dict[int, zstandard.ZstdDecompressor] = {}


def codec_of(content_encoding: str | None) -> str | None:
    """The codec named by a Content-Encoding header: "" (none), "gzip", "deflate", "zstd"; None if unsupported."""
    if not content_encoding:
        return IDENTITY
    return _CODECS.get(content_encoding.strip().lower())


class DecodeFailed(Exception):
    """The body cannot be decoded within the limits."""


class TooLarge(DecodeFailed):
    """Larger than the limit once decoded, or more than MAX_MEMBERS members or frames (a bomb)."""


class Corrupt(DecodeFailed):
    """Not valid data of its codec: truncated, garbage, or not the codec at all."""


def decode(body: bytes, codec: str, limit: int) -> bytes | None:
    """The decoded body, or None when it is corrupt, larger than `limit` or in an unknown codec."""
    try:
        return decode_or_raise(body, codec, limit)
    except DecodeFailed:
        return None


def decode_or_raise(body: bytes, codec: str, limit: int) -> bytes:
    """The decoded body; raises TooLarge or Corrupt (an unknown codec is Corrupt: `codec_of` comes first)."""
    if codec == IDENTITY:
        if len(body) > limit:
            raise TooLarge(f"{len(body)} bytes, over {limit}")
        return body
    try:
        if codec == GZIP:
            return _gunzip(body, limit)
        if codec == DEFLATE:
            return _members(memoryview(body), _new_zlib_stream, _inflate_gzip, limit, _GZIP_FEED)
        if codec == ZSTD:
            return _unzstd(body, limit)
    except MemoryError:
        raise TooLarge("out of memory while decoding") from None
    except (zlib.error, zstandard.ZstdError, ValueError) as exc:
        raise Corrupt(str(exc)) from None
    raise Corrupt(f"unknown codec {codec!r}")


def encode(data: bytes, codec: str) -> bytes:
    if codec == GZIP:
        return zlib.compress(data, GZIP_LEVEL, 31)
    if codec == DEFLATE:
        return zlib.compress(data, GZIP_LEVEL)
    if codec == ZSTD:
        return _zstd_compressor.compress(data)
    return data


def _gunzip(body: bytes, limit: int) -> bytes:
    """Every gzip member of the body (RFC 1952 allows several; zero padding after them is
    tolerated), at most `limit` bytes."""
    return _members(memoryview(body), _new_gzip_member, _inflate_gzip, limit, _GZIP_FEED, zero_padding=True)


def _new_gzip_member() -> Any:
    return zlib.decompressobj(31)


def _new_zlib_stream() -> Any:
    return zlib.decompressobj(15)


def _inflate_gzip(inflater: Any, data: memoryview, room: int) -> bytes:
    """At most `room` bytes out: a bomb stops at the limit (what is left goes to `unconsumed_tail`,
    never read: `room` bytes out means the body is over the limit)."""
    return inflater.decompress(data, room)


def _inflate_zstd(inflater: Any, data: memoryview, room: int) -> bytes:
    """zstd has no output bound per call: the small feeds (`_ZSTD_FEED`) are the bound."""
    return inflater.decompress(data)


def _members(view: memoryview, new_member: Callable[[], Any], inflate: Callable[[Any, memoryview, int], bytes],
             limit: int, max_feed: int, *, zero_padding: bool = False) -> bytes:
    """Decode up to MAX_MEMBERS consecutive members (gzip) or frames (zstd), at most `limit` bytes.

    Linear in the body: each member's inflater gets slices of the view from where the member
    starts, doubling from `_FIRST_FEED` up to `max_feed`, so what the inflater copies back when
    the member ends (`unused_data`) is bounded by the last slice, never the whole rest of the
    body. Handing every member the rest made a body of many tiny members quadratic: seconds of
    event loop for 1 MiB of empty gzip members.
    """
    size = len(view)
    parts: list[bytes] = []
    total = pos = 0
    for _ in range(MAX_MEMBERS):
        inflater = new_member()
        feed = _FIRST_FEED
        while not inflater.eof:
            if pos >= size:
                raise Corrupt("truncated")
            data = view[pos:pos + feed]
            chunk = inflate(inflater, data, limit + 1 - total)
            pos += len(data)
            feed = min(feed * 2, max_feed)
            if chunk:
                total += len(chunk)
                if total > limit:
                    raise TooLarge(f"over {limit} bytes once decoded")
                parts.append(chunk)
        pos -= len(inflater.unused_data)  # the next member starts here
        if pos >= size:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        if zero_padding and view[pos] == 0:
            if bytes(view[pos:]).strip(b"\0"):
                raise Corrupt("data after the zero padding")
            return b"".join(parts)
    raise TooLarge(f"more than {MAX_MEMBERS} members")  # treated like a bomb, forwarded raw


def _decompressor(limit: int) -> zstandard.ZstdDecompressor:
    window = max(_MIN_WINDOW, 1 << max(0, limit - 1).bit_length())
    dctx = _zstd_decompressors.get(window)
    if dctx is None:
        dctx = _zstd_decompressors[window] = zstandard.ZstdDecompressor(max_window_size=window)
    return dctx


def _unzstd(body: bytes, limit: int) -> bytes:
    """Every zstd frame of the body, at most `limit` bytes.

    Input is fed in small slices: one slice can expand to at most ~16 MiB (RLE blocks),
    so the limit is checked long before a bomb could exhaust memory.
    """
    return _members(memoryview(body), _decompressor(limit).decompressobj, _inflate_zstd, limit, _ZSTD_FEED)
