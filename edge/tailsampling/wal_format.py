"""The write-ahead log's records on disk: framing, checksums and the four record kinds.

A record is a 12-byte header (`MAGIC`, kind, length of the body, CRC32 of kind + length +
body) followed by its body, little-endian throughout. The checksum covers the length, so a
flipped length is caught instead of sending the reader into the middle of a payload; the
magic lets the reader find the next record after a damaged one. A segment file starts with
a SEGMENT record and holds nothing but records.

Reading (`scan`) tells the two kinds of damage apart: bytes that do not check out but are
followed by a valid record are corruption (counted and skipped, the rest is still read);
bytes that do not check out up to the end of the file are a torn tail, the part of a write
that a crash cut off, which the caller truncates.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum

from edge.tailsampling.interfaces import TraceFragment, TraceId

MAGIC = b"\xedW"
_HEADER = struct.Struct("<2sBxII")  # magic, kind, (pad), body length, crc32
_CHECKED = struct.Struct("<BI")  # kind and length: the part of the header the checksum covers
HEADER_SIZE = _HEADER.size

_SEGMENT = struct.Struct("<QQ")  # this segment's id, the highest id it supersedes (0: none)
_FRAGMENTS = struct.Struct("<dI")  # arrived (wall-clock seconds), fragment count
_FRAGMENT = struct.Struct("<BII")  # trace id length, spans, payload length; then the id and the payload
_DECIDED = struct.Struct("<?B")  # sampled, trace id length; then the id
_DONE = struct.Struct("<I")  # count; then each id as one length byte and its bytes


class Kind(IntEnum):
    SEGMENT = 1
    FRAGMENTS = 2
    DECIDED = 3
    DONE = 4


def _frame(kind: Kind, body: bytes) -> bytes:
    checked = _CHECKED.pack(kind, len(body))
    return _HEADER.pack(MAGIC, kind, len(body), zlib.crc32(body, zlib.crc32(checked))) + body


def fragment_sizes(fragments: Sequence[TraceFragment]) -> list[tuple[TraceId, int]]:
    """The bytes of a FRAGMENTS record each trace holds on disk: its fragment, and the record's
    framing for the first, so that what is live adds up to what the record takes."""
    sizes = [(f.trace_id, _FRAGMENT.size + len(f.trace_id) + len(f.payload)) for f in fragments]
    if sizes:
        sizes[0] = (sizes[0][0], sizes[0][1] + HEADER_SIZE + _FRAGMENTS.size)
    return sizes


def encode_segment(segment_id: int, supersedes: int) -> bytes:
    return _frame(Kind.SEGMENT, _SEGMENT.pack(segment_id, supersedes))


def encode_fragments(fragments: Sequence[TraceFragment], arrived: float) -> bytes:
    parts = [_FRAGMENTS.pack(arrived, len(fragments))]
    for f in fragments:
        parts += (_FRAGMENT.pack(len(f.trace_id), f.spans, len(f.payload)), f.trace_id, f.payload)
    return _frame(Kind.FRAGMENTS, b"".join(parts))


def encode_decided(trace_id: TraceId, sampled: bool) -> bytes:
    return _frame(Kind.DECIDED, _DECIDED.pack(sampled, len(trace_id)) + trace_id)


def encode_done(trace_ids: Sequence[TraceId]) -> bytes:
    parts = [_DONE.pack(len(trace_ids))]
    for trace_id in trace_ids:
        parts += (bytes((len(trace_id),)), trace_id)
    return _frame(Kind.DONE, b"".join(parts))


def decode_segment(body: memoryview) -> tuple[int, int]:
    """(segment id, highest id it supersedes)."""
    segment_id, supersedes = _SEGMENT.unpack_from(body)
    return segment_id, supersedes


def decode_fragments(body: memoryview) -> tuple[float, list[TraceFragment]]:
    """The arrival time and the fragments of one submission (payloads copied out of `body`)."""
    arrived, count = _FRAGMENTS.unpack_from(body)
    at = _FRAGMENTS.size
    fragments = []
    for _ in range(count):
        id_len, spans, payload_len = _FRAGMENT.unpack_from(body, at)
        at += _FRAGMENT.size
        trace_id = bytes(body[at:at + id_len])
        at += id_len
        fragments.append(TraceFragment(trace_id, bytes(body[at:at + payload_len]), spans))
        at += payload_len
    return arrived, fragments


def decode_decided(body: memoryview) -> tuple[TraceId, bool]:
    sampled, id_len = _DECIDED.unpack_from(body)
    return bytes(body[_DECIDED.size:_DECIDED.size + id_len]), sampled


def decode_done(body: memoryview) -> list[TraceId]:
    (count,) = _DONE.unpack_from(body)
    at = _DONE.size
    trace_ids = []
    for _ in range(count):
        id_len = body[at]
        trace_ids.append(bytes(body[at + 1:at + 1 + id_len]))
        at += 1 + id_len
    return trace_ids


@dataclass(frozen=True, slots=True)
class Record:
    offset: int  # of its header within the segment file
    kind: Kind
    body: memoryview


@dataclass(slots=True)
class Scan:
    """A segment file read back: its valid records, the damaged stretches skipped, where the valid data ends."""

    records: list[Record]
    corrupt: int  # damaged stretches followed by a valid record
    end: int  # offset just past the last valid record: anything after it is a torn tail


def _record_at(data: memoryview, at: int) -> Record | None:
    """The record whose header starts at `at`, or None when the bytes there do not check out."""
    if len(data) - at < HEADER_SIZE:
        return None
    magic, kind, length, crc = _HEADER.unpack_from(data, at)
    body_at = at + HEADER_SIZE
    if magic != MAGIC or kind not in Kind._value2member_map_ or length > len(data) - body_at:
        return None
    body = data[body_at:body_at + length]
    if zlib.crc32(body, zlib.crc32(_CHECKED.pack(kind, length))) != crc:
        return None
    return Record(at, Kind(kind), body)


def _next_valid(data: memoryview, raw: bytes, after: int) -> Record | None:
    """The first record that checks out past a damaged one, found by its magic."""
    at = raw.find(MAGIC, after + 1)
    while at != -1:
        record = _record_at(data, at)
        if record is not None:
            return record
        at = raw.find(MAGIC, at + 1)
    return None


def scan(raw: bytes) -> Scan:
    """Every valid record of a segment file's contents, in order."""
    data = memoryview(raw)
    records: list[Record] = []
    corrupt = 0
    at = 0
    while at < len(data):
        record = _record_at(data, at)
        if record is None:
            record = _next_valid(data, raw, at)
            if record is None:
                break
            corrupt += 1
        records.append(record)
        at = record.offset + HEADER_SIZE + len(record.body)
    return Scan(records, corrupt, at)
