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
_CANONICAL_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,](\d{1,9}))?(Z|z|[+-]\d{2}:\d{2})?",
                             re.ASCII)
_ID_BYTES = {id(HEX32): 16, id(HEX16): 8}


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
    match = _CANONICAL_TIME.fullmatch(value)
    if match:
        ns = _canonical_ns(value, match)
        if ns:
            return ns
    return text_time_ns(value)


_MINUTES: dict[str, int] = {}  # "YYYY-MM-DD?HH:MM" → its Unix ns (0: not a valid time), bounded


def _canonical_ns(text: str, match: re.Match[str]) -> int:
    """`YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM]` (most log lines) without datetime: the minute is
    worked out once, seconds, fraction and offset are added. 0 leaves it to `text_time_ns`."""
    prefix = text[:16]
    minute = _MINUTES.get(prefix)
    if minute is None:
        if len(_MINUTES) >= 4096:
            _MINUTES.clear()
        minute = _MINUTES[prefix] = text_time_ns(f"{text[:10]}T{text[11:16]}:00+00:00")
    seconds = int(text[17:19])
    if minute <= 0 or seconds > 59:
        return 0
    fraction, zone = match.group(1, 2)
    offset = 0
    if zone and zone not in "Zz":
        hours, minutes = int(zone[1:3]), int(zone[4:6])
        if hours > 23 or minutes > 59:
            return 0
        offset = (hours * 3600 + minutes * 60) * (-1 if zone[0] == "-" else 1)
    whole = minute + (seconds - offset) * 1_000_000_000
    if whole < 0:
        return 0  # before 1970 datetime's truncation toward zero applies
    return whole + (int(fraction[:6].ljust(6, "0")) * 1000 if fraction else 0)


def text_time_ns(value: str) -> int:
    """`time_ns` of a string, through datetime: every layout it accepts (the reference for the fast path)."""
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
    size = _ID_BYTES[id(pattern)]
    if len(value) == 2 * size and "-" not in value:  # the usual plain hex: no regex needed
        try:
            ident = bytes.fromhex(value)
        except ValueError:
            return b""
        return ident if len(ident) == size and ident.strip(b"\0") else b""  # fromhex skips spaces: 15 bytes
    text = value.replace("-", "")
    if not pattern.fullmatch(text) or not text.strip("0"):
        return b""
    return bytes.fromhex(text)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Which keys of `FieldNames` a doc with a given key set has, in order of preference."""

    message: tuple[str, ...]
    level: tuple[str, ...]
    time: tuple[str, ...]
    trace_id: tuple[str, ...]
    span_id: tuple[str, ...]
    nested: bool  # it has an `attributes` key


class RecordBuilder:
    """Records from parsed fields: the named fields taken out, the rest attributes.

    Lines of one log mostly share their keys, so the keys present of each `FieldNames` list
    are worked out once per key set (at most MAX_LAYOUTS remembered) rather than looked up
    in every doc: a batch pays for its fields, not for the names it does not use.
    """

    MAX_LAYOUTS = 1024

    def __init__(self, names: FieldNames = DEFAULT_NAMES) -> None:
        self.names = names
        self.layouts: dict[tuple[str, ...], _Layout] = {}
        self.severities: dict[str, int] = {}  # level text → its number, as written (bounded like the layouts)

    def layout(self, doc: Mapping[str, Any]) -> _Layout:
        keys = tuple(doc)
        found = self.layouts.get(keys)
        if found is None:
            if len(self.layouts) >= self.MAX_LAYOUTS:
                self.layouts.clear()
            names, present = self.names, set(keys)
            found = self.layouts[keys] = _Layout(
                *(tuple(k for k in wanted if k in present)
                  for wanted in (names.message, names.level, names.time, names.trace_id, names.span_id)),
                ATTRIBUTES_KEY in present)
        return found

    def __call__(self, doc: Mapping[str, Any], line: bytes | str) -> Record:
        """The record of one line's fields; `line` (its text, or bytes decoded when needed) is the
        body when no message field is present. (The per-field lookups are written out: this runs
        once per forwarded line.)"""
        layout = self.layouts.get(tuple(doc)) or self.layout(doc)
        attributes = dict(doc)
        if layout.nested:
            nested = attributes.pop(ATTRIBUTES_KEY)
            if nested.__class__ is dict:
                attributes = {**nested, **attributes}
            elif nested is not None:
                attributes[ATTRIBUTES_KEY] = nested
        record = Record(body=None, attributes=attributes)
        for key in layout.message:
            if doc[key] is not None:
                record.body = attributes.pop(key)
                break
        else:
            record.body = line.decode("utf-8", "replace") if line.__class__ is bytes else line
            attributes.pop("", None)  # as first() answers "" when no key is present
        for key in layout.level:
            if (level := doc[key]) is not None:
                attributes.pop(key, None)  # (None: one key named for two fields is taken once)
                self._severity(record, level)
                break
        for key in layout.time:
            if (when := doc[key]) is not None:
                if (ns := time_ns(when)) > 0:  # a time before 1970 has no OTLP form: it stays an attribute
                    attributes.pop(key, None)
                    record.time_ns = ns
                break
        for key in layout.trace_id:
            if (value := doc[key]) is not None:
                if ident := hex_id(value, HEX32):  # an invalid id stays an attribute as it was written
                    attributes.pop(key, None)
                    record.trace_id = ident
                break
        for key in layout.span_id:
            if (value := doc[key]) is not None:
                if ident := hex_id(value, HEX16):
                    attributes.pop(key, None)
                    record.span_id = ident
                break
        return record

    def _severity(self, record: Record, level: Any) -> None:
        if level.__class__ is str:
            record.severity_text = level
            number = self.severities.get(level)
            if number is None:
                if len(self.severities) >= self.MAX_LAYOUTS:
                    self.severities.clear()
                number = self.severities[level] = severity_number(level)  # "INFO", "Error ": one lookup each
            record.severity_number = number
        else:
            record.severity_text = str(level)
            record.severity_number = level if level.__class__ is int and 0 < level <= 24 else 0
