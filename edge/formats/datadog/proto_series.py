"""Datadog protobuf series (`/api/v2/series`, `Content-Type: application/x-protobuf`) seen as a batch.

The protobuf twin of `edge.formats.datadog.batch.DatadogSeries`, mapped the same way
(docs/configuration.md "Datadog field mapping"): NAME = `metric`, UNIT = `unit`, metric_type
and aggregation_temporality from `type`, attributes from `tags` (`k:v`), then `resources`
(`<type>` = name), then `source_type_name`. The payload is the agent's `MetricPayload`
(edge/proto/datadog/agentpayload/agent_payload.proto), read straight from the upb-backed
message: columns are C-level passes (`map`, `compress`, `dict(zip)`) over the series
wrappers collected once and over all their tags flattened, never a Python loop per series
or per tag; resources are read only for series that lack the tag asked for. `keep_only`
deletes runs of dropped series in place, so re-encoding keeps every field edge does not
know (points, metadata...) byte for byte. Proto3 strings are "" when unset: the absent
value, as in the OTLP protobuf views.
"""

from __future__ import annotations

import re
from itertools import chain, compress, repeat
from operator import attrgetter, itemgetter
from typing import Any

from google.protobuf import json_format

from edge.engine import bits
from edge.engine.values import MISSING, Column
from edge.formats.datadog.batch import SERIES_TYPES, UNTYPED, attribute_names, string_views, typed_scalars
from edge.formats.errors import BatchShapeError
from edge.policy.fields import AGGREGATION_TEMPORALITY, METRIC_NAME, METRIC_TYPE, METRIC_UNIT
from edge.policy.model import FieldKey
from edge.proto.datadog.agentpayload.agent_payload_pb2 import MetricPayload

_FIELDS = {METRIC_NAME: attrgetter("metric"), METRIC_UNIT: attrgetter("unit")}
_TYPE = attrgetter("type")
_TAGS = attrgetter("tags")
_RESOURCES = attrgetter("resources")
_NAME = attrgetter("name")
_SOURCE = attrgetter("source_type_name")
_FIRST = itemgetter(0)
_THIRD = itemgetter(2)
_ATTRIBUTE_HEADS = frozenset({"datapoint_attribute", "resource_attribute"})
_ZERO_RUNS = re.compile("0+")
_MEMMOVE_BUDGET = 1 << 25  # runs x series beyond which one stable sort beats deleting run by run


def parse_payload(body: bytes) -> Any:
    """Decode a MetricPayload; BatchShapeError when the bytes are not one."""
    try:
        return MetricPayload.FromString(body)
    except Exception as exc:  # noqa: BLE001 - DecodeError, or TypeError for odd body types
        reason = str(exc).splitlines()[0].rsplit(": ", 1)[-1] if str(exc) else type(exc).__name__
        raise BatchShapeError(f"not a protobuf MetricPayload: {reason}") from None


class Pairs:
    """(name, value) entries of every series flattened into columns, with the series each belongs to."""

    def __init__(self, lists: list[Any], names: list[str], values: list[str]) -> None:
        self.owners = list(chain.from_iterable(map(repeat, range(len(lists)), map(len, lists))))
        self.names = names
        self.values = values
        self.present = frozenset(names)  # a name no entry has costs no pass at all

    def first(self, name: str) -> dict[int, str]:
        """Series index -> the value of its first entry called `name` (reversed: dict keeps the last write)."""
        if name not in self.present:
            return {}
        hits = list(map(name.__eq__, self.names))
        owners = list(compress(self.owners, hits))
        if not owners:
            return {}
        return dict(zip(reversed(owners), reversed(list(compress(self.values, hits))), strict=True))


def tag_pairs(lists: list[Any]) -> Pairs:
    """Every tag split at its first ":" (a bare tag has the value ""): one `str.partition` map."""
    parts = list(map(str.partition, chain.from_iterable(lists), repeat(":")))
    return Pairs(lists, list(map(_FIRST, parts)), list(map(_THIRD, parts)))


def resource_pairs(lists: list[Any]) -> Pairs:
    """Every resource as (type, name)."""
    flat = list(chain.from_iterable(lists))
    return Pairs(lists, list(map(_TYPE, flat)), list(map(_NAME, flat)))


def delete_dropped(field: Any, flags: str) -> None:
    """Delete the entries of a repeated field whose flag is "0", keeping the order of the rest."""
    runs = list(_ZERO_RUNS.finditer(flags))
    if len(runs) * len(flags) <= _MEMMOVE_BUDGET:
        for run in reversed(runs):  # each deletion shifts the tail once (a memmove in C)
            del field[run.start():run.end()]
        return
    order = iter(flags)  # many scattered drops in a huge payload: one stable sort, then truncate
    field.sort(key=lambda _: next(order) == "0")
    del field[flags.count("1"):]


class DatadogProtoSeries:
    """A decoded MetricPayload as a batch of metrics (filter only: no transforms)."""

    def __init__(self, message: Any) -> None:
        self.message = message
        self.records = list(message.series)
        self.n = len(self.records)
        self.full = bits.full_mask(self.n)
        self.changed = False
        self._tags: Pairs | None = None
        self._resources: Pairs | None = None
        self._types: list[tuple[int, int]] | None = None

    def _type_pairs(self) -> list[tuple[int, int]]:
        if self._types is None:
            self._types = [SERIES_TYPES.get(t, UNTYPED) for t in map(_TYPE, self.records)]
        return self._types

    def _attribute(self, path: tuple[str, ...]) -> list[Any]:
        """The first tag `K:v`, else the first resource of type K, else source_type_name for that key."""
        name = attribute_names(path)[0]
        if self._tags is None:
            self._tags = tag_pairs(list(map(_TAGS, self.records)))
        found = self._tags.first(name)
        if len(found) < self.n:  # some series have no such tag: their resources, then source_type_name
            found = {**self._fallback(name), **found}
        return list(map(found.get, range(self.n), repeat(MISSING))) if found else [MISSING] * self.n

    def _fallback(self, name: str) -> dict[int, str]:
        """Series index -> the name of its first resource of type `name`, else its source_type_name."""
        if self._resources is None:
            self._resources = resource_pairs(list(map(_RESOURCES, self.records)))
        found = self._resources.first(name)
        if name == "source_type_name":
            sources = list(map(_SOURCE, self.records))
            found = {**dict(zip(compress(range(self.n), sources), filter(None, sources), strict=True)), **found}
        return found

    def column(self, key: FieldKey) -> Column:
        getter = _FIELDS.get(key)
        if getter is not None:
            return Column(typed_scalars(list(map(getter, self.records))))
        if key == METRIC_TYPE:
            return Column([pair[0] for pair in self._type_pairs()])
        if key == AGGREGATION_TEMPORALITY:
            return Column([pair[1] for pair in self._type_pairs()])
        if key[0] in _ATTRIBUTE_HEADS:
            return Column(self._attribute(key[1]))
        return Column([MISSING] * self.n)

    def strings(self, key: FieldKey) -> Column:
        getter = _FIELDS.get(key)
        if getter is not None:
            return Column(list(map(getter, self.records)))  # proto3: "" already is the absent string view
        return Column(string_views(self.column(key).values))

    def keep_only(self, alive: int) -> None:
        if alive == self.full:
            return
        self.changed = True
        delete_dropped(self.message.series, bits.flags(alive, self.n))

    def export(self, i: int) -> dict[str, Any]:
        """Series i as a v2-series-style dict for extensions (Datadog has no resource or scope)."""
        record = json_format.MessageToDict(self.records[i], preserving_proto_field_name=True,
                                           use_integers_for_enums=True)
        return {"resource": {}, "scope": {}, "record": record}


__all__ = ["DatadogProtoSeries", "parse_payload"]
