"""Bytes in, bytes out for Datadog payloads: decode, evaluate, write what is left.

A body is decoded twice by msgspec: once into Python objects for the batch view, and,
only when something was dropped or changed, once into raw spans (`msgspec.Raw`, views
of the original bytes without building objects). Kept records that no transform
touched are written back as those spans, so they leave byte for byte as they came;
only changed records are re-encoded. When nothing was dropped or changed the original
body is returned untouched. Both decodes use the same parser, so they always agree on
what the records are.

Protobuf series (the agent's `MetricPayload`) are parsed once into the upb-backed message,
cut down in place and serialised again: fields edge does not declare travel as protobuf
unknown fields, so they leave as they came.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from edge.engine.engine import Engine, Outcome
from edge.formats.datadog.batch import DatadogLogs, DatadogSeries, encode_json
from edge.formats.datadog.proto_series import DatadogProtoSeries, parse_payload
from edge.formats.errors import BatchShapeError, UndecodableBody
from edge.formats.evaluated import Evaluated
from edge.policy.model import LOG, METRIC

log = logging.getLogger(__name__)

_decode = msgspec.json.Decoder().decode
_decode_spans = msgspec.json.Decoder(list[msgspec.Raw]).decode
_decode_members = msgspec.json.Decoder(dict[str, msgspec.Raw]).decode

SERIES_KEY = "series"


def json_array(parts: list[Any]) -> bytes:
    """`[part,part,...]` from encoded JSON values (bytes or msgspec.Raw)."""
    return b"[" + b",".join(parts) + b"]"


def _logs_output(body: bytes, batch: DatadogLogs) -> bytes:
    return json_array(batch.kept_parts(_decode_spans(body)))


def _series_output(body: bytes, batch: DatadogSeries) -> bytes:
    """The payload object with its `series` array cut down; every other member as it came."""
    members = _decode_members(body)
    members[SERIES_KEY] = json_array(batch.kept_parts(_decode_spans(members[SERIES_KEY])))
    parts = []
    for name, value in members.items():
        parts += (encode_json(name), b":", value, b",")
    parts[-1] = b"}"
    return b"{" + b"".join(parts)


VIEWS = {LOG: (DatadogLogs, _logs_output), METRIC: (DatadogSeries, _series_output)}


def _proto_series_output(body: bytes, batch: DatadogProtoSeries) -> bytes:
    return batch.message.SerializeToString()


def evaluate(engine: Engine, signal: str, body: bytes, protobuf: bool = False) -> Evaluated:
    """Evaluate one Datadog logs (`log`) or series (`metric`) body; `protobuf`: a MetricPayload series body.

    Raises UndecodableBody when it is not a payload of the expected shape; the caller
    forwards it raw. An internal error while evaluating is fail-open: it is logged and the
    original bytes go on unchanged, never a dropped or half-transformed batch.
    """
    try:
        if protobuf and signal == METRIC:
            batch: Any = DatadogProtoSeries(parse_payload(body))
            output: Any = _proto_series_output
        else:
            view, output = VIEWS[signal]
            batch = view(_decode(body))
    except (msgspec.DecodeError, BatchShapeError) as exc:
        raise UndecodableBody(f"not a Datadog {signal} payload: {exc}") from None
    try:
        outcome = engine.evaluate(signal, batch)
        return Evaluated(output(body, batch) if outcome.changed else body, outcome)
    except Exception:  # noqa: BLE001 - fail-open is the contract (docs/policies.md §8)
        log.exception("policy evaluation failed; forwarding the Datadog %s batch unmodified", signal)
        return Evaluated(body, Outcome(0, 0, False), failed=True)


__all__ = ["evaluate", "json_array"]
