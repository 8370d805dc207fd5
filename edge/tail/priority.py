"""Which forwarded records are urgent: errors go to the target before the rest of a backlog.

When the target is slower than the input (or down for a while), the records waiting are
not equal: an error or a crash report matters more, and sooner, than the info lines
around it. A record is urgent when its severity is ERROR or above (OTLP severity number
17 and up: ERROR, CRITICAL, FATAL, ALERT, EMERGENCY, PANIC and their short forms), or when
its body contains "critical" in any case (raw lines have no parsed severity). Urgent
records travel in their own batches, sent oldest first and before any other batch
(`edge.tail.forward`); without a backlog there is nothing to overtake and the order barely
changes.
"""

from __future__ import annotations

from edge.formats.lines.records import Record

ERROR_SEVERITY = 17  # OTLP SEVERITY_NUMBER_ERROR; everything above it is worse


def is_urgent(record: Record) -> bool:
    if record.severity_number >= ERROR_SEVERITY:
        return True
    body = record.body
    kind = body.__class__
    if kind is str:
        return "critical" in body.lower()
    if kind is bytes:
        return b"critical" in body.lower()
    return False
