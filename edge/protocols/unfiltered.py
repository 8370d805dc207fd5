"""Requests edge cannot filter: forwarded as received (fail-open) or refused, never in silence.

A body too large once decoded, in a codec edge does not decode, not readable as its
protocol, nested deeper than its parser goes, or one whose evaluation failed reaches the
upstream without the policies applied. Where the policies are compliance controls
(redaction) that must not happen unnoticed: every such request is counted per route and
reason in `edge_unfiltered_requests_total` and logged at warn (one line per route and
reason per 10 s, with a count), and with `unfiltered: reject` it is refused instead, with
a status the sender will not retry in vain (413, 415, 400; 500 for an internal error) and
a one-line plain-text body naming the reason (docs/configuration.md "Unfiltered requests").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edge.logs import RateLimitedLog
from edge.protocols.self_metrics import Metrics

log = logging.getLogger(__name__)
_warnings = RateLimitedLog(log)

FORWARD = "forward"
REJECT = "reject"
TEXT = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a request could not be filtered: its metric label, its status under `reject`, what it means."""

    name: str
    status: int
    text: str

    def message(self) -> bytes:
        """The body of the refusal: the reason's label and what it means, on one line."""
        return f"refused unfiltered ({self.name}): {self.text}\n".encode()


DECODE_LIMIT = Reason("decode_limit", 413, "the body is larger than max_decoded_bytes once decoded")
UNKNOWN_CODEC = Reason("unknown_codec", 415, "the Content-Encoding is not one edge decodes")
UNSUPPORTED_FORMAT = Reason("unsupported_format", 415, "the Content-Type is not one edge filters on this route")
UNDECODABLE = Reason("undecodable", 400, "the body cannot be decoded as its Content-Encoding and Content-Type")
DEPTH_LIMIT = Reason("depth_limit", 413, "the body nests deeper than edge parses")
INTERNAL_ERROR = Reason("internal_error", 500, "evaluating the policies failed")
REASONS = (DECODE_LIMIT, UNKNOWN_CODEC, UNSUPPORTED_FORMAT, UNDECODABLE, DEPTH_LIMIT, INTERNAL_ERROR)


class Refused(Exception):
    """Raised under `unfiltered: reject`: the route answers `reason` instead of forwarding."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.name)
        self.reason = reason


def note(metrics: Metrics, route: str, signal: str, reject: bool, reason: Reason, detail: str = "") -> None:
    """Count and log one request the policies were not applied to; raises Refused when `reject`."""
    metrics.unfiltered(route, signal, reason.name)
    action = "refused" if reject else "forwarded unfiltered"
    args = (route, action, reason.name, reason.text, f"; {detail[:200]}" if detail else "")
    if not _warnings.log(logging.WARNING, f"{route}:{reason.name}", "%s request %s (%s): %s%s", *args):
        log.debug("%s request %s (%s): %s%s", *args)  # folded into the next warning; each one at debug
    if reject:
        raise Refused(reason)


def refusal(resp: Any, reason: Reason) -> None:
    """The answer to a request refused under `unfiltered: reject`."""
    resp.status = reason.status
    resp.content_type = TEXT
    resp.data = reason.message()
