"""Helpers for formats whose documents are parsed JSON (OTLP/JSON, Datadog)."""

from __future__ import annotations

from typing import Any

import orjson


def json_copy(value: Any) -> Any:
    """A deep copy of parsed JSON (an orjson round trip: ~7x cheaper than copy.deepcopy)."""
    return orjson.loads(orjson.dumps(value))


__all__ = ["json_copy"]
