"""Forwarded lines as OTLP log records: protobuf (`edge.tail.otlp_protobuf`) or OTLP/JSON, with what each
line's format parsed.

raw: body = the line (a string, bytes when it is not valid UTF-8). Other formats: the
line's fields (`edge.formats.lines.patterns`) become the record's time, severity, body, trace and span ids and
attributes (`edge.formats.lines.records`); nested JSON objects and arrays become
kvlist and array values. Every record also carries `log.file.path` and the observed time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from edge import __version__
from edge.formats.lines.patterns import Fields, fields_parser, parse_json
from edge.formats.lines.records import DEFAULT_NAMES, FILE_PATH_ATTRIBUTE, FieldNames, Record, RecordBuilder
from edge.tail.otlp_protobuf import SCOPE_NAME, Groups, ProtobufEncoder

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
    build = RecordBuilder(names)
    if fmt == "json":  # its fields need no text: lines are decoded only when a body needs it
        def from_json(line: bytes) -> Record:
            doc = parse_json(line)
            return build(doc, line) if doc else _raw(line)
        return lambda lines: list(map(from_json, lines))
    fields = fields or fields_parser(fmt)
    if fmt == "regex":  # nor do the patterns' (they match the bytes)
        def from_groups(line: bytes) -> Record:
            doc = fields(line, "")
            return build(doc, line) if doc else _raw(line)
        return lambda lines: list(map(from_groups, lines))

    def one(line: bytes) -> Record:
        text = line.decode("utf-8", "replace")
        doc = fields(line, text)
        return build(doc, text) if doc else _raw(line)
    return lambda lines: list(map(one, lines))


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


def encoder(fmt: str) -> tuple[Encoder, str]:
    """The encoder of `--forward-format` and its content type (a protobuf encoder keeps a cache: one per sink)."""
    if fmt == "json":
        return encode_json, "application/json"
    return ProtobufEncoder(), "application/x-protobuf"
