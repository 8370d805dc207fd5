"""Attribute columns from OTLP protobuf (upb) messages with C-level passes.

The protobuf twin of `json_columns`: when each record's first `name` attribute sits at
the same position of its `attributes` list and all values have the same kind, the
column is taken with `map(attrgetter)` passes instead of a Python loop over every
record's KeyValues; otherwise the caller walks each record. Results are identical.
"""

from __future__ import annotations

from itertools import compress
from operator import attrgetter, itemgetter, methodcaller
from typing import Any

_ATTRIBUTES = attrgetter("attributes")
_KEY = attrgetter("key")
_VALUE = attrgetter("value")
_WHICH = methodcaller("WhichOneof", "value")
_DEFAULTS: dict[str, Any] = {"string_value": "", "int_value": 0, "double_value": 0.0, "bool_value": False}
_SCALARS = {kind: attrgetter(kind) for kind in _DEFAULTS}


class ProtoAttributeColumns:
    """Attribute lookups over one batch's records, sharing the passes per list position."""

    def __init__(self, records: list[Any]) -> None:
        self.lists = list(map(_ATTRIBUTES, records))
        self._slots: dict[int, tuple[list[Any], list[str]]] = {}

    def _slot(self, j: int) -> tuple[list[Any], list[str]]:
        """(the KeyValues at position j, their keys) of every record; raises IndexError if a list is short."""
        slot = self._slots.get(j)
        if slot is None:
            kvs = list(map(itemgetter(j), self.lists))
            slot = self._slots[j] = (kvs, list(map(_KEY, kvs)))
        return slot

    def values(self, name: str) -> list[Any] | None:
        """The AnyValue of attribute `name` of every record, or None (irregular batch)."""
        lists = self.lists
        if not lists:
            return None
        position = -1  # of the first record's `name`: a loop, a generator costs more than the search
        for i, kv in enumerate(lists[0]):
            if kv.key == name:
                position = i
                break
        if position < 0:
            return None
        try:
            for j in range(position):
                if name in self._slot(j)[1]:
                    return None
            kvs, keys = self._slot(position)
        except IndexError:
            return None
        if keys.count(name) != len(lists):
            return None
        return list(map(_VALUE, kvs))


def _of_kind(any_values: list[Any], kind: str) -> list[Any] | None:
    """The `kind` field of every AnyValue, or None when one of them holds another kind.

    Reading a oneof member that is not set gives its default, so a value other than
    the default proves the kind; only the default-valued positions are asked
    `WhichOneof` (2k instructions a call, a pass of them cost more than the column).
    """
    values = list(map(_SCALARS[kind], any_values))
    default = _DEFAULTS[kind]
    if default in values:
        doubtful = compress(any_values, map(default.__eq__, values))
        if any(which != kind for which in map(_WHICH, doubtful)):
            return None
    return values


def typed_values(any_values: list[Any]) -> list[Any] | None:
    """Typed values when every AnyValue holds the same scalar kind, else None."""
    kind = any_values[0].WhichOneof("value") if any_values else None
    return _of_kind(any_values, kind) if kind in _SCALARS else None


def string_views(any_values: list[Any]) -> list[str] | None:
    """String views when every AnyValue is a string, else None."""
    return _of_kind(any_values, "string_value")


__all__ = ["ProtoAttributeColumns", "string_views", "typed_values"]
