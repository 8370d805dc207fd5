"""Forwarded lines as OTLP log records: protobuf or OTLP/JSON, with what each line's format parsed.

raw: body = the line (a string, bytes when it is not valid UTF-8). Other formats: the
line's fields (`edge.formats.lines.patterns`) become the record's time, severity, body, trace and span ids and
attributes (`edge.formats.lines.records`); nested JSON objects and arrays become
kvlist and array values. Every record also carries `log.file.path` and the observed time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from edge import __version__
from edge.formats.lines.patterns import Fields, fields_parser
from edge.formats.lines.records import DEFAULT_NAMES, FILE_PATH_ATTRIBUTE, FieldNames, Record, from_fields

SCOPE_NAME = "edge-tail"
Groups = Iterable[tuple[str, list[Record]]]  # (source file, its records)
Parser = Callable[[list[bytes]], list[Record]]  # a block's lines (or multi-line records) → records
Encoder = Callable[[Groups, Mapping[str, str], int], bytes]


def _raw(line: bytes) -> Record:
    try:
        return Record(body=line.decode())
    except UnicodeDecodeError:
        return Record(body=line)


def record_parser(fmt: str, names: FieldNames = DEFAULT_NAMES, fields: Fields | None = None) -> Parser:
    """How the lines of `fmt` become records; a line without fields is a raw record (never lost)."""
    if fmt == "raw":
        return lambda lines: list(map(_raw, lines))
    fields = fields or fields_parser(fmt)

    def one(line: bytes) -> Record:
        text = line.decode("utf-8", "replace")
        doc = fields(line, text)
        return from_fields(doc, text, names) if doc else _raw(line)
    return lambda lines: list(map(one, lines))


# ── protobuf ──


def set_any(target: AnyValue, value: Any) -> None:
    """Fill an AnyValue from a parsed JSON value (objects → kvlist, arrays → array)."""
    kind = value.__class__
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if -(2**63) <= value < 2**63:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif kind is float:
        target.double_value = value
    elif kind is bytes:
        target.bytes_value = value
    elif kind is dict:
        kvlist = target.kvlist_value
        kvlist.SetInParent()
        for key, item in value.items():
            kv = kvlist.values.add()
            kv.key = key
            set_any(kv.value, item)
    elif kind is list:
        array = target.array_value
        array.SetInParent()
        for item in value:
            set_any(array.values.add(), item)
    # None: an empty AnyValue


def encode_protobuf(groups: Groups, resource: Mapping[str, str], observed_ns: int) -> bytes:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in resource.items():
        kv = resource_logs.resource.attributes.add()
        kv.key = key
        kv.value.string_value = value
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name = SCOPE_NAME
    scope_logs.scope.version = __version__
    records = scope_logs.log_records
    for source, parsed_records in groups:
        for parsed in parsed_records:
            record = records.add()
            record.observed_time_unix_nano = observed_ns
            record.time_unix_nano = parsed.time_ns
            if parsed.severity_text:
                record.severity_text = parsed.severity_text
            record.severity_number = parsed.severity_number  # type: ignore[assignment]
            record.trace_id = parsed.trace_id
            record.span_id = parsed.span_id
            set_any(record.body, parsed.body)
            for key, value in parsed.attributes.items():
                kv = record.attributes.add()
                kv.key = key
                set_any(kv.value, value)
            if FILE_PATH_ATTRIBUTE not in parsed.attributes:
                kv = record.attributes.add()
                kv.key = FILE_PATH_ATTRIBUTE
                kv.value.string_value = source
    return request.SerializeToString()


# ── OTLP/JSON ──


def json_any(value: Any) -> dict[str, Any]:
    """A parsed value as an OTLP/JSON AnyValue (64-bit integers as strings, bytes as base64 by orjson's caller)."""
    kind = value.__class__
    if kind is str:
        return {"stringValue": value}
    if kind is bool:
        return {"boolValue": value}
    if kind is int:
        return {"intValue": str(value)}
    if kind is float:
        return {"doubleValue": value}
    if kind is bytes:
        return {"stringValue": value.decode("utf-8", "replace")}
    if kind is dict:
        return {"kvlistValue": {"values": [{"key": k, "value": json_any(v)} for k, v in value.items()]}}
    if kind is list:
        return {"arrayValue": {"values": [json_any(v) for v in value]}}
    return {}


def _json_record(parsed: Record, source: str, observed: str) -> dict[str, Any]:
    attributes = [{"key": k, "value": json_any(v)} for k, v in parsed.attributes.items()]
    if FILE_PATH_ATTRIBUTE not in parsed.attributes:
        attributes.append({"key": FILE_PATH_ATTRIBUTE, "value": {"stringValue": source}})
    record: dict[str, Any] = {"observedTimeUnixNano": observed, "body": json_any(parsed.body),
                              "attributes": attributes}
    if parsed.time_ns:
        record["timeUnixNano"] = str(parsed.time_ns)
    if parsed.severity_text:
        record["severityText"] = parsed.severity_text
    if parsed.severity_number:
        record["severityNumber"] = parsed.severity_number
    if parsed.trace_id:
        record["traceId"] = parsed.trace_id.hex()
    if parsed.span_id:
        record["spanId"] = parsed.span_id.hex()
    return record


def encode_json(groups: Groups, resource: Mapping[str, str], observed_ns: int) -> bytes:
    observed = str(observed_ns)
    records = [_json_record(record, source, observed) for source, parsed in groups for record in parsed]
    doc = {"resourceLogs": [{
        "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in resource.items()]},
        "scopeLogs": [{"scope": {"name": SCOPE_NAME, "version": __version__}, "logRecords": records}],
    }]}
    return orjson.dumps(doc)


ENCODERS: dict[str, tuple[Encoder, str]] = {"protobuf": (encode_protobuf, "application/x-protobuf"),
                                            "json": (encode_json, "application/json")}
