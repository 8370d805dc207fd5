"""Spans counted in serialised `ExportTraceServiceRequest`s, without decoding them.

A trace read back from the write-ahead log comes as payloads only; the buffer's and the
exporters' span counters need its spans, which a walk over the envelopes' fields gives at
a fraction of a parse's cost.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge.formats.protobuf_wire import LENGTH, WireError, fields, tag

# The envelope of spans on the wire (a logs request's has the same numbers: resource_logs, scope_logs,
# log_records), which `edge.tailsampling.grouping` walks too.
RESOURCE_SPANS = tag(1, LENGTH)  # ExportTraceServiceRequest.resource_spans
SCOPE_SPANS = tag(2, LENGTH)  # ResourceSpans.scope_spans
SPANS = tag(2, LENGTH)  # ScopeSpans.spans


def span_count(payloads: Iterable[bytes]) -> int:
    """The spans in the payloads (a payload that does not parse counts what it held up to the damage)."""
    total = 0
    for payload in payloads:
        try:
            for key, _, start, end in fields(payload):
                if key == RESOURCE_SPANS:
                    total += _in_resource(payload, start, end)
        except WireError:
            continue
    return total


def _in_resource(data: bytes, start: int, end: int) -> int:
    count = 0
    for key, _, scope_start, scope_end in fields(data, start, end):
        if key == SCOPE_SPANS:
            count += sum(1 for k, *_ in fields(data, scope_start, scope_end) if k == SPANS)
    return count
