"""Datadog JSON payloads seen as batches of records: logs (`/api/v2/logs`) and series (`/api/v2/series`).

The views hand the evaluator the same typed values and columns as the OTLP views
(`edge.formats.otlp.json_batch`), mapped as docs/configuration.md "Datadog field mapping" says:

Logs (a JSON array of log objects):
- body = `message`, else `msg`, else `log`; when `message` is itself a JSON object string,
  its `data.jsonPayload.message|body|log` (else the whole string). An empty body is absent.
- severity_text = `status`, else `level`.
- `log_attribute`, `resource_attribute` and `scope_attribute` read one flat namespace: a
  top-level key named by the dotted path (`"http.method"`), else the nested walk
  (`{"http": {"method": ...}}`), else the same two lookups in the JSON-object message.
  `service`, `hostname`, `ddsource` and `ddtags` (the whole string) are top-level keys.
- trace/span ids, event name and schema URLs have no Datadog counterpart: always absent.

Series (`{"series": [...]}`, v2 series objects):
- metric_field NAME = `metric`, UNIT = `unit`; the other metric fields are absent.
- metric_type from `type`: 1 count and 2 rate are SUM, 3 gauge is GAUGE, 0 has no type;
  aggregation_temporality is DELTA for counts and rates (Datadog sends per-interval values).
- `datapoint_attribute` / `resource_attribute` K: the first `tags` entry `K:value` (a bare
  tag `K` is the empty string), else the first `resources` entry of type K (its name),
  else `source_type_name` for K = `source_type_name`.

Records are the decoded dicts; the codec (`edge.formats.datadog.body`) writes kept records
that nothing touched back as their original bytes, so only `touched` records are encoded.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

import msgspec

from edge.engine import bits
from edge.engine.values import MISSING, OTHER, Column, PlainStringValues
from edge.formats.errors import BatchShapeError
from edge.formats.json_values import json_copy
from edge.policy.fields import (
    AGGREGATION_TEMPORALITY,
    LOG_BODY,
    LOG_SEVERITY_TEXT,
    METRIC_NAME,
    METRIC_TYPE,
    METRIC_UNIT,
)
from edge.policy.model import FieldKey

BODY_KEYS = ("message", "msg", "log")
PAYLOAD_PATH = ("data", "jsonPayload")
PAYLOAD_BODY_KEYS = ("message", "body", "log")

# Where a field lives in one record: (container, key, inside the decoded JSON-object message?)
Slot = tuple[dict, str, bool]

log = logging.getLogger(__name__)

# JSON-object messages nesting deeper than this are read as plain text: the JSON decoder recurses
# per level (thousands of levels raised RecursionError and failed the whole batch), and real
# structured messages nest a handful of levels.
MAX_MESSAGE_DEPTH = 64
_JSON_STRUCTURE = re.compile(r'[\[\]{}"\\]')  # the characters that open, close or escape structure

_SCALARS = frozenset({str, int, float, bool})
_decode_json = msgspec.json.Decoder().decode
encode_json = msgspec.json.encode


# ── JSON values as the evaluator sees them ─────────────────────────────────


def typed_values(values: list[Any]) -> list[Any]:
    """Decoded JSON values -> typed values: scalars as they are, null absent, arrays/objects OTHER."""
    return [v if v.__class__ in _SCALARS else MISSING if v is None else OTHER for v in values]


def typed_scalars(values: list[Any]) -> list[Any]:
    """Like proto3 scalar fields: empty means absent, strings as they are, anything else OTHER."""
    return [(v if v.__class__ is str else OTHER) if v else MISSING for v in values]


def string_views(values: list[Any]) -> list[str]:
    """What string conditions see: strings as they are, "" for everything else."""
    return [v if v.__class__ is str else "" for v in values]


def nests_within(text: str, limit: int) -> bool:
    """Whether JSON text nests arrays and objects at most `limit` deep (brackets inside strings
    do not count). Free when the text has no more than `limit` opening brackets at all; else one
    pass over the structural characters, linear whatever the input (no regex backtracking)."""
    if text.count("{") + text.count("[") <= limit:
        return True
    depth = 0
    in_string = False
    skip = -1  # the position of a character escaped by a backslash
    for match in _JSON_STRUCTURE.finditer(text):
        at = match.start()
        if at == skip:
            continue
        char = text[at]
        if in_string:
            if char == "\\":
                skip = at + 1
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{" or char == "[":
            depth += 1
            if depth > limit:
                return False
        elif char == "}" or char == "]":
            depth -= 1
    return True


def _present(value: Any) -> bool:
    return value is not None and value != ""


@lru_cache(maxsize=1024)
def attribute_names(path: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """(dotted key, nested segments) for an attribute path: ("http", "method") and ("http.method",) alike."""
    dotted = ".".join(path)
    return dotted, tuple(dotted.split("."))


def walk(obj: Any, segments: tuple[str, ...]) -> Any:
    """The value at `segments` below nested objects, or None."""
    for segment in segments:
        if obj.__class__ is not dict:
            return None
        obj = obj.get(segment)
    return obj


def walk_column(objects: list[dict], segments: tuple[str, ...]) -> list[Any]:
    """`walk` for every object at once: one comprehension per segment, no call per record."""
    values = [o.get(segments[0]) for o in objects]
    for segment in segments[1:]:
        values = [v.get(segment) if v.__class__ is dict else None for v in values]
    return values


def find_slot(obj: dict, dotted: str, segments: tuple[str, ...]) -> tuple[dict, str] | None:
    """(container, key) holding the attribute in `obj`: the dotted key, else the nested walk."""
    if obj.get(dotted) is not None:
        return obj, dotted
    if len(segments) > 1:
        parent = walk(obj, segments[:-1])
        if parent.__class__ is dict and parent.get(segments[-1]) is not None:
            return parent, segments[-1]
    return None


# ── the shared batch shape ────────────────────────────────────────────────


class DatadogBatch:
    """Records (decoded JSON objects) and which of them survive; output is by original spans."""

    def __init__(self, records: list[dict]) -> None:
        self.records = records
        self.n = len(records)
        self.full = bits.full_mask(self.n)
        self.alive = self.full
        self.changed = False
        self.touched: set[int] = set()  # records a transform changed: re-encoded on output

    def keep_only(self, alive: int) -> None:
        self.alive = alive
        if alive != self.full:
            self.changed = True

    def kept_parts(self, spans: list[Any]) -> list[Any]:
        """The kept records as JSON: original spans (`spans[i]` is record i's bytes), touched ones encoded."""
        if len(spans) != self.n:
            raise ValueError("record spans do not line up with the decoded records")
        kept = bits.indices(self.alive)
        touched = self.touched
        if not touched:
            return [spans[i] for i in kept]
        records = self.records
        return [encode_json(records[i]) if i in touched else spans[i] for i in kept]

    def export(self, i: int) -> dict[str, Any]:
        """A standalone copy of record i for extensions, shaped like the OTLP views' (Datadog has no
        resource or scope: everything is in the record)."""
        return {"resource": {}, "scope": {}, "record": json_copy(self.records[i])}


# ── logs ──────────────────────────────────────────────────────────────────


class DatadogLogs(PlainStringValues, DatadogBatch):
    """A decoded `/api/v2/logs` array as a mutable batch of log records."""

    def __init__(self, doc: Any) -> None:
        if doc.__class__ is not list:
            raise BatchShapeError("a Datadog logs payload must be a JSON array")
        if not {*map(type, doc)} <= {dict}:
            raise BatchShapeError("Datadog log entries must be JSON objects")
        super().__init__(doc)
        self._payloads: dict[int, dict] | None = None
        self._dirty_payloads: set[int] = set()

    # ── JSON-object messages ──

    def payloads(self) -> dict[int, dict]:
        """Record index -> decoded `message` for records whose message is a JSON object string."""
        if self._payloads is None:
            candidates = [i for i, r in enumerate(self.records)
                          if (m := r.get("message")).__class__ is str and m[:1] == "{"]
            self._payloads = {}
            too_deep = [i for i in candidates if not self._reparse_payload(i)]
            if too_deep:
                log.debug("%d Datadog log message(s) nest JSON deeper than %d levels: read as plain text "
                          "(first: record %d)", len(too_deep), MAX_MESSAGE_DEPTH, too_deep[0])
        return self._payloads

    def _reparse_payload(self, i: int) -> bool:
        """(Re)decode record i's message into `_payloads` when it is a JSON object string.

        False when the message nests deeper than MAX_MESSAGE_DEPTH: it stays a plain string, like
        a message that merely starts with "{"."""
        self._payloads.pop(i, None)
        message = self.records[i].get("message")
        if message.__class__ is str and message[:1] == "{":
            if not nests_within(message, MAX_MESSAGE_DEPTH):
                return False
            try:
                obj = _decode_json(message)
            except msgspec.DecodeError:
                return True  # a message that merely starts with "{" is a plain string
            if obj.__class__ is dict:
                self._payloads[i] = obj
        return True

    def _store_payload(self, i: int) -> None:
        """Write a changed JSON-object message back into its record's `message` string."""
        self._dirty_payloads.discard(i)
        self.records[i]["message"] = encode_json(self._payloads[i]).decode()

    # ── columns ──

    def _body_slot(self, i: int) -> Slot | None:
        record = self.records[i]
        message = record.get("message")
        if message.__class__ is str and message and message[0] != "{":
            return record, "message", False  # the common case, as in _bodies()
        payload = self.payloads().get(i)
        if payload is not None:
            inner = walk(payload, PAYLOAD_PATH)
            if inner.__class__ is dict:
                for key in PAYLOAD_BODY_KEYS:
                    if _present(inner.get(key)):
                        return inner, key, True
        for key in BODY_KEYS:
            if _present(record.get(key)):
                return record, key, False
        return None

    def _bodies(self) -> list[Any]:
        """Raw body values; the common plain-string `message` costs one comprehension."""
        out = [m if (m := r.get("message")).__class__ is str and m and m[0] != "{" else None
               for r in self.records]
        if None in out:
            for i in [i for i, v in enumerate(out) if v is None]:
                slot = self._body_slot(i)
                out[i] = slot[0][slot[1]] if slot is not None else None
        return out

    def _severities(self) -> list[Any]:
        return [s if (s := r.get("status")) else r.get("level") for r in self.records]

    def _attributes(self, path: tuple[str, ...]) -> list[Any]:
        """Raw attribute values (None when absent): dotted key, nested walk, then the JSON message."""
        dotted, segments = attribute_names(path)
        records = self.records
        out = [r.get(dotted) for r in records]
        if None not in out:
            return out
        if len(segments) > 1:
            nested = walk_column(records, segments)
            if out.count(None) < self.n:  # some records hold the dotted key itself: it wins
                nested = [d if d is not None else w for d, w in zip(out, nested, strict=True)]
            out = nested
        if None in out:
            for i, payload in self.payloads().items():
                if out[i] is None:
                    slot = find_slot(payload, dotted, segments)
                    out[i] = slot[0][slot[1]] if slot is not None else None
        return out

    def _raw(self, key: FieldKey) -> list[Any] | None:
        if key == LOG_BODY:
            return self._bodies()
        if key == LOG_SEVERITY_TEXT:
            return self._severities()
        if key[0] == "log_field":
            return None
        return self._attributes(key[1])

    def column(self, key: FieldKey) -> Column:
        raw = self._raw(key)
        if raw is None:
            return Column([MISSING] * self.n)
        if key == LOG_SEVERITY_TEXT:
            return Column(typed_scalars(raw))
        return Column(typed_values(raw))  # bodies are never "": _bodies() skips empty ones

    def strings(self, key: FieldKey) -> Column:
        raw = self._raw(key)
        return Column(string_views(raw) if raw is not None else [""] * self.n)

    # ── mutations (transforms) ──

    def _locate(self, i: int, key: FieldKey) -> Slot | None:
        if key == LOG_BODY:
            return self._body_slot(i)
        record = self.records[i]
        if key == LOG_SEVERITY_TEXT:
            return next(((record, k, False) for k in ("status", "level") if record.get(k)), None)
        if key[0] == "log_field":
            return None
        dotted, segments = attribute_names(key[1])
        found = find_slot(record, dotted, segments)
        if found is not None:
            return *found, False
        payload = self.payloads().get(i)
        found = find_slot(payload, dotted, segments) if payload is not None else None
        return (*found, True) if found is not None else None

    def _new_slot(self, i: int, key: FieldKey) -> Slot | None:
        """Where an absent field is created: inside existing nested objects (of the record, else of its
        JSON-object message), else as a top-level key named by the dotted path."""
        record = self.records[i]
        if key == LOG_BODY:
            return record, "message", False
        if key == LOG_SEVERITY_TEXT:
            return record, "level" if "status" not in record and "level" in record else "status", False
        if key[0] == "log_field":
            return None
        dotted, segments = attribute_names(key[1])
        if len(segments) > 1:
            parent = walk(record, segments[:-1])
            if parent.__class__ is dict:
                return parent, segments[-1], False
            parent = walk(self.payloads().get(i), segments[:-1])
            if parent.__class__ is dict:
                return parent, segments[-1], True
        return record, dotted, False

    def _slot(self, i: int, key: FieldKey, create: bool = False) -> Slot | None:
        """Where the field is (or, with `create`, goes), with the message string made current."""
        slot = self._locate(i, key) or (self._new_slot(i, key) if create else None)
        if slot is not None and i in self._dirty_payloads and self._is_message(i, slot):
            self._store_payload(i)  # the whole message string is read or written: fold changes in first
        return slot

    def _is_message(self, i: int, slot: Slot) -> bool:
        return slot[1] == "message" and slot[0] is self.records[i]

    def _mark(self, i: int, slot: Slot) -> None:
        self.changed = True
        self.touched.add(i)
        if slot[2]:
            self._dirty_payloads.add(i)
        elif self._payloads is not None and self._is_message(i, slot):
            self._reparse_payload(i)  # the message string itself changed

    def get(self, i: int, key: FieldKey) -> Any:
        """The field's JSON value, or None when absent."""
        slot = self._slot(i, key)
        return slot[0][slot[1]] if slot is not None else None

    def set(self, i: int, key: FieldKey, value: Any) -> bool:
        slot = self._slot(i, key, create=True)
        if slot is None:
            return False
        slot[0][slot[1]] = value
        self._mark(i, slot)
        return True

    def delete(self, i: int, key: FieldKey) -> bool:
        slot = self._slot(i, key)
        if slot is None:
            return False
        del slot[0][slot[1]]
        self._mark(i, slot)
        return True

    # ── output ──

    def kept_parts(self, spans: list[Any]) -> list[Any]:
        for i in list(self._dirty_payloads):  # a changed JSON-object message goes back into its string
            self._store_payload(i)
        return super().kept_parts(spans)


# ── series ────────────────────────────────────────────────────────────────

GAUGE, SUM = 1, 2  # MetricType numbers
DELTA = 1  # AggregationTemporality number
# Datadog v2 series `type` (0 unspecified, 1 count, 2 rate, 3 gauge) -> (metric type, aggregation temporality)
SERIES_TYPES = {1: (SUM, DELTA), 2: (SUM, DELTA), 3: (GAUGE, 0)}
UNTYPED = (0, 0)  # matches no metric_type or aggregation_temporality condition
_METRIC_FIELDS = {METRIC_NAME: "metric", METRIC_UNIT: "unit"}
_ATTRIBUTE_HEADS = frozenset({"datapoint_attribute", "resource_attribute"})


def series_attributes(series: dict) -> dict[str, str]:
    """One series' attribute namespace: tags first, then resources by type, then source_type_name."""
    attrs: dict[str, str] = {}
    tags = series.get("tags")
    if tags.__class__ is list:
        for tag in tags:
            if tag.__class__ is str:
                name, _, value = tag.partition(":")
                attrs.setdefault(name, value)
    resources = series.get("resources")
    if resources.__class__ is list:
        for resource in resources:
            if resource.__class__ is dict:
                kind, name = resource.get("type"), resource.get("name")
                if kind.__class__ is str and name.__class__ is str:
                    attrs.setdefault(kind, name)
    source = series.get("source_type_name")
    if source.__class__ is str:
        attrs.setdefault("source_type_name", source)
    return attrs


class DatadogSeries(DatadogBatch):
    """A decoded `/api/v2/series` payload as a batch of metrics (filter only: no transforms)."""

    def __init__(self, doc: Any) -> None:
        series = doc.get("series") if doc.__class__ is dict else None
        if series.__class__ is not list:
            raise BatchShapeError('a Datadog series payload must be an object with a "series" array')
        if not {*map(type, series)} <= {dict}:
            raise BatchShapeError("Datadog series entries must be JSON objects")
        super().__init__(series)
        self._attributes: list[dict[str, str]] | None = None

    def _types(self, position: int) -> list[Any]:
        """metric_type (position 0) or aggregation_temporality (1) per series; 0 when unknown."""
        return [SERIES_TYPES.get(t, UNTYPED)[position] if (t := s.get("type")).__class__ is int else 0
                for s in self.records]

    def _attribute(self, path: tuple[str, ...]) -> list[Any]:
        if self._attributes is None:
            self._attributes = [series_attributes(s) for s in self.records]
        name = attribute_names(path)[0]
        return [a.get(name, MISSING) for a in self._attributes]

    def column(self, key: FieldKey) -> Column:
        name = _METRIC_FIELDS.get(key)
        if name is not None:
            return Column(typed_scalars([s.get(name) for s in self.records]))
        if key == METRIC_TYPE:
            return Column(self._types(0))
        if key == AGGREGATION_TEMPORALITY:
            return Column(self._types(1))
        if key[0] in _ATTRIBUTE_HEADS:
            return Column(self._attribute(key[1]))
        return Column([MISSING] * self.n)

    def strings(self, key: FieldKey) -> Column:
        return Column(string_views(self.column(key).values))


__all__ = ["DatadogBatch", "DatadogLogs", "DatadogSeries", "encode_json"]
