"""OTLP/JSON values (AnyValue objects, hex ids) as the engine's typed values.

The per-value conversions of the JSON view; `json_columns` holds their whole-column
C-speed versions for regular batches, and both must give the same results.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from edge.engine.values import MISSING, OTHER, string_view


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


__all__ = ["hex_id_bytes", "json_any_value", "json_string_view"]
