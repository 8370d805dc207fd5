"""Typed field values that every format's batch view hands the engine.

All views (OTLP JSON and protobuf, Datadog, tailed lines, Prometheus) hand the evaluator
the same Python types, so every condition is written once: `str`, `int`, `float`, `bool`,
`bytes`, `OTHER` for arrays and maps, and `MISSING` for an absent field. A `Column` is
one field's values for a whole batch. Turning a format's own encoding into these values
is the format's business (`edge.formats.*`); nothing here knows a wire format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
    """`LogBatch.string_value` / `string_of` for views whose stored values are plain Python
    strings (Datadog logs, tailed lines), unlike OTLP's AnyValue wrappers."""

    @staticmethod
    def string_value(text: str) -> str:
        return text

    @staticmethod
    def string_of(value: Any) -> str | None:
        return value if value.__class__ is str else None
