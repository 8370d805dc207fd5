"""OTLP/JSON documents (as parsed by orjson) seen as batches of records.

The evaluator asks a batch for columns (one field's values for every record) and for
a handful of mutations (the interface in `edge.engine.batch`); it never walks the
document itself. Records are the dicts
inside the document, so kept records are forwarded exactly as they arrived.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import compress
from typing import Any

from edge.engine import bits
from edge.engine.values import MISSING, OTHER, Column
from edge.formats.errors import BatchShapeError
from edge.formats.json_values import json_copy
from edge.formats.otlp import json_columns
from edge.formats.otlp.json_values import hex_id_bytes, json_any_value, json_string_view
from edge.policy.fields import (
    LOG_BODY,
    LOG_EVENT_NAME,
    LOG_RESOURCE_SCHEMA_URL,
    LOG_SCOPE_NAME,
    LOG_SCOPE_SCHEMA_URL,
    LOG_SCOPE_VERSION,
    LOG_SEVERITY_NUMBER,
    LOG_SEVERITY_TEXT,
    LOG_SPAN_ID,
    LOG_TRACE_ID,
    METRIC_DESCRIPTION,
    METRIC_NAME,
    METRIC_RESOURCE_SCHEMA_URL,
    METRIC_SCOPE_NAME,
    METRIC_SCOPE_SCHEMA_URL,
    METRIC_SCOPE_VERSION,
    METRIC_UNIT,
    TRACE_NAME,
    TRACE_PARENT_SPAN_ID,
    TRACE_RESOURCE_SCHEMA_URL,
    TRACE_SCOPE_NAME,
    TRACE_SCOPE_SCHEMA_URL,
    TRACE_SCOPE_VERSION,
    TRACE_SPAN_ID,
    TRACE_TRACE_ID,
    TRACE_TRACE_STATE,
)
from edge.policy.model import FieldKey


def _scalar(value: Any) -> Any:
    if not value:
        return MISSING
    return value if value.__class__ is str else OTHER


def _scalar_string(value: Any) -> str:
    return value if value.__class__ is str else ""


def _hex_string(value: Any) -> str:
    return value.lower() if value.__class__ is str else ""


_ENUM_NUMBERS: dict[str, int] = {
    **{f"SPAN_KIND_{n}": i for i, n in enumerate(
        ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"])},
    **{f"STATUS_CODE_{n}": i for i, n in enumerate(["UNSET", "OK", "ERROR"])},
    **{f"AGGREGATION_TEMPORALITY_{n}": i for i, n in enumerate(["UNSPECIFIED", "DELTA", "CUMULATIVE"])},
    **{f"SEVERITY_NUMBER_{level}{suffix}": 4 * i + j + 1
       for i, level in enumerate(["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"])
       for j, suffix in enumerate(["", "2", "3", "4"])},
}


def _enum(value: Any) -> Any:
    if value is None:
        return 0
    if value.__class__ is int:
        return value
    if value.__class__ is str:
        return _ENUM_NUMBERS.get(value, int(value) if value.isdigit() else OTHER)
    return OTHER


def _number_enum(value: Any) -> Any:
    """An enum read as a number (a severity number): written as a number or a name; 0 or absent is MISSING."""
    number = _enum(value)
    return MISSING if number == 0 else number


def _body(value: Any) -> Any:
    """Body values: an empty string body counts as absent (compound_empty_vs_missing)."""
    typed = json_any_value(value)
    return MISSING if typed == "" else typed


# (typed converter, string-view converter) per kind of raw value
CONVERTERS: dict[str, tuple[Callable[[Any], Any], Callable[[Any], str]]] = {
    "any": (json_any_value, json_string_view),
    "body": (_body, json_string_view),
    "scalar": (_scalar, _scalar_string),
    "hexid": (hex_id_bytes, _hex_string),
    "enum": (_enum, lambda v: ""),
    "number_enum": (_number_enum, lambda v: ""),
    "name": (lambda v: v if v.__class__ is str else MISSING, _scalar_string),
}


def first_value(attributes: Any, key: str) -> Any:
    """The AnyValue of `key` in a KeyValue list, or None (fast path for one-segment paths)."""
    try:
        for kv in attributes:
            if kv["key"] == key:
                return kv["value"]
        return None
    except (TypeError, KeyError):
        return find_attribute(attributes, (key,), safe=True)


def find_attribute(attributes: Any, path: tuple[str, ...], safe: bool = False) -> Any:
    """Walk a KeyValue list along `path` (nested kvlistValue maps); the AnyValue or None."""
    if len(path) == 1 and not safe:
        return first_value(attributes, path[0])
    value = None
    last = len(path) - 1
    for depth, key in enumerate(path):
        if attributes.__class__ is not list:
            return None
        for kv in attributes:
            if kv.__class__ is dict and kv.get("key") == key:
                value = kv.get("value")
                break
        else:
            return None
        if depth < last:
            kvlist = value.get("kvlistValue") if value.__class__ is dict else None
            attributes = kvlist.get("values") if kvlist.__class__ is dict else None
    return value


def _walk(value: Any, rest: tuple[str, ...]) -> Any:
    """Continue an attribute path below a kvlistValue."""
    kvlist = value.get("kvlistValue") if value.__class__ is dict else None
    values = kvlist.get("values") if kvlist.__class__ is dict else None
    return find_attribute(values, rest) if values is not None else None


class JsonBatch:
    """Shared structure of resourceLogs / resourceMetrics / resourceSpans documents."""

    TOP = SCOPES = RECORDS = ""
    SCOPE_HOLDER = "scope"
    # field key head (or (head, enum number)) -> (level, raw kind, getter)
    FIELDS: dict[Any, tuple[str, str, Callable[[dict], Any]]] = {}
    # record-level string columns worth a dedicated comprehension (the per-batch hot path)
    FAST_STRINGS: dict[Any, Callable[[list[dict], FieldKey], list[str]]] = {}

    def __init__(self, doc: Any) -> None:
        if doc.__class__ is not dict:
            raise BatchShapeError("an OTLP document must be a JSON object")
        self.doc = doc
        top, scopes_key, records_key = self.TOP, self.SCOPES, self.RECORDS
        records: list[dict] = []
        resources: list[tuple[dict, int, int]] = []
        scopes: list[tuple[dict, int, int, int]] = []
        tops = doc.get(top) or []
        if tops.__class__ is not list:
            raise BatchShapeError(f"{top} must be a list")
        first_scope: list[int] = []  # resource position -> index in `scopes` of its first scope
        for rpos, rl in enumerate(tops):
            if rl.__class__ is not dict:
                raise BatchShapeError(f"{top} entries must be objects")
            first_scope.append(len(scopes))
            start = end = len(records)
            resource_scopes = rl.get(scopes_key) or []
            if resource_scopes.__class__ is not list:
                raise BatchShapeError(f"{scopes_key} must be a list")
            for sl in resource_scopes:
                recs = sl.get(records_key) or [] if sl.__class__ is dict else None
                if recs.__class__ is not list:
                    raise BatchShapeError(f"{records_key} must be a list of objects")
                records += recs
                s, end = end, len(records)
                scopes.append((sl, s, end, rpos))
            resources.append((rl, start, end))
        if not {*map(type, records)} <= {dict}:
            raise BatchShapeError(f"{records_key} must be a list of objects")
        self.records = records
        self.resources = resources
        self.scopes = scopes
        self._first_scope = first_scope
        self.n = len(records)
        self.full = bits.full_mask(self.n)
        self.changed = False
        self._attributes: json_columns.AttributeColumns | None = None
        self._owners: dict[str, list[int]] = {}

    def _record_attribute(self, key: FieldKey, convert: Callable[[Any], Any]) -> list[Any]:
        """A record-level attribute path for every record, converted (one pass for one segment)."""
        path = key[1]
        if len(path) == 1:
            name = path[0]
            if self.n >= json_columns.MIN_VALUES:
                if self._attributes is None:
                    self._attributes = json_columns.AttributeColumns(self.records)
                values = self._attributes.values(name)
                if values is not None:
                    return _converted(values, convert)
            return [convert(first_value(r.get("attributes") or (), name)) for r in self.records]
        rest = path[1:]
        return [convert(_walk(first_value(r.get("attributes") or (), path[0]), rest)) for r in self.records]

    # ── columns ──

    def _spec(self, key: FieldKey) -> tuple[str, str, Callable[[Any], Any]]:
        head = key[0]
        if head in ("log_field", "metric_field", "trace_field"):
            return self.FIELDS[(head, key[1])]
        return self.FIELDS[head]

    def _raw(self, level: str, getter: Callable[[dict, FieldKey], Any], key: FieldKey
             ) -> tuple[list[Any], list[int]]:
        """(raw values, owners) of a field above the records (resource, scope) or beside them (multi)."""
        if level == "multi":
            values: list[Any] = []
            owners: list[int] = []
            for i, r in enumerate(self.records):
                found = getter(r, key)
                values.extend(found)
                owners.extend([1 << i] * len(found))
            return values, owners
        groups = self.resources if level == "resource" else self.scopes
        return [getter(g[0], key) for g in groups], self._group_owners(level)

    def _group_owners(self, level: str) -> list[int]:
        """The record mask of each resource or scope, taken once per batch for all its columns."""
        owners = self._owners.get(level)
        if owners is None:
            groups = self.resources if level == "resource" else self.scopes
            owners = self._owners[level] = [((1 << (g[2] - g[1])) - 1) << g[1] for g in groups]  # bits.range_mask
        return owners

    def column(self, key: FieldKey) -> Column:
        level, kind, getter = self._spec(key)
        convert = CONVERTERS[kind][0]
        if getter is _record_attr:
            return Column(self._record_attribute(key, convert))
        if level == "record":
            member = getattr(getter, "member", None)
            if kind == "hexid" and member is not None and self.n >= json_columns.MIN_VALUES:
                fast = json_columns.hex_ids(json_columns.dig(self.records, member))
                if fast is not None:
                    return Column(fast)
            return Column([convert(getter(r, key)) for r in self.records])
        raw, owners = self._raw(level, getter, key)
        return Column(_converted(raw, convert), owners)

    def strings(self, key: FieldKey) -> Column:
        fast = self.FAST_STRINGS.get(key)
        if fast is not None:
            return Column(fast(self.records, key))
        level, kind, getter = self._spec(key)
        convert = CONVERTERS[kind][1]
        if getter is _record_attr:
            return Column(self._record_attribute(key, convert))
        if level == "record":
            return Column([convert(getter(r, key)) for r in self.records])
        raw, owners = self._raw(level, getter, key)
        return Column(_converted(raw, convert), owners)

    # ── output ──

    def keep_only(self, alive: int) -> None:
        """Remove every record whose bit is clear; prune scopes and resources left empty.

        Scopes and resources that were empty to begin with stay. Each resource is settled
        from its own window of flags first: one that keeps every record is left alone, one
        that loses every record (and had no empty scope) goes whole, and only the others
        are visited scope by scope (at 10 records in 10 scopes, visiting every scope was
        most of the cost). Windows are slices of a '0'/'1' str: slicing and searching str
        costs half what bytes do.
        """
        if alive == self.full:
            return
        self.changed = True
        flags = bits.flags(alive, self.n)
        scopes = self.scopes
        bounds = [*self._first_scope, len(scopes)]  # resource position -> its scopes' index range
        with_empty: set[int] | None = None  # resources holding a scope that was empty to begin with
        gone = set()
        for rpos, (rl, start, end) in enumerate(self.resources):
            window = flags[start:end]
            if "0" not in window:
                continue  # every record kept (or none to begin with)
            if "1" not in window:
                if with_empty is None:
                    with_empty = {scope[3] for scope in scopes if scope[1] == scope[2]}
                if rpos not in with_empty:
                    gone.add(rpos)
                    continue
            self._keep_in_scopes(rl, scopes[bounds[rpos]:bounds[rpos + 1]], flags)
        if gone:
            self.doc[self.TOP] = [rl for rpos, (rl, _, _) in enumerate(self.resources) if rpos not in gone]

    def _keep_in_scopes(self, rl: dict, group: list[tuple[dict, int, int, int]], flags: str) -> None:
        """Drop records scope by scope within one resource, and the scopes drops emptied."""
        records_key = self.RECORDS
        emptied: list[int] = []  # positions in the resource's scope list
        for position, (sl, start, end, _) in enumerate(group):
            window = flags[start:end]
            if "0" not in window:
                continue  # every record kept (or none to begin with)
            if "1" in window:
                sl[records_key] = list(compress(sl[records_key], map("1".__eq__, window)))
            else:
                sl[records_key] = []
                emptied.append(position)
        resource_scopes = rl[self.SCOPES]
        for position in reversed(emptied):
            del resource_scopes[position]

    def export(self, i: int) -> dict[str, Any]:
        """A standalone copy of record i with its resource and scope (for extensions)."""
        sl = next(s for s in self.scopes if s[1] <= i < s[2])
        rl = self.resources[sl[3]][0]
        return {
            "resource": json_copy(rl.get("resource") or {}),
            "scope": json_copy(sl[0].get(self.SCOPE_HOLDER) or {}),
            "record": json_copy(self.records[i]),
        }


# per-value converters -> their whole-column C-speed versions (None: irregular column)
_FAST_CONVERTERS: dict[Callable[[Any], Any], Callable[[list[Any]], list[Any] | None]] = {
    json_string_view: json_columns.string_views,
    json_any_value: json_columns.typed_values,
}


def _converted(values: list[Any], convert: Callable[[Any], Any]) -> list[Any]:
    """`[convert(v) for v in values]`, in C when there are enough values and they are regular."""
    fast = _FAST_CONVERTERS.get(convert) if len(values) >= json_columns.MIN_VALUES else None
    converted = fast(values) if fast is not None else None
    return converted if converted is not None else [convert(v) for v in values]


def _body_strings(records: list[dict]) -> list[str]:
    if len(records) >= json_columns.MIN_VALUES:
        fast = json_columns.string_views(json_columns.dig(records, "body"))
        if fast is not None:
            return fast
    return [(s if (s := b.get("stringValue")).__class__ is str else json_string_view(b) or "")
            if (b := r.get("body")).__class__ is dict else "" for r in records]


def _member_strings(records: list[dict], name: str) -> list[str]:
    if len(records) >= json_columns.MIN_VALUES:
        values = json_columns.dig(records, name)
        if values and json_columns.only_strings(values):
            return values
    return [s if (s := r.get(name)).__class__ is str else "" for r in records]


def _record_attr(r: dict, key: FieldKey) -> Any:
    return find_attribute(r.get("attributes"), key[1])


def _resource_attr(rl: dict, key: FieldKey) -> Any:
    resource = rl.get("resource")
    attributes = resource.get("attributes") if resource.__class__ is dict else None
    return first_value(attributes, key[1][0]) if len(key[1]) == 1 else find_attribute(attributes, key[1])


def _scope_attr(sl: dict, key: FieldKey) -> Any:
    scope = sl.get("scope")
    attributes = scope.get("attributes") if scope.__class__ is dict else None
    return first_value(attributes, key[1][0]) if len(key[1]) == 1 else find_attribute(attributes, key[1])


def _scope_member(name: str) -> Callable[[dict, FieldKey], Any]:
    def get(sl: dict, key: FieldKey) -> Any:
        scope = sl.get("scope")
        return scope.get(name) if scope.__class__ is dict else None
    return get


def _member(name: str) -> Callable[[dict, FieldKey], Any]:
    def get(d: dict, key: FieldKey) -> Any:
        return d.get(name)
    get.member = name  # type: ignore[attr-defined]  # lets column() take the whole column in C
    return get


_COMMON_FIELDS = {
    "resource_attribute": ("resource", "any", _resource_attr),
    "scope_attribute": ("scope", "any", _scope_attr),
}


# ── logs ──────────────────────────────────────────────────────────────────


class JsonLogs(JsonBatch):
    TOP, SCOPES, RECORDS = "resourceLogs", "scopeLogs", "logRecords"
    FIELDS = {
        **_COMMON_FIELDS,
        LOG_BODY: ("record", "body", _member("body")),
        LOG_SEVERITY_TEXT: ("record", "scalar", _member("severityText")),
        LOG_TRACE_ID: ("record", "hexid", _member("traceId")),
        LOG_SPAN_ID: ("record", "hexid", _member("spanId")),
        LOG_EVENT_NAME: ("record", "scalar", _member("eventName")),
        LOG_RESOURCE_SCHEMA_URL: ("resource", "scalar", _member("schemaUrl")),
        LOG_SCOPE_SCHEMA_URL: ("scope", "scalar", _member("schemaUrl")),
        LOG_SEVERITY_NUMBER: ("record", "number_enum", _member("severityNumber")),
        LOG_SCOPE_NAME: ("scope", "scalar", _scope_member("name")),
        LOG_SCOPE_VERSION: ("scope", "scalar", _scope_member("version")),
        "log_attribute": ("record", "any", _record_attr),
    }
    FAST_STRINGS = {
        LOG_BODY: lambda recs, key: _body_strings(recs),
        LOG_SEVERITY_TEXT: lambda recs, key: _member_strings(recs, "severityText"),
    }
    # log field number -> (level, JSON key, stored as AnyValue?); keyed by number, not by the whole
    # field key, because an int hashes in half the time of a tuple and this runs per transform op
    _SLOTS = {
        LOG_BODY[1]: ("record", "body", True),
        LOG_SEVERITY_TEXT[1]: ("record", "severityText", False),
        LOG_TRACE_ID[1]: ("record", "traceId", False),
        LOG_SPAN_ID[1]: ("record", "spanId", False),
        LOG_EVENT_NAME[1]: ("record", "eventName", False),
        LOG_RESOURCE_SCHEMA_URL[1]: ("resource", "schemaUrl", False),
        LOG_SCOPE_SCHEMA_URL[1]: ("scope", "schemaUrl", False),
    }

    def _owner(self, i: int, level: str) -> dict:
        if level == "record":
            return self.records[i]
        for sl, start, end, rpos in self.scopes:
            if start <= i < end:
                if level == "scope":
                    return sl
                return self.resources[rpos][0]
        raise IndexError(i)

    def _attribute_list(self, i: int, key: FieldKey, create: bool) -> list | None:
        """The KeyValue list that holds the last segment of an attribute path."""
        self._attributes = None  # a transform may change it: attribute columns are taken afresh
        head, path = key
        if head == "log_attribute":
            holder = self.records[i]
            if len(path) == 1:  # the common case: no owner lookup, no path walk
                attrs = holder.get("attributes")
                if attrs.__class__ is list:
                    return attrs
        else:
            owner = self._owner(i, "resource" if head == "resource_attribute" else "scope")
            name = "resource" if head == "resource_attribute" else "scope"
            holder = owner.get(name)
            if holder.__class__ is not dict:
                if not create:
                    return None
                holder = owner[name] = {}
        attrs = holder.get("attributes")
        if attrs.__class__ is not list:
            if not create:
                return None
            attrs = holder["attributes"] = []
        for segment in path[:-1]:
            entry = next((kv for kv in attrs if kv.__class__ is dict and kv.get("key") == segment), None)
            value = entry.get("value") if entry is not None else None
            if entry is None:
                if not create:
                    return None
                value = {"kvlistValue": {"values": []}}
                attrs.append({"key": segment, "value": value})
            elif value.__class__ is not dict or value.get("kvlistValue").__class__ is not dict:
                return None  # the parent holds a scalar: never shadow it with a second key
            kvlist = value["kvlistValue"]
            attrs = kvlist.setdefault("values", [])
        return attrs

    def get(self, i: int, key: FieldKey) -> dict | None:
        """The field as an AnyValue dict, or None when absent."""
        if key[0] == "log_field":
            level, name, any_value = self._SLOTS[key[1]]
            value = self._owner(i, level).get(name)
            if any_value:
                return value if value.__class__ is dict and value else None
            return {"stringValue": value} if value else None
        attrs = self._attribute_list(i, key, create=False)
        if attrs is None:
            return None
        last = key[1][-1]
        for kv in attrs:
            if kv.__class__ is dict and kv.get("key") == last:
                return kv.get("value")
        return None

    def set(self, i: int, key: FieldKey, value: dict) -> bool:
        """Store the field; False when the path cannot hold it (a scalar where a map is needed)."""
        if key[0] == "log_field":
            self.changed = True
            level, name, any_value = self._SLOTS[key[1]]
            owner = self._owner(i, level)
            if any_value:
                owner[name] = value
            else:
                text = value.get("stringValue")
                owner[name] = text if text.__class__ is str else str(json_any_value(value))
            return True
        attrs = self._attribute_list(i, key, create=True)
        if attrs is None:
            return False
        self.changed = True
        last = key[1][-1]
        for kv in attrs:
            if kv.__class__ is dict and kv.get("key") == last:
                kv["value"] = value
                return True
        attrs.append({"key": last, "value": value})
        return True

    def delete(self, i: int, key: FieldKey) -> bool:
        if key[0] == "log_field":
            level, name, _ = self._SLOTS[key[1]]
            owner = self._owner(i, level)
            if not owner.get(name):
                return False
            del owner[name]
            self.changed = True
            return True
        attrs = self._attribute_list(i, key, create=False)
        if attrs is None:
            return False
        last = key[1][-1]
        for pos, kv in enumerate(attrs):
            if kv.__class__ is dict and kv.get("key") == last:
                del attrs[pos]
                self.changed = True
                return True
        return False

    @staticmethod
    def string_value(text: str) -> dict:
        return {"stringValue": text}

    @staticmethod
    def string_of(value: dict) -> str | None:
        text = value.get("stringValue")
        return text if text.__class__ is str else None


# ── metrics ───────────────────────────────────────────────────────────────

_METRIC_DATA = ("gauge", "sum", "histogram", "exponentialHistogram", "summary")


def _metric_type(m: dict, key: FieldKey) -> Any:
    for number, name in enumerate(_METRIC_DATA, start=1):
        if name in m:
            return number
    return 0


def _temporality(m: dict, key: FieldKey) -> Any:
    for name in ("sum", "histogram", "exponentialHistogram"):
        data = m.get(name)
        if data.__class__ is dict:
            return data.get("aggregationTemporality")
    return None


def _datapoint_attrs(m: dict, key: FieldKey) -> list[Any]:
    for name in _METRIC_DATA:
        data = m.get(name)
        if data.__class__ is dict:
            points = data.get("dataPoints")
            if points.__class__ is list:
                return [find_attribute(p.get("attributes"), key[1]) for p in points if p.__class__ is dict]
            return []
    return []


class JsonMetrics(JsonBatch):
    TOP, SCOPES, RECORDS = "resourceMetrics", "scopeMetrics", "metrics"
    FIELDS = {
        **_COMMON_FIELDS,
        METRIC_NAME: ("record", "scalar", _member("name")),
        METRIC_DESCRIPTION: ("record", "scalar", _member("description")),
        METRIC_UNIT: ("record", "scalar", _member("unit")),
        METRIC_RESOURCE_SCHEMA_URL: ("resource", "scalar", _member("schemaUrl")),
        METRIC_SCOPE_SCHEMA_URL: ("scope", "scalar", _member("schemaUrl")),
        METRIC_SCOPE_NAME: ("scope", "scalar", _scope_member("name")),
        METRIC_SCOPE_VERSION: ("scope", "scalar", _scope_member("version")),
        "datapoint_attribute": ("multi", "any", _datapoint_attrs),
        "metric_type": ("record", "enum", _metric_type),
        "aggregation_temporality": ("record", "enum", _temporality),
    }


# ── traces ────────────────────────────────────────────────────────────────


def _status_code(span: dict, key: FieldKey) -> Any:
    status = span.get("status")
    return status.get("code") if status.__class__ is dict else None


def _events(span: dict) -> list[dict]:
    events = span.get("events")
    return [e for e in events if e.__class__ is dict] if events.__class__ is list else []


def _event_names(span: dict, key: FieldKey) -> list[Any]:
    return [e.get("name") for e in _events(span)]


def _event_attrs(span: dict, key: FieldKey) -> list[Any]:
    return [find_attribute(e.get("attributes"), key[1]) for e in _events(span)]


def _link_trace_ids(span: dict, key: FieldKey) -> list[Any]:
    links = span.get("links")
    if links.__class__ is not list:
        return []
    return [(link.get("traceId") or "").lower() for link in links if link.__class__ is dict]


class JsonTraces(JsonBatch):
    TOP, SCOPES, RECORDS = "resourceSpans", "scopeSpans", "spans"
    FIELDS = {
        **_COMMON_FIELDS,
        TRACE_NAME: ("record", "scalar", _member("name")),
        TRACE_TRACE_ID: ("record", "hexid", _member("traceId")),
        TRACE_SPAN_ID: ("record", "hexid", _member("spanId")),
        TRACE_PARENT_SPAN_ID: ("record", "hexid", _member("parentSpanId")),
        TRACE_TRACE_STATE: ("record", "scalar", _member("traceState")),
        TRACE_RESOURCE_SCHEMA_URL: ("resource", "scalar", _member("schemaUrl")),
        TRACE_SCOPE_SCHEMA_URL: ("scope", "scalar", _member("schemaUrl")),
        TRACE_SCOPE_NAME: ("scope", "scalar", _scope_member("name")),
        TRACE_SCOPE_VERSION: ("scope", "scalar", _scope_member("version")),
        "span_attribute": ("record", "any", _record_attr),
        "span_kind": ("record", "enum", _member("kind")),
        "span_status": ("record", "enum", _status_code),
        "event_name": ("multi", "name", _event_names),
        "event_attribute": ("multi", "any", _event_attrs),
        "link_trace_id": ("multi", "name", _link_trace_ids),
    }

    def trace_id(self, i: int) -> bytes | None:
        value = hex_id_bytes(self.records[i].get("traceId"))
        return value if value.__class__ is bytes else None

    def trace_state(self, i: int) -> str:
        value = self.records[i].get("traceState")
        return value if value.__class__ is str else ""

    def set_trace_state(self, i: int, value: str) -> None:
        span = self.records[i]
        if span.get("traceState", "") != value:
            span["traceState"] = value
            self.changed = True


__all__ = ["JsonLogs", "JsonMetrics", "JsonTraces", "MISSING", "OTHER"]
