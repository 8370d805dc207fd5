"""What an OTLP input file is, guessed from its bytes: its encoding and, for JSON, its signal.

`edge-policy eval` uses this to pick the encoding when `--format` is not given and to warn
when the batch is not the signal asked for: a traces body evaluated as logs has no log
records, so every policy silently "passes" it and the mistake would go unnoticed.
"""

from __future__ import annotations

from typing import Any

import orjson

# The top-level key of each OTLP/JSON export request (lowerCamelCase as written by the SDKs,
# snake_case as proto-JSON also allows).
_SIGNAL_KEYS = {
    "resourceLogs": "log", "resource_logs": "log",
    "resourceMetrics": "metric", "resource_metrics": "metric",
    "resourceSpans": "trace", "resource_spans": "trace",
}


def encoding_of(body: bytes) -> str:
    """`protobuf` when the body starts like an OTLP export request (field 1, length-delimited), else `json`.

    Anything else is called JSON, so text that is neither is reported as bad JSON, the
    likelier mistake for a file someone typed.
    """
    if body.lstrip()[:1] in (b"{", b"["):
        return "json"
    return "protobuf" if body[:1] == b"\x0a" else "json"


def json_signal(body: bytes) -> str | None:
    """The signal of an OTLP/JSON body (`log`, `metric`, `trace`), or None when it cannot tell."""
    try:
        doc: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(doc, dict):
        return None
    found = {_SIGNAL_KEYS[key] for key in doc if key in _SIGNAL_KEYS}
    return found.pop() if len(found) == 1 else None
