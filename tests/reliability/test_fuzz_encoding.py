"""Fuzzing content decoding (`edge/protocols/content_encoding.py`): bombs, corrupt and truncated streams.

Property: `decode` never raises and never returns more than the limit; what `encode` made comes
back exactly while it fits; anything else is None, which the OTLP route forwards raw (fail-open).
"""

from __future__ import annotations

import zlib

import zstandard
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edge.protocols.content_encoding import DEFLATE, GZIP, IDENTITY, ZSTD, codec_of, decode, encode

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
codecs = st.sampled_from([IDENTITY, GZIP, ZSTD])


@FUZZ
@given(data=st.binary(max_size=2000), codec=codecs, limit=st.integers(1, 4000))
def test_round_trip_within_the_limit(data: bytes, codec: str, limit: int) -> None:
    decoded = decode(encode(data, codec), codec, limit)
    assert decoded == (data if len(data) <= limit else None)


@FUZZ
@given(body=st.binary(max_size=500), codec=codecs, limit=st.integers(0, 1000))
def test_arbitrary_bytes_never_raise(body: bytes, codec: str, limit: int) -> None:
    decoded = decode(body, codec, limit)
    assert decoded is None or len(decoded) <= limit


@FUZZ
@given(data=st.binary(min_size=1, max_size=800), codec=st.sampled_from([GZIP, ZSTD]), data_draw=st.data())
def test_damaged_streams_are_none_or_bounded(data: bytes, codec: str, data_draw: st.DataObject) -> None:
    stream = bytearray(encode(data, codec) * data_draw.draw(st.integers(1, 3)))  # several members / frames
    for _ in range(data_draw.draw(st.integers(1, 3))):
        at = data_draw.draw(st.integers(0, len(stream) - 1))
        if data_draw.draw(st.booleans()):
            stream[at] ^= data_draw.draw(st.integers(1, 255))
        else:
            del stream[at:]
            if not stream:
                break
    limit = data_draw.draw(st.integers(1, 3000))
    decoded = decode(bytes(stream), codec, limit)
    assert decoded is None or len(decoded) <= limit


@settings(max_examples=20, deadline=None)
@given(size=st.integers(1 << 20, 16 << 20), codec=st.sampled_from([GZIP, ZSTD]), limit=st.integers(1, (1 << 20) - 1))
def test_bombs_are_refused_at_the_limit(size: int, codec: str, limit: int) -> None:
    if codec == GZIP:
        compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
        bomb = b"".join([compressor.compress(b"\0" * (1 << 20)) for _ in range(size >> 20)] + [compressor.flush()])
    else:
        bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * size)
    assert decode(bomb, codec, limit) is None


@FUZZ
@given(name=st.text(max_size=12))
@example(name="Deflate")
def test_any_content_encoding_name_maps_to_a_codec_or_none(name: str) -> None:
    assert codec_of(name) in (IDENTITY, GZIP, DEFLATE, ZSTD, None)
