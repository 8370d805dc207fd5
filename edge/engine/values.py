"""Typed field values shared by the JSON and protobuf views of OTLP.

Both views hand the evaluator the same Python types, so every condition is written
once: `str`, `int`, `float`, `bool`, `bytes`, `OTHER` for arrays and maps, and
`MISSING` for an absent field. A `Column` is one field's values for a whole batch.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def __reduce__(self) -> str:
        return self.name


MISSING = _Sentinel("MISSING")  # the field is absent
OTHER = _Sentinel("OTHER")  # present, but an array / map / unset AnyValue: no condition but exists applies


@dataclass(slots=True)
class Column:
    """One field's values for a batch.

    `owners is None`: `values[i]` belongs to record i. Otherwise `owners[j]` is the
    bitmask of records that value j belongs to (a resource attribute is shared by a
    range of records; a data point attribute belongs to one metric among several values).
    """

    values: list[Any]
    owners: list[int] | None = None


_NUMBER_TYPES = ({int}, {float}, {int, float})


def only_numbers(values: list[Any]) -> bool:
    """Every value an int or a float (bools excluded: they never compare as numbers)."""
    return set(map(type, values)) in _NUMBER_TYPES


def string_view(value: Any) -> str | None:
    """What string conditions see: non-empty strings, and bytes as lowercase hex."""
    if value.__class__ is str:
        return value or None
    if value.__class__ is bytes:
        return value.hex() or None
    return None


class PlainStringValues:
    """Transform value conversions for batch views whose values are plain Python strings
    (Datadog logs, edge-tail lines), unlike OTLP's AnyValue wrappers."""

    @staticmethod
    def string_value(text: str) -> str:
        return text

    @staticmethod
    def string_of(value: Any) -> str | None:
        return value if value.__class__ is str else None


def json_copy(value: Any) -> Any:
    """A deep copy of parsed JSON (an orjson round trip: ~7x cheaper than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(value))


def json_any_value(value: Any) -> Any:
    """An OTLP-JSON AnyValue object -> typed Python value."""
    if not value or value.__class__ is not dict:
        return MISSING
    if "stringValue" in value:
        s = value["stringValue"]
        return s if s.__class__ is str else OTHER
    if "intValue" in value:
        try:
            return int(value["intValue"])
        except (TypeError, ValueError):
            return OTHER
    if "doubleValue" in value:
        try:
            return float(value["doubleValue"])
        except (TypeError, ValueError):
            return OTHER
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "bytesValue" in value:
        try:
            return base64.b64decode(value["bytesValue"], validate=True)
        except (binascii.Error, TypeError, ValueError):
            return OTHER
    return OTHER


def json_string_view(value: Any) -> str:
    """string_view(json_any_value(v)) with "" for no string, fast for the common string case."""
    if value.__class__ is dict:
        s = value.get("stringValue")
        if s is not None:
            return s if s.__class__ is str else ""
        if "bytesValue" in value:
            return string_view(json_any_value(value)) or ""
    return ""


def hex_id_bytes(text: Any) -> Any:
    """A JSON hex id (traceId/spanId) -> bytes; MISSING when empty, OTHER when not hex."""
    if not text:
        return MISSING
    try:
        return bytes.fromhex(text)
    except (TypeError, ValueError):
        return OTHER


def proto_any_value(value: Any) -> Any:
    """An OTLP protobuf AnyValue -> typed Python value."""
    which = value.WhichOneof("value")
    if which is None:
        return MISSING
    if which in ("array_value", "kvlist_value"):
        return OTHER
    return getattr(value, which)


def scalar(value: Any) -> Any:
    """A proto3 scalar field: empty means absent."""
    return value if value else MISSING
