"""POST /api/v2/logs and /api/v2/series: Datadog agents point at edge unchanged.

The request handling is the OTLP route's (413 over `max_body_size`, 502/504 from the
upstream, headers such as DD-API-KEY forwarded and never logged, everything dropped
answered 200 `{}` without an upstream call, records counted in the proxy metrics); only
the codec differs: Datadog JSON through `edge.engine.datadog_codec`. Fail-open: an
unknown Content-Encoding, a protobuf body, a payload that is not JSON of the expected
shape or an internal error forwards the original bytes untouched.
"""

from __future__ import annotations

import logging
from typing import Any

from edge.engine.codec import UndecodableBody, is_protobuf
from edge.engine.datadog_codec import evaluate
from edge.policy.model import LOG, METRIC
from edge.protocols.encoding import codec_of, decode, encode
from edge.protocols.metrics import Metrics
from edge.protocols.otlp import DROPPED, OtlpRoute
from edge.protocols.upstream import RequestHead, Upstream

log = logging.getLogger(__name__)

LOGS_PATH = "/api/v2/logs"
SERIES_PATH = "/api/v2/series"


class DatadogRoute(OtlpRoute):
    """One Datadog intake endpoint: the OTLP route's request handling with the Datadog codec."""

    def __init__(self, signal: str, route: str, base_url: str, runtime: Any, upstream: Upstream,
                 metrics: Metrics) -> None:
        super().__init__(signal, base_url, runtime, upstream, metrics)
        self.route = route

    def filter(self, body: bytes, head: RequestHead) -> bytes | None:
        """The bytes to forward (the original ones whenever nothing changed), or DROPPED."""
        try:
            engine = self.runtime.engine()
            if engine is None or not engine.snapshot.targets(self.signal):
                return body  # nothing to do: never parse
            if is_protobuf(head.content_type):
                return body  # the agent's protobuf series payload: forwarded unfiltered
            codec = codec_of(head.content_encoding)
            if codec is None:
                return body  # deflate, br, ...: forwarded raw and unfiltered
            decoded = decode(body, codec, self.max_decoded)
            if decoded is None:
                log.debug("Datadog %s body not decodable as %r within %d bytes: forwarded raw",
                          self.signal, codec, self.max_decoded)
                return body
            try:
                result = evaluate(engine, self.signal, decoded)
            except UndecodableBody as exc:
                log.debug("forwarding an undecodable Datadog %s body raw: %s", self.signal, exc)
                return body
            outcome = result.outcome
            if outcome.total:
                self.metrics.records(self.signal, outcome.total, outcome.kept)
                if not outcome.kept:
                    return DROPPED
            if result.body is decoded:
                return body  # unchanged: the original (still compressed) bytes
            return encode(result.body, codec)
        except Exception:  # noqa: BLE001 - fail-open: the original batch goes on
            log.exception("filtering a Datadog %s batch failed; forwarding it unmodified", self.signal)
            return body


def datadog_routes(runtime: Any, upstream: Upstream, metrics: Metrics) -> dict[str, dict[str, DatadogRoute]]:
    """The Datadog routes of the app: logs go to `logs_url`, series to `metrics_url` (same path and query)."""
    config = runtime.config
    return {
        LOGS_PATH: {"POST": DatadogRoute(LOG, "datadog_logs", config.logs_url, runtime, upstream, metrics)},
        SERIES_PATH: {"POST": DatadogRoute(METRIC, "datadog_series", config.metrics_url, runtime, upstream,
                                           metrics)},
    }
