"""OTLP/protobuf log requests written straight in the protobuf wire format.

Building a request through the generated message classes costs a Python call per field
and per attribute, which made encoding as expensive as parsing. The bytes of an
`ExportLogsServiceRequest` are simple to write directly: each record is its fields' tags
and values joined once, the parts shared by a whole batch (the observed time, the
`log.file.path` attribute of each source, the resource and scope) are encoded once per
batch, and attribute key/value pairs that repeat (short strings) come from a bounded
cache. The result decodes to the same message the classes would build (tests compare
them); fields at their default value are left out, as protobuf does.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

from edge import __version__
from edge.formats.lines.records import FILE_PATH_ATTRIBUTE, Record

SCOPE_NAME = "edge-tail"
Groups = Iterable[tuple[str, list[Record]]]  # (source file, its records)

_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_UINT64 = (1 << 64) - 1
_INT64 = range(-(1 << 63), 1 << 63)
_CACHED_VALUE_LEN = 64  # string attribute values up to this long are cached with their key
_CACHE_ENTRIES = 4096

# field tags (field number << 3 | wire type)
_LOG_TIME, _LOG_SEVERITY_NUMBER, _LOG_SEVERITY_TEXT, _LOG_BODY = b"\x09", b"\x10", b"\x1a", b"\x2a"
_LOG_ATTRIBUTE, _LOG_TRACE_ID, _LOG_SPAN_ID, _LOG_OBSERVED = b"\x32", b"\x4a", b"\x52", b"\x59"
_KEY, _VALUE = b"\x0a", b"\x12"  # KeyValue
_STRING, _BOOL, _INT, _DOUBLE_VALUE = b"\x0a", b"\x10", b"\x18", b"\x21"  # AnyValue
_ARRAY, _KVLIST, _BYTES = b"\x2a", b"\x32", b"\x3a"
_ITEM = b"\x0a"  # ArrayValue.values, KeyValueList.values, Resource.attributes, InstrumentationScope.name
_RESOURCE_LOGS, _RESOURCE, _SCOPE_LOGS, _SCOPE, _LOG_RECORD, _SCOPE_VERSION = (
    b"\x0a", b"\x0a", b"\x12", b"\x0a", b"\x12", b"\x12")


def _varint(number: int) -> bytes:
    out = bytearray()
    while number > 127:
        out.append(number & 0x7F | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


_VARINTS = [_varint(n) for n in range(1 << 14)]  # every length up to 16 KiB: one list index


def varint(number: int) -> bytes:
    return _VARINTS[number] if number < 16384 else _varint(number)


_SEVERITY_NUMBERS = [b"\x10" + _VARINTS[n] for n in range(128)]  # severity numbers are 1..24


def delimited(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: a message, a string or bytes."""
    return tag + varint(len(payload)) + payload


def any_value(value: Any) -> bytes | None:
    """An AnyValue message for a parsed value (objects → kvlist, arrays → array); None for null."""
    kind = value.__class__
    if kind is str:
        return delimited(_STRING, value.encode())
    if kind is bool:
        return _BOOL + _VARINTS[value]
    if kind is int:
        return _INT + varint(value & _UINT64) if value in _INT64 else delimited(_STRING, str(value).encode())
    if kind is float:
        return _DOUBLE_VALUE + _DOUBLE.pack(value)
    if kind is bytes:
        return delimited(_BYTES, value)
    if kind is dict:
        return delimited(_KVLIST, b"".join(delimited(_ITEM, key_value(k, v)) for k, v in value.items()))
    if kind is list:
        return delimited(_ARRAY, b"".join(delimited(_ITEM, any_value(v) or b"") for v in value))
    return None


def key_value(key: str, value: Any) -> bytes:
    encoded = any_value(value)
    return delimited(_KEY, key.encode()) + (b"" if encoded is None else delimited(_VALUE, encoded))


class FieldCache:
    """Encoded fields that log lines repeat: attributes with a short string or an integer value
    (service, method, status), severity texts. Bounded: cleared when full."""

    def __init__(self) -> None:
        self.attributes: dict[tuple[str, Any], bytes] = {}
        self.severities: dict[str, bytes] = {}

    def attribute(self, key: str, value: Any) -> bytes:
        kind = value.__class__
        if (kind is not str or len(value) > _CACHED_VALUE_LEN) and kind is not int:  # bool is no int here
            return delimited(_LOG_ATTRIBUTE, key_value(key, value))
        found = self.attributes.get((key, value))  # 1 and "1" differ; True (== 1) never gets here
        if found is None:
            if len(self.attributes) >= _CACHE_ENTRIES:
                self.attributes.clear()
            found = self.attributes[(key, value)] = delimited(_LOG_ATTRIBUTE, key_value(key, value))
        return found

    def severity(self, text: str) -> bytes:
        found = self.severities.get(text)
        if found is None:
            if len(self.severities) >= _CACHE_ENTRIES:
                self.severities.clear()
            found = self.severities[text] = delimited(_LOG_SEVERITY_TEXT, text.encode())
        return found


def log_record(record: Record, file_path: bytes, observed: bytes, cache: FieldCache) -> bytes:
    """One LogRecord message; `file_path` and `observed` are its batch-wide fields, already encoded."""
    parts = [_LOG_TIME + _FIXED64.pack(record.time_ns)] if record.time_ns else []
    if record.severity_number:
        parts.append(_SEVERITY_NUMBERS[record.severity_number])
    if record.severity_text:
        parts.append(cache.severity(record.severity_text))
    body = record.body
    if body.__class__ is str:
        text = body.encode()
        value = _STRING + varint(len(text)) + text
        parts.append(_LOG_BODY + varint(len(value)) + value)
    elif (value := any_value(body)) is not None:
        parts.append(delimited(_LOG_BODY, value))
    attribute = cache.attribute
    parts.extend([attribute(k, v) for k, v in record.attributes.items()])
    if FILE_PATH_ATTRIBUTE not in record.attributes:
        parts.append(file_path)
    if record.trace_id:
        parts.append(_LOG_TRACE_ID + varint(len(record.trace_id)) + record.trace_id)
    if record.span_id:
        parts.append(_LOG_SPAN_ID + varint(len(record.span_id)) + record.span_id)
    parts.append(observed)
    message = b"".join(parts)
    return _LOG_RECORD + varint(len(message)) + message


class ProtobufEncoder:
    """`Encoder` of OTLP/protobuf requests; keeps its attribute cache from batch to batch."""

    def __init__(self) -> None:
        self.cache = FieldCache()

    def __call__(self, groups: Groups, resource: Mapping[str, str], observed_ns: int) -> bytes:
        observed = _LOG_OBSERVED + _FIXED64.pack(observed_ns)
        records = []
        for source, parsed in groups:
            file_path = delimited(_LOG_ATTRIBUTE, key_value(FILE_PATH_ATTRIBUTE, source))
            records.extend([log_record(r, file_path, observed, self.cache) for r in parsed])
        scope = delimited(_SCOPE, delimited(_ITEM, SCOPE_NAME.encode())
                          + delimited(_SCOPE_VERSION, __version__.encode()))
        scope_logs = delimited(_SCOPE_LOGS, scope + b"".join(records))
        attributes = b"".join(delimited(_ITEM, key_value(k, v)) for k, v in resource.items())
        resource_message = delimited(_RESOURCE, attributes) if attributes else b""  # no attribute: no resource
        return delimited(_RESOURCE_LOGS, resource_message + scope_logs)
