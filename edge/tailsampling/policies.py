"""One evaluator per `tail_sampling` policy type, with the Collector's semantics (docs/tail-sampling.md "Policy types").

An evaluator answers with one of the Collector's five outcomes, because the final decision
(`decider`) ranks them: a matching `drop` beats an inverted not-sample, which beats any
sample. The stateful types (`rate_limiting`, `bytes_limiting`, `composite`) keep their
per-second budgets in the evaluator; the sampler decides from one thread, so they take no lock.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, auto
from fractions import Fraction
from typing import Any, Protocol

from opentelemetry.proto.trace.v1.trace_pb2 import Status

from edge.tailsampling.interfaces import TraceId
from edge.tailsampling.policy_config import DEFAULT_REGEX_CACHE, Policy, compile_regex
from edge.tailsampling.trace_view import AttributeValue, TraceView

Clock = Callable[[], float]  # wall-clock seconds: budgets are per calendar second, as in the Collector
MS = 1_000_000  # nanoseconds


class Verdict(Enum):
    """A policy's outcome, as the Collector names them."""

    SAMPLED = auto()
    NOT_SAMPLED = auto()
    INVERT_SAMPLED = auto()  # an invert_match policy found no matching value
    INVERT_NOT_SAMPLED = auto()  # an invert_match policy found one: vetoes every sample at the top level
    DROPPED = auto()  # a drop policy whose sub-policies all sampled: vetoes everything


SAMPLES = frozenset({Verdict.SAMPLED, Verdict.INVERT_SAMPLED})


class Evaluator(Protocol):
    """A compiled policy."""

    def evaluate(self, trace: TraceView) -> Verdict:
        ...


def compile_policy(policy: Policy, clock: Clock) -> Evaluator:
    """The evaluator of a policy validated by `policy_config` (its defaults are filled in)."""
    kind = policy["type"]
    return _BUILDERS[kind](policy[kind], clock)


def attribute_keys(policies: Sequence[Policy]) -> frozenset[str]:
    """The attribute keys the policies read, sub-policies included: all a trace view must gather."""
    keys: set[str] = set()
    for policy in policies:
        spec = policy[policy["type"]]
        if policy["type"] in ("numeric_attribute", "string_attribute", "boolean_attribute"):
            keys.add(spec["key"])
        for field in ("and_sub_policy", "drop_sub_policy", "composite_sub_policy"):
            keys |= attribute_keys(spec.get(field, ()))
    return frozenset(keys)


def _sampled(condition: bool) -> Verdict:
    return Verdict.SAMPLED if condition else Verdict.NOT_SAMPLED


# ── stateless types ──


class AlwaysSample:
    def evaluate(self, trace: TraceView) -> Verdict:
        return Verdict.SAMPLED


@dataclass(frozen=True, slots=True)
class Latency:
    """threshold ≤ duration, and duration < upper when an upper bound is set."""

    threshold_ns: int
    upper_ns: int  # 0: none

    def evaluate(self, trace: TraceView) -> Verdict:
        duration = trace.duration_ns
        return _sampled(duration >= self.threshold_ns and (not self.upper_ns or duration < self.upper_ns))


@dataclass(frozen=True, slots=True)
class StatusCode:
    codes: frozenset[int]

    def evaluate(self, trace: TraceView) -> Verdict:
        return _sampled(not self.codes.isdisjoint(trace.status_codes))


@dataclass(frozen=True, slots=True)
class SpanCount:
    min_spans: int
    max_spans: int  # 0: none

    def evaluate(self, trace: TraceView) -> Verdict:
        count = trace.span_count
        return _sampled(count >= self.min_spans and (not self.max_spans or count <= self.max_spans))


@dataclass(frozen=True, slots=True)
class TraceState:
    """A span's W3C tracestate (`k1=v1,k2=v2`) holds `key` with one of `values`."""

    key: str
    values: frozenset[str]

    def evaluate(self, trace: TraceView) -> Verdict:
        return _sampled(any(self._holds(header) for header in trace.trace_states))

    def _holds(self, header: str) -> bool:
        for member in header.split(","):
            key, sep, value = member.strip().partition("=")
            if sep and key == self.key and value in self.values:
                return True
        return False


@dataclass(frozen=True, slots=True)
class AttributeMatch:
    """numeric_attribute, string_attribute and boolean_attribute: any span or resource value of `key` matches.

    With `invert`, a match means INVERT_NOT_SAMPLED and no match INVERT_SAMPLED (the Collector's inversion)."""

    key: str
    matches: Callable[[AttributeValue], bool]
    invert: bool

    def evaluate(self, trace: TraceView) -> Verdict:
        found = any(map(self.matches, trace.values(self.key)))
        if self.invert:
            return Verdict.INVERT_NOT_SAMPLED if found else Verdict.INVERT_SAMPLED
        return _sampled(found)


def _in_range(low: float, high: float) -> Callable[[AttributeValue], bool]:
    def matches(value: AttributeValue) -> bool:
        return value.__class__ in (int, float) and low <= value <= high  # bool is an int to Python, not here
    return matches


def _equals_one_of(values: frozenset[str]) -> Callable[[AttributeValue], bool]:
    def matches(value: AttributeValue) -> bool:
        return value.__class__ is str and value in values
    return matches


def _is(expected: bool) -> Callable[[AttributeValue], bool]:
    def matches(value: AttributeValue) -> bool:
        return value.__class__ is bool and value == expected
    return matches


class RegexMatch:
    """Any of the RE2 patterns matches (unanchored), remembering the last `cache_size` strings' answers.

    The cache matters because attribute values repeat (service names, routes) while a
    set of patterns costs one search each per value."""

    def __init__(self, patterns: Sequence[str], cache_size: int) -> None:
        self._patterns = [compile_regex(p) for p in patterns]
        self._cache: OrderedDict[str, bool] = OrderedDict()
        self._cache_size = cache_size

    def __call__(self, value: AttributeValue) -> bool:
        if value.__class__ is not str:
            return False
        known = self._cache.get(value)
        if known is not None:
            self._cache.move_to_end(value)
            return known
        found = any(p.search(value) is not None for p in self._patterns)
        self._cache[value] = found
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found


# ── probabilistic: the Collector's hash, so both keep the same traces ──

MAX_UINT64 = (1 << 64) - 1
FNV_OFFSET, FNV_PRIME = 0xCBF29CE484222325, 0x100000001B3
DEFAULT_HASH_SALT = "default-hash-seed"


def fnv1a_64(data: bytes, state: int = FNV_OFFSET) -> int:
    """FNV-1a 64 (Go's hash/fnv New64a), continued from `state`."""
    for byte in data:
        state = ((state ^ byte) * FNV_PRIME) & MAX_UINT64
    return state


def hash_threshold(percentage: float) -> int:
    """`MaxUint64 × percentage/100` as the Collector computes it: a 64-bit big.Float product, truncated."""
    product = Fraction(MAX_UINT64) * Fraction(percentage / 100)
    return min(MAX_UINT64, math.floor(_round_to_bits(product, 64)))


def _round_to_bits(value: Fraction, bits: int) -> Fraction:
    """`value` rounded to `bits` significant bits, ties to even (big.Float's default rounding)."""
    if value <= 0:
        return Fraction(0)
    exponent = value.numerator.bit_length() - value.denominator.bit_length()
    if Fraction(2) ** exponent > value:
        exponent -= 1
    scale = Fraction(2) ** (bits - 1 - exponent)
    return Fraction(round(value * scale)) / scale


class Probabilistic:
    """Sampled when FNV-1a 64 of (salt, trace id) ≤ the threshold: the tail sampling processor's
    internal/sampling/probabilistic.go (opentelemetry-collector-contrib), default salt included."""

    def __init__(self, salt: str, percentage: float) -> None:
        self._salted = fnv1a_64((salt or DEFAULT_HASH_SALT).encode())
        self._threshold = hash_threshold(percentage)

    def evaluate(self, trace: TraceView) -> Verdict:
        return _sampled(self.hash(trace.trace_id) <= self._threshold)

    def hash(self, trace_id: TraceId) -> int:
        return fnv1a_64(trace_id, self._salted)


# ── stateful types: budgets per second ──


class RateLimiting:
    """Sampled while this second's sampled spans, this trace's included, stay under the limit (the Collector's `<`)."""

    def __init__(self, spans_per_second: int, clock: Clock) -> None:
        self._limit = spans_per_second
        self._clock = clock
        self._second = -1
        self._spans = 0

    def evaluate(self, trace: TraceView) -> Verdict:
        second = int(self._clock())
        if second != self._second:
            self._second, self._spans = second, 0
        if self._spans + trace.span_count >= self._limit:
            return Verdict.NOT_SAMPLED
        self._spans += trace.span_count
        return Verdict.SAMPLED


class BytesLimiting:
    """A token bucket of `burst` bytes refilled at `rate` bytes per second; a trace takes its size when it fits."""

    def __init__(self, rate: int, burst: int, clock: Clock) -> None:
        self._rate = rate
        self._burst = burst or 2 * rate
        self._clock = clock
        self._tokens = float(self._burst)
        self._at = clock()

    def evaluate(self, trace: TraceView) -> Verdict:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + max(0.0, now - self._at) * self._rate)
        self._at = now
        if trace.byte_size > self._tokens:
            return Verdict.NOT_SAMPLED
        self._tokens -= trace.byte_size
        return Verdict.SAMPLED


@dataclass(slots=True)
class Share:
    """A composite sub-policy with its slice of the second's spans."""

    evaluator: Evaluator
    allocated: float
    used: int = 0


class Composite:
    """The first sub-policy (in order) that samples the trace and has room in its share takes it.

    Room means the sub-policy's share and the composite's total both hold the trace's spans
    this second; a sub-policy without room lets the next one try."""

    def __init__(self, shares: Sequence[Share], total: int, clock: Clock) -> None:
        self._shares = shares
        self._total = total
        self._clock = clock
        self._second = -1
        self._used = 0

    def evaluate(self, trace: TraceView) -> Verdict:
        second = int(self._clock())
        if second != self._second:
            self._second, self._used = second, 0
            for share in self._shares:
                share.used = 0
        spans = trace.span_count
        for share in self._shares:
            if share.evaluator.evaluate(trace) not in SAMPLES:
                continue
            if share.used + spans <= share.allocated and self._used + spans <= self._total:
                share.used += spans
                self._used += spans
                return Verdict.SAMPLED
        return Verdict.NOT_SAMPLED


def _composite(spec: Mapping[str, Any], clock: Clock) -> Composite:
    """Sub-policies in `policy_order`, then the others; a share is its percent of the total, else an equal share."""
    subs = {sub["name"]: sub for sub in spec["composite_sub_policy"]}
    order = [*spec["policy_order"], *(name for name in subs if name not in spec["policy_order"])]
    total = spec["max_total_spans_per_second"]
    percents = {a["policy"]: a["percent"] for a in spec["rate_allocation"]}
    equal = total / len(subs)
    return Composite([Share(compile_policy(subs[name], clock),
                            total * percents[name] / 100 if percents.get(name) else equal) for name in order],
                     total, clock)


# ── combinations ──


@dataclass(frozen=True, slots=True)
class And:
    """Every sub-policy samples (evaluated in order, stopping at the first that does not)."""

    subs: Sequence[Evaluator]

    def evaluate(self, trace: TraceView) -> Verdict:
        return _sampled(all(sub.evaluate(trace) in SAMPLES for sub in self.subs))


@dataclass(frozen=True, slots=True)
class Drop:
    """Every sub-policy samples → DROPPED: the trace is not sampled, whatever the other policies say."""

    subs: Sequence[Evaluator]

    def evaluate(self, trace: TraceView) -> Verdict:
        matched = all(sub.evaluate(trace) in SAMPLES for sub in self.subs)
        return Verdict.DROPPED if matched else Verdict.NOT_SAMPLED


def _string_matcher(spec: Mapping[str, Any]) -> Callable[[AttributeValue], bool]:
    if spec["enabled_regex_matching"]:
        return RegexMatch(spec["values"], spec["cache_max_size"] or DEFAULT_REGEX_CACHE)
    return _equals_one_of(frozenset(spec["values"]))


def _status_code(name: str) -> int:
    """`ERROR` -> Status.STATUS_CODE_ERROR (2)."""
    return Status.StatusCode.Value(f"STATUS_CODE_{name}")


def _bound(value: float | None, default: float) -> float:
    return default if value is None else value


_BUILDERS: Mapping[str, Callable[[Mapping[str, Any], Clock], Evaluator]] = {
    "always_sample": lambda spec, clock: AlwaysSample(),
    "latency": lambda spec, clock: Latency(spec["threshold_ms"] * MS, spec["upper_threshold_ms"] * MS),
    "status_code": lambda spec, clock: StatusCode(frozenset(_status_code(c) for c in spec["status_codes"])),
    "numeric_attribute": lambda spec, clock: AttributeMatch(
        spec["key"], _in_range(_bound(spec["min_value"], -math.inf), _bound(spec["max_value"], math.inf)),
        spec["invert_match"]),
    "string_attribute": lambda spec, clock: AttributeMatch(spec["key"], _string_matcher(spec), spec["invert_match"]),
    "boolean_attribute": lambda spec, clock: AttributeMatch(spec["key"], _is(spec["value"]), spec["invert_match"]),
    "probabilistic": lambda spec, clock: Probabilistic(spec["hash_salt"], spec["sampling_percentage"]),
    "rate_limiting": lambda spec, clock: RateLimiting(spec["spans_per_second"], clock),
    "bytes_limiting": lambda spec, clock: BytesLimiting(spec["bytes_per_second"], spec["burst_capacity"], clock),
    "span_count": lambda spec, clock: SpanCount(spec["min_spans"], spec["max_spans"]),
    "trace_state": lambda spec, clock: TraceState(spec["key"], frozenset(spec["values"])),
    "and": lambda spec, clock: And([compile_policy(sub, clock) for sub in spec["and_sub_policy"]]),
    "drop": lambda spec, clock: Drop([compile_policy(sub, clock) for sub in spec["drop_sub_policy"]]),
    "composite": _composite,
}
