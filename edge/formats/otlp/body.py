"""Bytes in, bytes out: decode an OTLP body, evaluate it, encode what is left.

JSON bodies are parsed with orjson and protobuf bodies with the upb-backed OTLP
messages; neither is ever converted into the other. When nothing was dropped or
changed the original bytes are returned untouched.
"""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

import orjson

from edge.engine.engine import Engine, Outcome
from edge.formats.errors import BatchShapeError, NestedTooDeep, UndecodableBody
from edge.formats.evaluated import Evaluated
from edge.formats.otlp.json_batch import JsonLogs, JsonMetrics, JsonTraces

log = logging.getLogger(__name__)

ORJSON_DEPTH = "depth limit exceeded"  # orjson's message for JSON nested over 1024 levels
JSON_BATCHES = {"log": JsonLogs, "metric": JsonMetrics, "trace": JsonTraces}


def is_protobuf(content_type: str | None) -> bool:
    return bool(content_type) and "protobuf" in content_type.lower()


def evaluate(engine: Engine, signal: str, body: bytes, content_type: str | None) -> Evaluated:
    """Evaluate one OTLP body; raises UndecodableBody when it cannot be parsed.

    An internal error while evaluating is fail-open: it is logged and the original bytes
    go on unchanged, never a dropped or half-transformed batch.
    """
    try:
        return _evaluate(engine, signal, body, content_type)
    except UndecodableBody:
        raise
    except Exception:  # noqa: BLE001 - fail-open is the contract (docs/policies.md §8)
        log.exception("policy evaluation failed; forwarding the %s batch unmodified", signal)
        return Evaluated(body, Outcome(0, 0, False), failed=True)


@cache
def _protobuf_views() -> tuple[dict[str, Any], Any]:
    """The protobuf batch views, imported on first use (a process that only ever sees JSON never
    loads them) and then held: an import statement per batch cost half a microsecond."""
    from edge.formats.otlp.proto_batch import PROTO_BATCHES, parse_request

    return PROTO_BATCHES, parse_request


def _evaluate(engine: Engine, signal: str, body: bytes, content_type: str | None) -> Evaluated:
    if is_protobuf(content_type):
        batches, parse_request = _protobuf_views()
        try:
            message = parse_request(signal, body)
        except BatchShapeError as exc:
            raise UndecodableBody(f"not an OTLP/protobuf {signal} request: {exc}") from None
        batch = batches[signal](message)
        outcome = engine.evaluate(signal, batch)
        return Evaluated(message.SerializeToString() if outcome.changed else body, outcome)
    try:
        doc = orjson.loads(body)
        batch = JSON_BATCHES[signal](doc)
    except (orjson.JSONDecodeError, BatchShapeError) as exc:
        if isinstance(exc, orjson.JSONDecodeError) and str(exc).startswith(ORJSON_DEPTH):
            raise NestedTooDeep(f"OTLP/JSON {signal} request: {exc}") from None
        raise UndecodableBody(f"not an OTLP/JSON {signal} request: {exc}") from None
    outcome = engine.evaluate(signal, batch)
    return Evaluated(orjson.dumps(doc) if outcome.changed else body, outcome)


def evaluate_body(engine: Engine, signal: str, body: bytes, content_type: str | None) -> bytes:
    return evaluate(engine, signal, body, content_type).body
