"""The protobuf wire format, read and written at the level of fields, for code that must not pay for messages.

Splitting a batch by trace id (`edge.tailsampling.grouping`) only needs each span's bytes and
its trace id; decoding every span into a message and encoding it again would cost more than
everything else the worker does with it, and would drop nothing but could reorder or normalise
bytes the sender chose. So the splitter walks the length-delimited fields of the envelopes
(request → ResourceSpans → ScopeSpans → Span) and copies the spans' bytes as they arrived.
edge-tail writes its log requests field by field (`edge.tail.otlp_protobuf`) with the same varints.
"""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; IndexError past the end (the caller's WireError)."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = data[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + 1
        shift += 7
        if shift > 63:
            raise WireError("varint longer than 10 bytes")


def tag(number: int, kind: int) -> int:
    """A field's key as it precedes the field on the wire (one byte for the fields below 16)."""
    return number << 3 | kind


def fields(data: bytes, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """(tag, start of the field's tag, start of its value, end of its value) of each field in order.

    For a length-delimited field the value is the bytes after the length; for the others the
    value's encoding itself. Groups (wire types 3 and 4) do not occur in OTLP and are refused."""
    end = len(data) if end is None else end
    pos = start
    try:
        while pos < end:
            key, value = read_varint(data, pos)
            kind = key & 7
            if kind == LENGTH:
                size, value = read_varint(data, value)
                stop = value + size
            elif kind == VARINT:
                stop = read_varint(data, value)[1]
            elif kind == FIXED64:
                stop = value + 8
            elif kind == FIXED32:
                stop = value + 4
            else:
                raise WireError(f"unsupported wire type {kind}")
            if stop > end:
                raise WireError("a field runs past the end of its message")
            yield key, pos, value, stop
            pos = stop
    except IndexError:
        raise WireError("truncated message") from None


def length_field(number: int, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    return varint(tag(number, LENGTH)) + varint(len(payload)) + payload


def varint(value: int) -> bytes:
    """The varint encoding of a non-negative integer."""
    if value < 0x80:
        return bytes((value,))
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
