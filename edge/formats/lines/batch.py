"""Tailed lines seen as a batch of log records: the engine's view of one read block.

`LineBatch` is an `edge.engine.batch.LogBatch` (columns, string columns, `keep_only`, the
transform accessors, `export`) over the lines of one block, so the proxy's engine
evaluates them unchanged: one Hyperscan scan per field over the whole block. How a line
maps to fields depends on the format (docs/configuration.md "Formats"):

- raw: body = the line. The block is decoded once and split once; no per-line Python.
- logfmt: `k=v` pairs (values may be double-quoted) are log attributes.
- json: top-level fields of an object line (and those of its `attributes` object) are
  log attributes; a line that is not a JSON object has no attributes.
- regex, auto: the fields of `edge.formats.lines.patterns` (named groups of the first
  matching pattern) are log attributes.
- every format but raw: body, severity_text (and severity_number), trace_id and span_id
  come from the keys of `edge.formats.lines.records.FieldNames` (`message|msg|log|body`,
  `level|severity|lvl|severity_text`, ...; body is the whole line when none is present),
  the same keys that make the record edge-tail forwards.

Every line also has the log attribute `log.file.path` (unless the line defines it) and
the resource attributes of `--resource`. Transforms are evaluated (policies see their
effect on later stages) but never rewrite the line: kept lines are written byte-for-byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edge.engine import bits
from edge.engine.values import MISSING, OTHER, Column, PlainStringValues
from edge.formats.lines.patterns import Fields, fields_parser
from edge.formats.lines.records import (
    DEFAULT_NAMES,
    FILE_PATH_ATTRIBUTE,
    HEX16,
    HEX32,
    FieldNames,
    first,
    hex_id,
    severity_number,
)
from edge.policy.fields import LOG_BODY, LOG_SEVERITY_NUMBER, LOG_SEVERITY_TEXT, LOG_SPAN_ID, LOG_TRACE_ID
from edge.policy.model import FieldKey

_DELETED = object()
_ID_KEYS = (LOG_TRACE_ID, LOG_SPAN_ID)


def decode_records(records: list[bytes]) -> list[str]:
    """Multi-line records as text, each as `decode_lines` treats a line (its `\\r\\n` breaks made `\\n`)."""
    texts = [record.decode("utf-8", "replace") for record in records]
    return [text.replace("\r\n", "\n").removesuffix("\r") if "\r" in text else text for text in texts]


def decode_lines(block: bytes) -> list[str]:
    """The lines of a block of complete lines as text (invalid UTF-8 replaced, `\\r\\n` ends stripped).

    Replacement never creates or swallows a newline, so line i of the text is line i of the block.
    """
    text = block.decode("utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    lines.pop()
    return lines


def _typed(value: Any) -> Any:
    """A parsed JSON / logfmt value as the engine's typed value."""
    if value is None:
        return MISSING
    if value.__class__ in (str, int, float, bool):
        return value
    return OTHER


def _walk(record: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for segment in path:
        if value.__class__ is not dict:
            return None
        value = value.get(segment)
        if value is None:
            return None
    return value


class _Structured:
    """Parsed records of a logfmt or json block: attributes, body and severity per line."""

    __slots__ = ("records", "names", "bodies", "severities")

    def __init__(self, fields: Fields, lines: list[bytes], texts: list[str], names: FieldNames) -> None:
        self.records = list(map(fields, lines, texts))
        self.names = names
        self.bodies = [self._first(r, names.message, text) for r, text in zip(self.records, texts, strict=True)]
        self.severities = [self._first(r, names.level, MISSING) for r in self.records]

    @staticmethod
    def _first(record: dict[str, Any], keys: tuple[str, ...], default: Any) -> Any:
        key, value = first(record, keys)
        return _typed(value) if key else default

    def severity_numbers(self) -> list[Any]:
        return [severity_number(v) or MISSING if v.__class__ is str else MISSING for v in self.severities]

    def ids(self, key: FieldKey) -> list[Any]:
        """Trace or span ids as bytes (MISSING unless valid hex of the right length)."""
        keys, pattern = (self.names.trace_id, HEX32) if key == LOG_TRACE_ID else (self.names.span_id, HEX16)
        return [hex_id(first(r, keys)[1], pattern) or MISSING for r in self.records]

    def attribute(self, i: int, path: tuple[str, ...]) -> Any:
        record = self.records[i]
        value = _walk(record, path)
        if value is None:
            nested = record.get("attributes")
            if nested.__class__ is dict:
                value = _walk(nested, path)
        return _typed(value)


class LineBatch(PlainStringValues):
    """One block of lines as log records (a `LogBatch`)."""

    def __init__(self, lines: list[bytes], texts: list[str], fmt: str, file_path: str = "",
                 resource: Mapping[str, str] | None = None, names: FieldNames = DEFAULT_NAMES,
                 fields: Fields | None = None) -> None:
        self.lines = lines
        self.names = names
        self.fields = fields
        self.texts = texts
        self.format = fmt
        self.file_path = file_path
        self.resource = resource or {}
        self.n = len(lines)
        self.full = bits.full_mask(self.n)
        self.alive = self.full
        self.changed = False
        self._structured: _Structured | None = None
        self._overlay: dict[tuple[int, FieldKey], Any] = {}
        self._columns: dict[FieldKey, Column] = {}

    def structured(self) -> _Structured:
        if self._structured is None:
            fields = self.fields or fields_parser(self.format)
            self._structured = _Structured(fields, self.lines, self.texts, self.names)
        return self._structured

    # ── columns ──

    def _record_values(self, key: FieldKey) -> list[Any]:
        head = key[0]
        if key == LOG_BODY:
            return self.texts if self.format == "raw" else self.structured().bodies
        if key == LOG_SEVERITY_TEXT and self.format != "raw":
            return self.structured().severities
        if key == LOG_SEVERITY_NUMBER and self.format != "raw":
            return self.structured().severity_numbers()
        if key in _ID_KEYS and self.format != "raw":
            return self.structured().ids(key)
        if head == "log_attribute":
            return self._attributes(key[1])
        return [MISSING] * self.n

    def _attributes(self, path: tuple[str, ...]) -> list[Any]:
        fallback = self.file_path if path == (FILE_PATH_ATTRIBUTE,) and self.file_path else MISSING
        if self.format == "raw":
            return [fallback] * self.n
        structured = self.structured()
        values = [structured.attribute(i, path) for i in range(self.n)]
        if fallback is not MISSING:
            values = [fallback if v is MISSING else v for v in values]
        return values

    def column(self, key: FieldKey) -> Column:
        column = self._columns.get(key)
        if column is None:
            column = self._columns[key] = self._build_column(key)
        return column

    def _build_column(self, key: FieldKey) -> Column:
        if key[0] == "resource_attribute":
            value = self.resource.get(".".join(key[1])) if len(key[1]) == 1 else None
            return Column([MISSING if value is None else value], [self.full])
        values = self._record_values(key)
        if key == LOG_BODY:  # an empty-string body counts as absent, as in the OTLP views
            values = [MISSING if v == "" else v for v in values]
        return Column(values)

    def strings(self, key: FieldKey) -> Column:
        if key == LOG_BODY and self.format == "raw":
            return Column(self.texts)
        typed = self.column(key)
        if key in _ID_KEYS:
            return Column([v.hex() if v.__class__ is bytes else "" for v in typed.values])
        return Column([v if v.__class__ is str else "" for v in typed.values], typed.owners)

    # ── outcome ──

    def keep_only(self, alive: int) -> None:
        """Remember which lines survive; the caller writes those lines' original bytes."""
        self.alive = alive
        self.changed = alive != self.full

    def export(self, i: int) -> dict[str, Any]:
        """Record i as an OTLP/JSON-style record with its resource (for extensions)."""
        return {
            "resource": {"attributes": [{"key": k, "value": {"stringValue": v}} for k, v in self.resource.items()]},
            "scope": {},
            "record": {"body": {"stringValue": self.texts[i]},
                       "attributes": [{"key": FILE_PATH_ATTRIBUTE, "value": {"stringValue": self.file_path}}]},
        }

    # ── transform accessors: evaluated against an overlay, never written back ──

    def get(self, i: int, key: FieldKey) -> Any:
        value = self._overlay.get((i, key))
        if value is _DELETED:
            return None
        if value is not None:
            return value
        column = self.column(key)
        found = column.values[0] if column.owners is not None else column.values[i]
        return None if found is MISSING else found

    def set(self, i: int, key: FieldKey, value: Any) -> bool:
        self._overlay[(i, key)] = value
        return True

    def delete(self, i: int, key: FieldKey) -> bool:
        if self.get(i, key) is None:
            return False
        self._overlay[(i, key)] = _DELETED
        return True
