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
from edge.formats.protobuf_wire import varint as encode_varint

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


_VARINTS = [encode_varint(n) for n in range(1 << 14)]  # every length up to 16 KiB: one list index


def varint(number: int) -> bytes:
    return _VARINTS[number] if number < 16384 else encode_varint(number)


_SEVERITY_NUMBERS = [_LOG_SEVERITY_NUMBER + _VARINTS[n] for n in range(128)]  # severity numbers are 1..24


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
    (service, method, status), severity number and text together. Bounded: cleared when full."""

    def __init__(self) -> None:
        self.attributes: dict[tuple[str, Any], bytes] = {}
        self.severities: dict[tuple[int, str], bytes] = {}

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

    def severity(self, number: int, text: str) -> bytes:
        """The severity number and text fields (adjacent in a record), each left out when absent."""
        if len(self.severities) >= _CACHE_ENTRIES:
            self.severities.clear()
        found = self.severities[(number, text)] = (_SEVERITY_NUMBERS[number] if number else b"") + (
            delimited(_LOG_SEVERITY_TEXT, text.encode()) if text else b"")
        return found


_TIME = struct.Struct("<BQ")  # the time field: its tag, then the fixed64
_BODY_HEADS = [_LOG_BODY + varint(n + 1 + len(varint(n))) + _STRING + varint(n) for n in range(1 << 14)]
_TRACE_HEADS = [_LOG_TRACE_ID + varint(n) for n in range(64)]  # ids are 16 and 8 bytes
_SPAN_HEADS = [_LOG_SPAN_ID + varint(n) for n in range(64)]


def log_record(record: Record, file_path: bytes, observed: bytes, cache: FieldCache) -> bytes:
    """One LogRecord message; `file_path` and `observed` are its batch-wide fields, already encoded.
    (Written out with table lookups rather than helper calls: this runs once per forwarded line.)"""
    severity = cache.severities.get((record.severity_number, record.severity_text))
    if severity is None:
        severity = cache.severity(record.severity_number, record.severity_text)
    body = record.body
    if body.__class__ is str:
        text = body.encode()
        size = len(text)
        body = _BODY_HEADS[size] + text if size < 16384 else delimited(_LOG_BODY, delimited(_STRING, text))
    else:
        value = any_value(body)
        body = b"" if value is None else delimited(_LOG_BODY, value)
    attributes = record.attributes
    if attributes:
        attributes_part = _attributes(attributes, cache)
        if FILE_PATH_ATTRIBUTE not in attributes:
            attributes_part += file_path
    else:
        attributes_part = file_path
    trace_id, span_id = record.trace_id, record.span_id
    message = b"".join((
        _TIME.pack(_LOG_TIME[0], record.time_ns) if record.time_ns else b"", severity, body, attributes_part,
        _id_field(_TRACE_HEADS, _LOG_TRACE_ID, trace_id) if trace_id else b"",
        _id_field(_SPAN_HEADS, _LOG_SPAN_ID, span_id) if span_id else b"",
        observed))
    size = len(message)
    return _LOG_RECORD + (_VARINTS[size] if size < 16384 else encode_varint(size)) + message


def _id_field(heads: list[bytes], tag: bytes, ident: bytes) -> bytes:
    size = len(ident)
    return (heads[size] if size < 64 else tag + varint(size)) + ident


def _attributes(attributes: Mapping[str, Any], cache: FieldCache) -> bytes:
    """A record's attribute fields; short strings and integers from the cache."""
    cached, parts = cache.attributes, []
    for key, value in attributes.items():
        kind = value.__class__
        if kind is int or kind is str and len(value) <= _CACHED_VALUE_LEN:  # (1 and True: one is no int)
            parts.append(cached.get((key, value)) or cache.attribute(key, value))
        else:
            parts.append(delimited(_LOG_ATTRIBUTE, key_value(key, value)))
    return b"".join(parts)


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
