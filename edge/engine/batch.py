"""The batch interface: everything the engine asks of a wire format's view of one request.

The engine never walks a document. Each format (`edge.formats.*`) wraps its decoded
request in a view that answers these calls, and the engine is written against them
alone, so formats and engine change independently. The interface is layered by need:

- `Matchable`: what condition matching reads (record count, columns). The Prometheus
  exposition views stop here: they are matched, never decided or rewritten.
- `Batch`: a whole request the engine decides on: keep a subset, tell whether the
  document changed, export records for extensions. Metric batches are plain `Batch`es.
- `LogBatch`: plus the per-record accessors log transforms need.
- `TraceBatch`: plus the trace id and tracestate that trace sampling reads and writes.

These are `Protocol`s for the type checker and for the conformance test that holds every
format's views to them (tests/test_batch_interface.py); nothing on the request path
checks them at run time, so views pay no indirection for declaring them.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeAlias, runtime_checkable

from edge.engine.values import Column
from edge.policy.model import FieldKey

# A field value as the format stores it (an OTLP/JSON AnyValue dict, a protobuf AnyValue,
# a plain JSON value...): transforms move such values around without looking inside,
# and go through `string_of` / `string_value` when they do need the text.
FormatValue: TypeAlias = Any


@runtime_checkable
class Matchable(Protocol):
    """Records as condition matching sees them: one column of values per field key."""

    n: int  # records in the batch
    full: int  # the mask with every record's bit set

    def column(self, key: FieldKey) -> Column:
        """Typed values (`MISSING`, `OTHER`, str, int, float, bool, bytes) of `key` for every record."""
        ...

    def strings(self, key: FieldKey) -> Column:
        """What string conditions see of `key`: the string view of each value, "" for none."""
        ...


@runtime_checkable
class Batch(Matchable, Protocol):
    """A request the engine decides on; `keep_only` is its one structural change."""

    changed: bool  # records were dropped or modified: the caller must re-serialise

    def keep_only(self, alive: int) -> None:
        """Drop every record whose bit is clear in `alive` (sets `changed` when any goes)."""
        ...

    def export(self, i: int) -> dict[str, Any]:
        """A standalone copy of record i as `{"resource": ..., "scope": ..., "record": ...}` for extensions."""
        ...


@runtime_checkable
class LogBatch(Batch, Protocol):
    """Log records that transforms (docs/policies.md §5) read and rewrite one field at a time."""

    def get(self, i: int, key: FieldKey) -> FormatValue | None:
        """Record i's value of `key`, or None when absent."""
        ...

    def set(self, i: int, key: FieldKey, value: FormatValue) -> bool:
        """Store `value`; False when the record cannot hold the field (nothing changed)."""
        ...

    def delete(self, i: int, key: FieldKey) -> bool:
        """Remove the field; False when it was absent."""
        ...

    def string_value(self, text: str) -> FormatValue:
        """`text` as a value this format stores."""
        ...

    def string_of(self, value: FormatValue) -> str | None:
        """The text of a stored value, or None when it is not a string."""
        ...


@runtime_checkable
class TraceBatch(Batch, Protocol):
    """Spans, whose sampling decision reads the trace id and rewrites the tracestate (docs/policies.md §6)."""

    def trace_id(self, i: int) -> bytes | None:
        """Span i's trace id, or None when absent or malformed."""
        ...

    def trace_state(self, i: int) -> str:
        """Span i's W3C tracestate ("" when absent)."""
        ...

    def set_trace_state(self, i: int, value: str) -> None:
        """Rewrite span i's tracestate (sets `changed` when it differs)."""
        ...


__all__ = ["Batch", "FormatValue", "LogBatch", "Matchable", "TraceBatch"]
