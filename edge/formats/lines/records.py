"""What a parsed log line means as a log record: time, severity, body, trace context, attributes.

edge-tail forwards json and logfmt lines as OTLP log records carrying what was parsed,
so the policies of the proxy that receives them (severity, attributes, trace ids) apply
as they would to records an SDK sent. The same key conventions decide what edge-tail's
own policies see (`edge.formats.lines.batch`). Field names follow common logging
libraries; each may be replaced by one name (`--time-key`, `--level-key`, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TIME_KEYS = ("timestamp", "time", "ts", "@timestamp")
LEVEL_KEYS = ("level", "severity", "lvl", "severity_text")
MESSAGE_KEYS = ("message", "msg", "log", "body")
TRACE_ID_KEYS = ("trace_id", "traceId", "trace.id")
SPAN_ID_KEYS = ("span_id", "spanId", "span.id")
FILE_PATH_ATTRIBUTE = "log.file.path"
K8S_ENVIRONMENT = {"POD_NAME": "k8s.pod.name", "NAMESPACE": "k8s.namespace.name", "SERVICE_NAME": "service.name"}
ATTRIBUTES_KEY = "attributes"  # an object of extra attributes, merged under the top-level fields

# OpenTelemetry severity numbers (the first of each range) for the level names in common use.
SEVERITY_NUMBERS = {
    "trace": 1, "debug": 5, "dbg": 5, "info": 9, "information": 9, "informational": 9, "notice": 10,
    "warn": 13, "warning": 13, "error": 17, "err": 17, "critical": 21, "crit": 21, "fatal": 21,
    "panic": 21, "alert": 22, "emerg": 23, "emergency": 23,
}
HEX32 = re.compile(r"[0-9a-fA-F]{32}")
HEX16 = re.compile(r"[0-9a-fA-F]{16}")
_SPACE_DATE = re.compile(r"(\d{4})[/-](\d{2})[/-](\d{2})[ T](.*)")


def resource_attributes(pairs: tuple[tuple[str, str], ...], env: Mapping[str, str]) -> dict[str, str]:
    """The resource of every line: the Kubernetes downward-API variables, then `--resource` pairs (which win)."""
    attributes = {key: env[name] for name, key in K8S_ENVIRONMENT.items() if env.get(name)}
    attributes.update(pairs)
    return attributes


@dataclass(frozen=True, slots=True)
class FieldNames:
    """The keys that hold a record's time, level, message, trace id and span id (first present wins)."""

    time: tuple[str, ...] = TIME_KEYS
    level: tuple[str, ...] = LEVEL_KEYS
    message: tuple[str, ...] = MESSAGE_KEYS
    trace_id: tuple[str, ...] = TRACE_ID_KEYS
    span_id: tuple[str, ...] = SPAN_ID_KEYS

    @classmethod
    def overridden(cls, *, time: str = "", level: str = "", message: str = "", trace_id: str = "",
                   span_id: str = "") -> FieldNames:
        """The conventions, with each non-empty argument as the only key for its field."""
        default = cls()
        return cls(time=(time,) if time else default.time, level=(level,) if level else default.level,
                   message=(message,) if message else default.message,
                   trace_id=(trace_id,) if trace_id else default.trace_id,
                   span_id=(span_id,) if span_id else default.span_id)


DEFAULT_NAMES = FieldNames()


@dataclass(slots=True)
class Record:
    """One line as an OTLP log record's parts (0 / "" / b"" = absent)."""

    body: Any
    time_ns: int = 0
    severity_text: str = ""
    severity_number: int = 0
    trace_id: bytes = b""
    span_id: bytes = b""
    attributes: dict[str, Any] = field(default_factory=dict)


def first(doc: Mapping[str, Any], keys: tuple[str, ...]) -> tuple[str, Any]:
    """The first of `keys` present (not null) in `doc`, and its value; ("", None) when none is."""
    for key in keys:
        value = doc.get(key)
        if value is not None:
            return key, value
    return "", None


def severity_number(text: str) -> int:
    """The OpenTelemetry severity number of a level name (case-insensitive); 0 when unknown."""
    return SEVERITY_NUMBERS.get(text.strip().lower(), 0)


def time_ns(value: Any) -> int:
    """A timestamp as Unix nanoseconds: epoch numbers in s, ms, µs or ns, or an ISO-8601-like string; 0 if not."""
    if value.__class__ in (int, float):
        return _epoch_ns(value)
    if value.__class__ is not str:
        return 0
    text = value.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return _epoch_ns(float(text) if "." in text else int(text))
    match = _SPACE_DATE.fullmatch(text)
    if match:  # 2023/12/01 10:30:45 and 2023-12-01 10:30:45.123 as well as ISO 8601
        text = f"{match[1]}-{match[2]}-{match[3]}T{match[4]}".replace(",", ".")
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp()) * 1_000_000_000 + parsed.microsecond * 1000


def _epoch_ns(number: float) -> int:
    if number <= 0:
        return 0
    for scale in (1_000_000_000, 1_000_000, 1_000, 1):  # seconds until 2286, then ms, µs, ns
        if number * scale < 10**19:
            return int(number * scale)
    return 0


def hex_id(value: Any, pattern: re.Pattern[str]) -> bytes:
    """A trace or span id given as hex (dashes allowed) as its bytes; b"" when not valid or all zero."""
    if value.__class__ is not str:
        return b""
    text = value.replace("-", "")
    if not pattern.fullmatch(text) or not text.strip("0"):
        return b""
    return bytes.fromhex(text)


def from_fields(doc: Mapping[str, Any], line: Any, names: FieldNames = DEFAULT_NAMES) -> Record:
    """A record from a line's parsed fields: the named fields taken out, the rest attributes."""
    attributes = dict(doc)
    nested = attributes.pop(ATTRIBUTES_KEY, None)
    if nested.__class__ is dict:
        attributes = {**nested, **attributes}
    elif nested is not None:
        attributes[ATTRIBUTES_KEY] = nested
    message_key, body = first(doc, names.message)
    record = Record(body=line if message_key == "" else body, attributes=attributes)
    attributes.pop(message_key, None)
    level_key, level = first(doc, names.level)
    if level_key:
        attributes.pop(level_key)
        record.severity_text = level if level.__class__ is str else str(level)
        record.severity_number = severity_number(record.severity_text) if level.__class__ is str else (
            level if level.__class__ is int and 0 < level <= 24 else 0)
    time_key, when = first(doc, names.time)
    if time_key and (ns := time_ns(when)):
        attributes.pop(time_key)
        record.time_ns = ns
    record.trace_id = _take_id(doc, attributes, names.trace_id, HEX32)
    record.span_id = _take_id(doc, attributes, names.span_id, HEX16)
    return record


def _take_id(doc: Mapping[str, Any], attributes: dict[str, Any], keys: tuple[str, ...],
             pattern: re.Pattern[str]) -> bytes:
    """A valid id is moved out of the attributes; an invalid one stays there as it was written."""
    key, value = first(doc, keys)
    ident = hex_id(value, pattern) if key else b""
    if ident:
        attributes.pop(key)
    return ident
