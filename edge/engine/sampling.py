"""Consistent-probability sampling math (docs/policies.md §4 and §6).

56-bit randomness R and rejection thresholds T: keep when R >= T. Thresholds are
written to the `ot` tracestate entry as `th:<hex>` so downstream samplers agree.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from edge.policy.model import TraceKeep
from edge.proto.tero.policy.v1 import policy_pb2 as pb

BITS = 56
SPACE = 1 << BITS  # 2^56
MASK = SPACE - 1
_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_HEX = re.compile(r"^[0-9a-f]{1,14}$")


def fnv1a64(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & 0xFFFFFFFFFFFFFFFF
    return h


def threshold(percentage: float) -> int:
    """T = floor((1 - p/100) * 2^56), clamped to [0, 2^56]."""
    if percentage >= 100:
        return 0
    if percentage <= 0:
        return SPACE
    return math.floor((1 - percentage / 100) * SPACE)


def randomness_of_trace_id(trace_id: bytes) -> int:
    """The last 7 bytes of a trace id, big-endian."""
    return int.from_bytes(trace_id[-7:], "big")


def randomness_of_key(value: bytes) -> int:
    return fnv1a64(value) & MASK


def encode_threshold(t: int, precision: int) -> str:
    """14 lowercase hex digits truncated to `precision`, trailing zeros stripped, "0" if empty."""
    digits = f"{t:014x}"[:precision].rstrip("0")
    return digits or "0"


def parse_threshold(text: str) -> int | None:
    """1..14 hex digits, right-padded with zeros to 14; None when malformed."""
    if not _HEX.match(text):
        return None
    return int(text.ljust(14, "0"), 16)


def parse_randomness(text: str) -> int | None:
    if len(text) != 14 or not _HEX.match(text):
        return None
    return int(text, 16)


# ── tracestate ─────────────────────────────────────────────────────────────


@dataclass(slots=True)
class TraceState:
    """A W3C tracestate split into the `ot` entry's sub-keys and every other vendor's entry."""

    ot: list[tuple[str, str]]
    others: list[str]

    @classmethod
    def parse(cls, text: str) -> TraceState:
        ot: list[tuple[str, str]] = []
        others: list[str] = []
        for entry in text.split(","):
            entry = entry.strip()
            if not entry:
                continue
            if entry.startswith("ot="):
                for part in entry[3:].split(";"):
                    if part:
                        key, _, value = part.partition(":")
                        ot.append((key, value))
            else:
                others.append(entry)
        return cls(ot, others)

    def get(self, key: str) -> str | None:
        return next((v for k, v in self.ot if k == key), None)

    def with_threshold(self, th: str | None) -> str:
        """Rebuild: `ot=` first with sub-keys in order, old th replaced by th (last), others after."""
        subkeys = [(k, v) for k, v in self.ot if k != "th"]
        if th is not None:
            subkeys.append(("th", th))
        entries = []
        if subkeys:
            entries.append("ot=" + ";".join(f"{k}:{v}" for k, v in subkeys))
        return ",".join(entries + self.others)


@dataclass(slots=True)
class TraceDecision:
    keep: bool
    tracestate: str | None  # the rewritten tracestate for kept spans (None: leave as is)


def decide_span(keep: TraceKeep, trace_id: bytes | None, tracestate: str) -> TraceDecision:
    """Sampling decision for one span under one policy's config (docs/policies.md §6)."""
    p = keep.percentage
    if p <= 0:
        return TraceDecision(False, None)
    state = TraceState.parse(tracestate) if tracestate else TraceState([], [])
    if p >= 100:
        return TraceDecision(True, state.with_threshold(encode_threshold(0, keep.precision)))
    rv_text, th_text = state.get("rv"), state.get("th")
    rv = parse_randomness(rv_text) if rv_text is not None else None
    th = parse_threshold(th_text) if th_text is not None else None
    inconsistent = rv is not None and th is not None and rv < th
    if inconsistent:
        th = None  # an upstream threshold that contradicts rv is erased; this span is kept
    has_trace_id = bool(trace_id) and any(trace_id)
    if keep.mode == pb.SAMPLING_MODE_HASH_SEED and keep.hash_seed and has_trace_id:
        r = fnv1a64(trace_id + keep.hash_seed.to_bytes(4, "little")) & MASK
    elif rv is not None:
        r = rv
    elif has_trace_id:
        r = randomness_of_trace_id(trace_id)
    else:
        return TraceDecision(not keep.fail_closed, None)
    t = threshold(p)
    incoming = th or 0
    if keep.mode == pb.SAMPLING_MODE_PROPORTIONAL:
        p_s = (SPACE - incoming) / SPACE
        t = SPACE - math.floor(p / 100 * p_s * SPACE)
    elif keep.mode == pb.SAMPLING_MODE_EQUALIZING and incoming > t:
        return TraceDecision(True, state.with_threshold(encode_threshold(incoming, keep.precision)))
    if r < t and not inconsistent:
        return TraceDecision(False, None)
    return TraceDecision(True, state.with_threshold(encode_threshold(t, keep.precision)))
