"""OTLP/protobuf export requests seen as batches of records.

The protobuf twin of `edge.formats.otlp.json_batch`: the same columns, the same typed values
and the same mutations, read straight from the upb-backed messages. Nothing on the
evaluation path converts protobuf to JSON or dicts; `export()` (extensions only, for
the few selected records) is the one place that does.

Cost notes (upb): reading a scalar is ~50 ns, touching a sub-message ~100 ns and every
first touch of a message creates a Python wrapper, so columns are single list
comprehensions over the record wrappers collected once in the constructor.
Proto3 strings and bytes are "" / b"" when unset, which is exactly the absent string
view, so most string columns need no conversion at all.
"""

from __future__ import annotations

import base64
import re
from itertools import compress
from operator import attrgetter
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from edge.engine import bits
from edge.engine.values import MISSING, OTHER, Column
from edge.formats.errors import BatchShapeError
from edge.formats.otlp import proto_columns
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

REQUESTS = {"log": ExportLogsServiceRequest, "metric": ExportMetricsServiceRequest,
            "trace": ExportTraceServiceRequest}


def parse_request(signal: str, body: bytes) -> Any:
    """Decode an Export*ServiceRequest; BatchShapeError when the bytes are not one."""
    request = REQUESTS.get(signal)
    if request is None:
        raise BatchShapeError(f"unknown signal {signal!r}")
    try:
        return request.FromString(body)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or TypeError for odd body types
        reason = str(exc).splitlines()[0].rsplit(": ", 1)[-1] if str(exc) else type(exc).__name__
        raise BatchShapeError(f"not a protobuf {request.__name__}: {reason}") from None


# ── AnyValue helpers ────────────────────────────────────────────────────────


def typed_any(value: Any) -> Any:
    """AnyValue (or None) -> typed value: str/int/float/bool/bytes, OTHER, MISSING."""
    if value is None:
        return MISSING
    which = value.WhichOneof("value")
    if which is None:
        return MISSING
    if which == "array_value" or which == "kvlist_value":
        return OTHER
    return getattr(value, which)


def find_attribute(attributes: Any, path: tuple[str, ...]) -> Any:
    """Walk repeated KeyValue along `path` (nested kvlist_value maps); the AnyValue or None.

    First match per key, like json_batch.find_attribute. A KeyValue without a value
    yields an empty AnyValue, which every reader treats as absent.
    """
    last = len(path) - 1
    for depth, key in enumerate(path):
        for kv in attributes:
            if kv.key == key:
                break
        else:
            return None
        value = kv.value
        if depth == last:
            return value
        if value.WhichOneof("value") != "kvlist_value":
            return None
        attributes = value.kvlist_value.values
    return None


def _attr_typed(attributes: Any, path: tuple[str, ...]) -> Any:
    if len(path) == 1:
        key = path[0]
        for kv in attributes:
            if kv.key == key:
                value = kv.value  # unset: an empty AnyValue, so MISSING below
                which = value.WhichOneof("value")
                if which is None:
                    return MISSING
                if which == "array_value" or which == "kvlist_value":
                    return OTHER
                return getattr(value, which)
        return MISSING
    return typed_any(find_attribute(attributes, path))


def _attr_string(attributes: Any, path: tuple[str, ...]) -> str:
    """String view of an attribute: the string, bytes as lowercase hex, else ""."""
    if len(path) == 1:
        key = path[0]
        for kv in attributes:
            if kv.key == key:
                value = kv.value
                return value.string_value or value.bytes_value.hex()
        return ""
    value = find_attribute(attributes, path)
    return "" if value is None else value.string_value or value.bytes_value.hex()


def _body_string(body: Any) -> str:
    """String view of a body that is not a non-empty string: bytes as lowercase hex, else ""."""
    return body.bytes_value.hex()


def _body_typed(body: Any) -> Any:
    """Typed log body: like typed_any, but an empty string body counts as absent."""
    which = body.WhichOneof("value")
    if which is None or which == "string_value":
        return MISSING
    if which == "array_value" or which == "kvlist_value":
        return OTHER
    return getattr(body, which)


# ── the batch ───────────────────────────────────────────────────────────────

_BODY = attrgetter("body")
_STRING_VALUE = attrgetter("string_value")
_ZERO_RUNS = re.compile("0+")
# runs x scope length above which deleting runs one by one costs more than a sort
_MEMMOVE_BUDGET = 1 << 25


class ProtoBatch:
    """Shared structure of resource_logs / resource_metrics / resource_spans requests."""

    TOP = SCOPES = RECORDS = ""
    # field key head (or (head, number)) -> (column kind, argument)
    FIELDS: dict[Any, tuple[str, Any]] = {}

    def __init__(self, message: Any) -> None:
        self.message = message
        records: list[Any] = []
        resources: list[tuple[Any, int, int]] = []
        scopes: list[tuple[Any, int, int, int]] = []
        scopes_name, records_name = self.SCOPES, self.RECORDS
        first_scope: list[int] = []  # resource position -> index in `scopes` of its first scope
        for rpos, rl in enumerate(getattr(message, self.TOP)):
            first_scope.append(len(scopes))
            start = end = len(records)
            for sl in getattr(rl, scopes_name):
                records += getattr(sl, records_name)
                s, end = end, len(records)
                scopes.append((sl, s, end, rpos))
            resources.append((rl, start, end))
        self.records = records
        self.resources = resources
        self.scopes = scopes
        self._first_scope = first_scope
        self._attributes: proto_columns.ProtoAttributeColumns | None = None
        # Built on first use: a batch that never reads a resource or scope field, or never
        # transforms one, does not pay for them (at 10 records they cost as much as the rest).
        self._resource_owners: list[int] | None = None
        self._scope_owners: list[int] | None = None
        self._scope_of: list[int] | None = None  # record -> index in self.scopes
        self.n = len(records)
        self.full = bits.full_mask(self.n)
        self.changed = False

    def _resource_masks(self) -> list[int]:
        """The record mask of each resource."""
        if self._resource_owners is None:
            self._resource_owners = [((1 << (e - s)) - 1) << s for _, s, e in self.resources]  # bits.range_mask
        return self._resource_owners

    def _scope_masks(self) -> list[int]:
        """The record mask of each scope."""
        if self._scope_owners is None:
            self._scope_owners = [((1 << (e - s)) - 1) << s for _, s, e, _ in self.scopes]  # bits.range_mask
        return self._scope_owners

    def _scope_index(self, i: int) -> int:
        """The index in self.scopes of record i's scope."""
        if self._scope_of is None:
            scope_of: list[int] = []
            for j, (_, s, e, _) in enumerate(self.scopes):
                scope_of += [j] * (e - s)
            self._scope_of = scope_of
        return self._scope_of[i]

    # ── columns ──

    def _spec(self, key: FieldKey) -> tuple[str, Any]:
        head = key[0]
        if head in ("log_field", "metric_field", "trace_field"):
            return self.FIELDS[(head, key[1])]
        return self.FIELDS[head]

    def column(self, key: FieldKey) -> Column:
        kind, arg = self._spec(key)
        return _BUILDERS[kind](self, key, arg, True)

    def strings(self, key: FieldKey) -> Column:
        kind, arg = self._spec(key)
        return _BUILDERS[kind](self, key, arg, False)

    # record-level builders: (self, key, argument, typed) -> Column

    def _c_body(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        bodies = list(map(_BODY, self.records))
        values = list(map(_STRING_VALUE, bodies))
        # a non-empty string_value is the set oneof; only the "" positions need a closer look
        if "" in values:
            settle = _body_typed if typed else _body_string
            for i in compress(range(len(values)), map("".__eq__, values)):
                values[i] = settle(bodies[i])
        return Column(values)

    def _c_scalar(self, key: FieldKey, name: str, typed: bool) -> Column:
        records = self.records
        if typed:
            return Column([getattr(r, name) or MISSING for r in records])
        return Column([getattr(r, name) for r in records])

    def _c_id(self, key: FieldKey, name: str, typed: bool) -> Column:
        records = self.records
        if typed:
            return Column([getattr(r, name) or MISSING for r in records])
        return Column([getattr(r, name).hex() for r in records])

    def _c_attribute(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        path = key[1]
        records = self.records
        if len(path) == 1:
            if self._attributes is None:
                self._attributes = proto_columns.ProtoAttributeColumns(records)
            values = self._attributes.values(path[0])
            convert = proto_columns.typed_values if typed else proto_columns.string_views
            fast = None if values is None else convert(values)
            if fast is not None:
                return Column(fast)
        if typed:
            return Column([_attr_typed(r.attributes, path) for r in records])
        return Column([_attr_string(r.attributes, path) for r in records])

    def _c_enum(self, key: FieldKey, name: str, typed: bool) -> Column:
        records = self.records
        if not typed:
            return Column([""] * len(records))
        return Column([getattr(r, name) for r in records])

    def _c_number(self, key: FieldKey, name: str, typed: bool) -> Column:
        """A numeric field (the severity number): 0 is unset, so absent; never a string."""
        records = self.records
        if not typed:
            return Column([""] * len(records))
        return Column([getattr(r, name) or MISSING for r in records])

    # resource- and scope-level builders

    def _c_resource_scalar(self, key: FieldKey, name: str, typed: bool) -> Column:
        values = [getattr(rl, name) for rl, _, _ in self.resources]
        return Column([v or MISSING for v in values] if typed else values, self._resource_masks())

    def _c_scope_scalar(self, key: FieldKey, name: str, typed: bool) -> Column:
        values = [getattr(sl, name) for sl, _, _, _ in self.scopes]
        return Column([v or MISSING for v in values] if typed else values, self._scope_masks())

    def _c_scope_member(self, key: FieldKey, name: str, typed: bool) -> Column:
        values = [getattr(sl.scope, name) for sl, _, _, _ in self.scopes]
        return Column([v or MISSING for v in values] if typed else values, self._scope_masks())

    def _c_resource_attribute(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        path = key[1]
        convert = _attr_typed if typed else _attr_string
        return Column([convert(rl.resource.attributes, path) for rl, _, _ in self.resources],
                      self._resource_masks())

    def _c_scope_attribute(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        path = key[1]
        convert = _attr_typed if typed else _attr_string
        return Column([convert(sl.scope.attributes, path) for sl, _, _, _ in self.scopes],
                      self._scope_masks())

    # ── output ──

    def keep_only(self, alive: int) -> None:
        """Remove every record whose bit is clear; prune scopes and resources left empty.

        Scopes and resources that were empty to begin with stay. Each resource is settled
        from its own window of flags first: one that keeps every record is left alone, one
        that loses every record (and had no empty scope) goes whole, and only the others
        are visited scope by scope, deleting runs of dropped records back to front. A scope
        or resource that goes is deleted as a whole: clearing its records first would cost
        one more upb call each, the fixed cost of a small batch.
        """
        if alive == self.full:
            return
        self.changed = True
        flags = bits.flags(alive, self.n)
        scopes = self.scopes
        bounds = [*self._first_scope, len(scopes)]  # resource position -> its scopes' index range
        gone: list[int] = []
        for rpos, (rl, start, end) in enumerate(self.resources):
            window = flags[start:end]
            if "0" not in window:
                continue  # every record kept (or none to begin with)
            group = scopes[bounds[rpos]:bounds[rpos + 1]]
            if "1" not in window:
                for _, first, last, _ in group:
                    if first == last:
                        break  # a scope empty to begin with stays, and so does its resource
                else:
                    gone.append(rpos)
                    continue
            self._keep_in_scopes(rl, group, flags)
        top = getattr(self.message, self.TOP)
        for rpos in reversed(gone):
            del top[rpos]

    def _keep_in_scopes(self, rl: Any, group: list[tuple[Any, int, int, int]], flags: str) -> None:
        """Drop records scope by scope within one resource, and the scopes drops emptied."""
        emptied: list[int] = []  # positions in the resource's scope list
        for position, (sl, start, end, _) in enumerate(group):
            segment = flags[start:end]
            if "0" not in segment:
                continue  # every record kept (or none to begin with)
            if "1" not in segment:
                emptied.append(position)  # the scope goes, its records with it
                continue
            field = getattr(sl, self.RECORDS)
            runs = list(_ZERO_RUNS.finditer(segment))
            if len(runs) * (end - start) <= _MEMMOVE_BUDGET:
                for run in reversed(runs):  # each deletion shifts the tail once (a memmove in C)
                    del field[run.start():run.end()]
            else:
                # many scattered drops in a huge scope: a stable sort moves the kept records
                # (pointers, not copies) to the front in one O(n log n) pass, then truncate.
                order = iter(segment)
                field.sort(key=lambda _: next(order) == "0")
                del field[segment.count("1"):]
        if emptied:
            resource_scopes = getattr(rl, self.SCOPES)
            for position in reversed(emptied):
                del resource_scopes[position]

    def _scope_entry(self, i: int) -> tuple[Any, int, int, int]:
        return self.scopes[self._scope_index(i)]

    def export(self, i: int) -> dict[str, Any]:
        """A standalone OTLP/JSON-style copy of record i with its resource and scope (extensions)."""
        sl = self._scope_entry(i)
        rl = self.resources[sl[3]][0]
        return {
            "resource": _to_dict(rl.resource),
            "scope": _to_dict(sl[0].scope),
            "record": _to_dict(self.records[i]),
        }


_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(doc: Any) -> None:
    """OTLP/JSON spells ids in hex, MessageToDict in base64: rewrite them (records and links)."""
    for name in _ID_KEYS:
        value = doc.get(name)
        if value:
            doc[name] = base64.b64decode(value).hex()
    for link in doc.get("links") or ():
        _hex_ids(link)


def _to_dict(message: Any) -> dict[str, Any]:
    doc = json_format.MessageToDict(message, use_integers_for_enums=True)
    _hex_ids(doc)
    return doc


_BUILDERS = {
    "body": ProtoBatch._c_body,
    "scalar": ProtoBatch._c_scalar,
    "id": ProtoBatch._c_id,
    "attribute": ProtoBatch._c_attribute,
    "enum": ProtoBatch._c_enum,
    "number": ProtoBatch._c_number,
    "resource_scalar": ProtoBatch._c_resource_scalar,
    "scope_scalar": ProtoBatch._c_scope_scalar,
    "scope_member": ProtoBatch._c_scope_member,
    "resource_attribute": ProtoBatch._c_resource_attribute,
    "scope_attribute": ProtoBatch._c_scope_attribute,
}

_COMMON_FIELDS: dict[Any, tuple[str, Any]] = {
    "resource_attribute": ("resource_attribute", None),
    "scope_attribute": ("scope_attribute", None),
}


# ── logs ──────────────────────────────────────────────────────────────────


class ProtoLogs(ProtoBatch):
    TOP, SCOPES, RECORDS = "resource_logs", "scope_logs", "log_records"
    FIELDS = {
        **_COMMON_FIELDS,
        LOG_BODY: ("body", None),
        LOG_SEVERITY_TEXT: ("scalar", "severity_text"),
        LOG_TRACE_ID: ("id", "trace_id"),
        LOG_SPAN_ID: ("id", "span_id"),
        LOG_EVENT_NAME: ("scalar", "event_name"),
        LOG_RESOURCE_SCHEMA_URL: ("resource_scalar", "schema_url"),
        LOG_SCOPE_SCHEMA_URL: ("scope_scalar", "schema_url"),
        LOG_SEVERITY_NUMBER: ("number", "severity_number"),
        LOG_SCOPE_NAME: ("scope_member", "name"),
        LOG_SCOPE_VERSION: ("scope_member", "version"),
        "log_attribute": ("attribute", None),
    }
    # log field number -> (level, proto field, kind): "any" AnyValue, "str" string, "id" bytes;
    # keyed by number, not by the whole field key: an int hashes in half a tuple's time, per transform op
    _SLOTS = {
        LOG_BODY[1]: ("record", "body", "any"),
        LOG_SEVERITY_TEXT[1]: ("record", "severity_text", "str"),
        LOG_TRACE_ID[1]: ("record", "trace_id", "id"),
        LOG_SPAN_ID[1]: ("record", "span_id", "id"),
        LOG_EVENT_NAME[1]: ("record", "event_name", "str"),
        LOG_RESOURCE_SCHEMA_URL[1]: ("resource", "schema_url", "str"),
        LOG_SCOPE_SCHEMA_URL[1]: ("scope", "schema_url", "str"),
    }

    def _owner(self, i: int, level: str) -> Any:
        if level == "record":
            return self.records[i]
        sl = self.scopes[self._scope_index(i)]
        return sl[0] if level == "scope" else self.resources[sl[3]][0]

    def _attribute_list(self, i: int, key: FieldKey, create: bool) -> Any:
        """The repeated KeyValue that holds the last segment of an attribute path, or None."""
        self._attributes = None  # a transform may change it: attribute columns are taken afresh
        head, path = key
        if head == "log_attribute":
            attrs = self.records[i].attributes
        elif head == "resource_attribute":
            attrs = self._owner(i, "resource").resource.attributes
        else:
            attrs = self._owner(i, "scope").scope.attributes
        if len(path) == 1:
            return attrs  # the common case: no path walk
        for segment in path[:-1]:
            found = None
            for kv in attrs:
                if kv.key == segment:
                    found = kv
                    break
            if found is None:
                if not create:
                    return None
                found = attrs.add(key=segment)
                found.value.kvlist_value.SetInParent()
            elif found.value.WhichOneof("value") != "kvlist_value":
                return None  # the parent holds a scalar: never shadow it with a second key
            attrs = found.value.kvlist_value.values
        return attrs

    def get(self, i: int, key: FieldKey) -> Any:
        """The field as an AnyValue message, or None when absent."""
        if key[0] == "log_field":
            level, name, kind = self._SLOTS[key[1]]
            owner = self._owner(i, level)
            if kind == "any":
                body = owner.body
                return body if body.WhichOneof("value") is not None else None
            value = getattr(owner, name)
            if not value:
                return None
            return AnyValue(string_value=value.hex() if kind == "id" else value)
        attrs = self._attribute_list(i, key, create=False)
        if attrs is None:
            return None
        last = key[1][-1]
        for kv in attrs:
            if kv.key == last:
                return kv.value if kv.HasField("value") else None
        return None

    def set(self, i: int, key: FieldKey, value: Any) -> bool:
        """Store the field; False when the path cannot hold it (a scalar where a map is needed)."""
        if key[0] == "log_field":
            self.changed = True
            level, name, kind = self._SLOTS[key[1]]
            owner = self._owner(i, level)
            if kind == "any":
                if value is not owner.body:
                    owner.body.CopyFrom(value)
                return True
            is_string = value.WhichOneof("value") == "string_value"
            text = value.string_value if is_string else str(typed_any(value))
            if kind == "str":
                setattr(owner, name, text)
                return True
            try:
                setattr(owner, name, bytes.fromhex(text))
            except ValueError:
                owner.ClearField(name)  # not hex: a binary id cannot hold the text, so it goes
            return True
        attrs = self._attribute_list(i, key, create=True)
        if attrs is None:
            return False
        self.changed = True
        last = key[1][-1]
        for kv in attrs:
            if kv.key == last:
                if value is not kv.value:
                    kv.value.CopyFrom(value)
                return True
        added = attrs.add()
        added.key = last
        added.value.CopyFrom(value)
        return True

    def delete(self, i: int, key: FieldKey) -> bool:
        if key[0] == "log_field":
            level, name, kind = self._SLOTS[key[1]]
            owner = self._owner(i, level)
            if kind == "any":
                if owner.body.WhichOneof("value") is None:
                    return False
            elif not getattr(owner, name):
                return False
            owner.ClearField(name)
            self.changed = True
            return True
        attrs = self._attribute_list(i, key, create=False)
        if attrs is None:
            return False
        last = key[1][-1]
        for pos, kv in enumerate(attrs):
            if kv.key == last:
                del attrs[pos]
                self.changed = True
                return True
        return False

    @staticmethod
    def string_value(text: str) -> Any:
        return AnyValue(string_value=text)

    @staticmethod
    def string_of(value: Any) -> str | None:
        text = value.string_value  # non-empty only when it is the set member
        return text if text or value.WhichOneof("value") == "string_value" else None


# ── metrics ───────────────────────────────────────────────────────────────

_METRIC_TYPES = {None: 0, "gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}
_TEMPORAL = frozenset(("sum", "histogram", "exponential_histogram"))


class ProtoMetrics(ProtoBatch):
    TOP, SCOPES, RECORDS = "resource_metrics", "scope_metrics", "metrics"
    FIELDS = {
        **_COMMON_FIELDS,
        METRIC_NAME: ("scalar", "name"),
        METRIC_DESCRIPTION: ("scalar", "description"),
        METRIC_UNIT: ("scalar", "unit"),
        METRIC_RESOURCE_SCHEMA_URL: ("resource_scalar", "schema_url"),
        METRIC_SCOPE_SCHEMA_URL: ("scope_scalar", "schema_url"),
        METRIC_SCOPE_NAME: ("scope_member", "name"),
        METRIC_SCOPE_VERSION: ("scope_member", "version"),
        "datapoint_attribute": ("datapoint_attribute", None),
        "metric_type": ("metric_type", None),
        "aggregation_temporality": ("temporality", None),
    }

    def _c_metric_type(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        if not typed:
            return Column([""] * self.n)
        types = _METRIC_TYPES
        return Column([types[m.WhichOneof("data")] for m in self.records])

    def _c_temporality(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        if not typed:
            return Column([""] * self.n)
        return Column([getattr(m, w).aggregation_temporality if (w := m.WhichOneof("data")) in _TEMPORAL
                       else 0 for m in self.records])

    def _c_datapoint_attribute(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        path = key[1]
        convert = _attr_typed if typed else _attr_string
        values: list[Any] = []
        owners: list[int] = []
        for i, m in enumerate(self.records):
            which = m.WhichOneof("data")
            if which is None:
                continue
            found = [convert(p.attributes, path) for p in getattr(m, which).data_points]
            if found:
                values.extend(found)
                owners.extend([1 << i] * len(found))
        return Column(values, owners)


# ── traces ────────────────────────────────────────────────────────────────


class ProtoTraces(ProtoBatch):
    TOP, SCOPES, RECORDS = "resource_spans", "scope_spans", "spans"
    FIELDS = {
        **_COMMON_FIELDS,
        TRACE_NAME: ("scalar", "name"),
        TRACE_TRACE_ID: ("id", "trace_id"),
        TRACE_SPAN_ID: ("id", "span_id"),
        TRACE_PARENT_SPAN_ID: ("id", "parent_span_id"),
        TRACE_TRACE_STATE: ("scalar", "trace_state"),
        TRACE_RESOURCE_SCHEMA_URL: ("resource_scalar", "schema_url"),
        TRACE_SCOPE_SCHEMA_URL: ("scope_scalar", "schema_url"),
        TRACE_SCOPE_NAME: ("scope_member", "name"),
        TRACE_SCOPE_VERSION: ("scope_member", "version"),
        "span_attribute": ("attribute", None),
        "span_kind": ("enum", "kind"),
        "span_status": ("span_status", None),
        "event_name": ("event_name", None),
        "event_attribute": ("event_attribute", None),
        "link_trace_id": ("link_trace_id", None),
    }

    def _c_span_status(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        if not typed:
            return Column([""] * self.n)
        return Column([s.status.code for s in self.records])

    def _multi(self, per_span: Any) -> Column:
        values: list[Any] = []
        owners: list[int] = []
        for i, span in enumerate(self.records):
            found = per_span(span)
            if found:
                values.extend(found)
                owners.extend([1 << i] * len(found))
        return Column(values, owners)

    def _c_event_name(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        # raw names both ways: "" is the absent string view and matches no event_name selector
        return self._multi(lambda span: [e.name for e in span.events])

    def _c_event_attribute(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        path = key[1]
        convert = _attr_typed if typed else _attr_string
        return self._multi(lambda span: [convert(e.attributes, path) for e in span.events])

    def _c_link_trace_id(self, key: FieldKey, arg: Any, typed: bool) -> Column:
        return self._multi(lambda span: [link.trace_id.hex() for link in span.links])

    def trace_id(self, i: int) -> bytes | None:
        return self.records[i].trace_id or None

    def trace_state(self, i: int) -> str:
        return self.records[i].trace_state

    def set_trace_state(self, i: int, value: str) -> None:
        span = self.records[i]
        if span.trace_state != value:
            span.trace_state = value
            self.changed = True


_BUILDERS.update({
    "metric_type": ProtoMetrics._c_metric_type,
    "temporality": ProtoMetrics._c_temporality,
    "datapoint_attribute": ProtoMetrics._c_datapoint_attribute,
    "span_status": ProtoTraces._c_span_status,
    "event_name": ProtoTraces._c_event_name,
    "event_attribute": ProtoTraces._c_event_attribute,
    "link_trace_id": ProtoTraces._c_link_trace_id,
})

PROTO_BATCHES: dict[str, type[ProtoBatch]] = {"log": ProtoLogs, "metric": ProtoMetrics, "trace": ProtoTraces}

__all__ = ["PROTO_BATCHES", "ProtoBatch", "ProtoLogs", "ProtoMetrics", "ProtoTraces", "parse_request"]
