"""OTLP/JSON to protobuf and back, for an OTLP/HTTP JSON client whose signal goes to a gRPC upstream.

Everywhere else edge never converts one encoding into the other (`edge.formats.otlp.body`);
a gRPC upstream takes only protobuf, so a JSON request is converted before the call and the
upstream's response after it. OTLP/JSON is protobuf's JSON mapping except for trace and span
ids, which it spells in hex where the mapping has base64: they are rewritten first. Unknown
fields are ignored, as the OTLP specification asks of receivers.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from edge.formats.otlp.proto_batch import REQUESTS

RESPONSES = {"log": ExportLogsServiceResponse, "metric": ExportMetricsServiceResponse,
             "trace": ExportTraceServiceResponse}
ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})  # records, links and exemplars


class NotConvertible(Exception):
    """The body is not an OTLP/JSON request of the signal."""


def request_to_protobuf(signal: str, body: bytes) -> bytes:
    """An OTLP/JSON `Export*ServiceRequest` as protobuf; raises NotConvertible."""
    try:
        doc = orjson.loads(body)
        if not isinstance(doc, dict):
            raise NotConvertible(f"not an OTLP/JSON {signal} request: not an object")
        _base64_ids(doc)
        message = REQUESTS[signal]()
        json_format.ParseDict(doc, message, ignore_unknown_fields=True)
        return message.SerializeToString()
    except NotConvertible:
        raise
    except (orjson.JSONDecodeError, json_format.ParseError, ValueError, TypeError, RecursionError) as exc:
        raise NotConvertible(f"not an OTLP/JSON {signal} request: {str(exc).splitlines()[0]}") from None


def response_to_json(signal: str, data: bytes) -> bytes:
    """An `Export*ServiceResponse` (partial success included) as OTLP/JSON; `{}` when empty."""
    return orjson.dumps(json_format.MessageToDict(RESPONSES[signal].FromString(data)))


def _base64_ids(doc: dict[str, Any]) -> None:
    """Rewrite every hex id in place (a walk with its own stack: nesting depth is the client's choice)."""
    stack: list[Any] = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(item for item in node if isinstance(item, (dict, list)))
            continue
        for key, value in node.items():
            if key in ID_KEYS and isinstance(value, str):
                node[key] = base64.b64encode(bytes.fromhex(value)).decode()  # ValueError: not hex
            elif isinstance(value, (dict, list)):
                stack.append(value)
