"""The decider (docs/tail-sampling.md): every policy type and the decision order, on hand-built traces."""

from __future__ import annotations

import random
from typing import Any

import pytest

from edge import config as cfg
from edge.tailsampling.decider import UNDECODABLE_POLICY, UNTRACED_POLICY, compile_decider
from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import Decision, TraceDecider
from edge.tailsampling.policies import MAX_UINT64, Probabilistic, fnv1a_64, hash_threshold
from edge.tailsampling.trace_view import summarise
from tests.tailsampling.traces import T0, payloads, span, trace_id
from tests.test_declared_interfaces import assert_implements


class FakeClock:
    """Wall-clock seconds the test moves by hand."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def decider(*policies: dict[str, Any], first_match: bool = False, clock: FakeClock | None = None) -> TraceDecider:
    section = cfg.build({"tail_sampling": {"policies": list(policies), "sample_on_first_match": first_match}},
                        env={}).tail_sampling
    return compile_decider(section, clock or FakeClock())


def decide(d: TraceDecider, *spans: Any, n: int = 1, resource: dict[str, Any] | None = None) -> Decision:
    return d.decide(trace_id(n), payloads(*spans, resource=resource))


def policy(name: str, kind: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, kind: spec}


ALWAYS = {"name": "always", "type": "always_sample"}
ERRORS = policy("errors", "status_code", status_codes=["ERROR"])


# ── the trace view ──


def test_the_view_summarises_every_fragment_once() -> None:
    fragments = payloads(span(1, start_ms=5, end_ms=20, status=2, trace_state="a=1", attrs={"k": "x", "n": 3}),
                         span(1, start_ms=1, end_ms=9, attrs={"k": True, "other": 1, "list": b"b"}),
                         resource={"service.name": "svc", "k": 2.5})
    view = summarise(trace_id(1), fragments, frozenset({"k", "list"}))
    assert (view.span_count, view.byte_size) == (2, sum(map(len, fragments)))
    assert (view.earliest_start, view.latest_end, view.duration_ns) == (T0 + 1_000_000, T0 + 20_000_000, 19_000_000)
    assert view.status_codes == {0, 2} and view.trace_states == {"a=1"}
    assert sorted(map(repr, view.values("k"))) == ["'x'", "2.5", "2.5", "True"]  # the resource once per fragment
    assert view.values("list") == [] and view.values("n") == []  # bytes are no policy value; n was not asked for


# ── one type at a time ──


def test_always_sample() -> None:
    assert decide(decider(ALWAYS), span(1)) == Decision(True, "always")


@pytest.mark.parametrize(("duration_ms", "sampled"), [(99.999, False), (100, True), (4999, True), (5000, False)])
def test_latency_from_the_earliest_start_to_the_latest_end(duration_ms: float, sampled: bool) -> None:
    d = decider(policy("slow", "latency", threshold_ms=100, upper_threshold_ms=5000))
    spans = [span(1, start_ms=10, end_ms=11), span(1, start_ms=11, end_ms=10 + duration_ms)]
    assert decide(d, *spans).sampled is sampled
    assert decide(decider(policy("slow", "latency", threshold_ms=100)), span(1, end_ms=10**6)).sampled


def test_status_code() -> None:
    d = decider(policy("bad", "status_code", status_codes=["ERROR", "UNSET"]))
    assert decide(d, span(1, status=1), span(1, status=2)) == Decision(True, "bad")
    assert decide(d, span(1, status=0)).sampled
    assert not decide(d, span(1, status=1)).sampled


def test_numeric_attribute_on_spans_and_resources_ints_and_doubles() -> None:
    d = decider(policy("5xx", "numeric_attribute", key="code", min_value=500, max_value=599))
    assert decide(d, span(1, attrs={"code": 200}), span(1, attrs={"code": 503})).sampled
    assert decide(d, span(1), resource={"code": 500.5}).sampled
    assert not decide(d, span(1, attrs={"code": 600}), span(1, attrs={"code": "503"})).sampled
    assert not decide(d, span(1, attrs={"other": 503})).sampled
    open_ended = decider(policy("big", "numeric_attribute", key="size", min_value=10))
    assert decide(open_ended, span(1, attrs={"size": 10**12})).sampled
    assert not decide(open_ended, span(1, attrs={"size": True})).sampled  # a boolean is not the number 1


def test_string_attribute_exact_and_regex() -> None:
    exact = decider(policy("svc", "string_attribute", key="service.name", values=["checkout", "cart"]))
    assert decide(exact, span(1), resource={"service.name": "cart"}).sampled
    assert decide(exact, span(1, attrs={"service.name": "checkout"})).sampled
    assert not decide(exact, span(1), resource={"service.name": "checkout-v2"}).sampled
    regex = decider(policy("re", "string_attribute", key="route", values=["^/api/v[0-9]+/", "admin"],
                           enabled_regex_matching=True, cache_max_size=2))
    for value, sampled in [("/api/v2/users", True), ("/web/admin/x", True), ("/api/vx/", False),
                           ("/api/v2/users", True), ("/a", False), ("/b", False), ("/web/admin/x", True)]:
        assert decide(regex, span(1, attrs={"route": value})).sampled is sampled, value
    assert not decide(regex, span(1, attrs={"route": 5})).sampled


def test_boolean_attribute() -> None:
    d = decider(policy("debug", "boolean_attribute", key="debug", value=True))
    assert decide(d, span(1, attrs={"debug": False}), span(1, attrs={"debug": True})).sampled
    assert not decide(d, span(1, attrs={"debug": "true"}), span(1, attrs={"debug": 1})).sampled
    assert decide(decider(policy("quiet", "boolean_attribute", key="debug", value=False)),
                  span(1, attrs={"debug": False})).sampled


@pytest.mark.parametrize("kind,spec,value", [
    ("string_attribute", {"values": ["internal"]}, "internal"),
    ("numeric_attribute", {"min_value": 0, "max_value": 0}, 0),
    ("boolean_attribute", {"value": True}, True),
])
def test_invert_match_samples_what_does_not_match_and_vetoes_what_does(kind: str, spec: dict[str, Any],
                                                                       value: Any) -> None:
    inverted = policy("not-x", kind, key="x", invert_match=True, **spec)
    d = decider(inverted)
    assert decide(d, span(1, attrs={"x": value})) == Decision(False, "not-x")
    assert decide(d, span(1)) == Decision(True, "not-x")
    vetoing = decider(ALWAYS, inverted)
    assert decide(vetoing, span(1, attrs={"x": value}), span(1)) == Decision(False, "not-x")


def test_probabilistic_is_the_collectors_fnv1a_64_with_its_default_salt() -> None:
    assert fnv1a_64(b"") == 0xCBF29CE484222325 and fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8
    tid = trace_id(0x0102)
    assert Probabilistic("", 50).hash(tid) == fnv1a_64(b"default-hash-seed" + tid)
    assert Probabilistic("salt", 50).hash(tid) == fnv1a_64(b"salt" + tid)
    assert hash_threshold(100) == MAX_UINT64 and hash_threshold(0) == 0
    assert hash_threshold(50) == 2**63 - 1  # (2^64 - 1) / 2 = 2^63 - 0.5, exact in 64 bits, truncated
    assert abs(hash_threshold(12.5) - MAX_UINT64 // 8) <= 1


def test_probabilistic_is_deterministic_per_trace_and_uniform() -> None:
    d = decider(policy("ten", "probabilistic", sampling_percentage=10, hash_salt="s"))
    again = decider(policy("ten", "probabilistic", sampling_percentage=10, hash_salt="s"))
    rng = random.Random(7)
    ids = [rng.getrandbits(128) for _ in range(20_000)]
    kept = [n for n in ids if decide(d, span(n), n=n).sampled]
    assert kept == [n for n in ids if decide(again, span(n), n=n).sampled]
    assert 0.09 < len(kept) / len(ids) < 0.11
    xray = [(n << 96) | rng.getrandbits(96) for n in range(1_700_000_000, 1_700_020_000)]  # a time, then random
    assert 0.09 < sum(decide(d, span(n), n=n).sampled for n in xray) / len(xray) < 0.11
    assert all(decide(decider(policy("all", "probabilistic", sampling_percentage=100)), span(n), n=n).sampled
               for n in ids[:100])
    assert not any(decide(decider(policy("none", "probabilistic", sampling_percentage=0)), span(n), n=n).sampled
                   for n in ids[:100])


def test_rate_limiting_counts_spans_per_second() -> None:
    clock = FakeClock(1_000.2)
    d = decider(policy("rate", "rate_limiting", spans_per_second=5), clock=clock)
    assert decide(d, span(1), span(1)).sampled  # 2 < 5
    assert decide(d, span(2), span(2)).sampled  # 4 < 5
    assert not decide(d, span(3)).sampled  # 5 is not under 5
    assert not decide(d, *[span(4)] * 5).sampled  # a trace of 5 never fits
    clock.now = 1_000.9
    assert not decide(d, span(5)).sampled
    clock.now = 1_001.0
    assert decide(d, span(6)).sampled  # a new second


def test_bytes_limiting_is_a_token_bucket() -> None:
    clock = FakeClock()
    one = payloads(span(1))
    size = len(one[0])
    d = decider(policy("bytes", "bytes_limiting", bytes_per_second=size, burst_capacity=2 * size), clock=clock)
    assert [d.decide(trace_id(n), one).sampled for n in range(1, 4)] == [True, True, False]
    clock.now += 0.5
    assert not d.decide(trace_id(4), one).sampled  # half a trace's bytes refilled
    clock.now += 0.5
    assert d.decide(trace_id(5), one).sampled
    clock.now += 100
    assert [d.decide(trace_id(n), one).sampled for n in range(1, 4)] == [True, True, False]  # the burst caps it
    default_burst = decider(policy("bytes", "bytes_limiting", bytes_per_second=size), clock=clock)
    assert [default_burst.decide(trace_id(n), one).sampled for n in range(1, 4)] == [True, True, False]


def test_span_count() -> None:
    d = decider(policy("mid", "span_count", min_spans=2, max_spans=3))
    assert [decide(d, *[span(1)] * n).sampled for n in (1, 2, 3, 4)] == [False, True, True, False]
    assert decide(decider(policy("many", "span_count", min_spans=2)), *[span(1)] * 50).sampled


def test_trace_state() -> None:
    d = decider(policy("ts", "trace_state", key="vendor", values=["keep", "yes"]))
    assert decide(d, span(1, trace_state="other=1, vendor=keep")).sampled
    assert decide(d, span(1), span(1, trace_state="vendor=yes")).sampled
    assert not decide(d, span(1, trace_state="vendor=no,xvendor=keep")).sampled
    assert not decide(d, span(1)).sampled


def test_and_needs_every_sub_policy() -> None:
    d = decider(policy("slow-errors", "and", and_sub_policy=[ERRORS, policy("slow", "latency", threshold_ms=100)]))
    assert decide(d, span(1, status=2, end_ms=200)) == Decision(True, "slow-errors")
    assert not decide(d, span(1, status=2, end_ms=50)).sampled
    assert not decide(d, span(1, end_ms=500)).sampled


def test_an_inverted_not_sample_inside_and_is_no_veto() -> None:
    inverted = policy("not-internal", "string_attribute", key="x", values=["internal"], invert_match=True)
    d = decider(policy("combo", "and", and_sub_policy=[ALWAYS, inverted]), ALWAYS)
    assert decide(d, span(1, attrs={"x": "internal"})) == Decision(True, "always")
    assert decide(d, span(1, attrs={"x": "public"})) == Decision(True, "combo")


def test_composite_shares_the_second_between_its_sub_policies() -> None:
    clock = FakeClock(50.0)
    d = decider(policy("mix", "composite", max_total_spans_per_second=10, policy_order=["errors", "rest"],
                       composite_sub_policy=[policy("rest", "span_count", min_spans=1), ERRORS],
                       rate_allocation=[{"policy": "errors", "percent": 60}, {"policy": "rest", "percent": 40}]),
                clock=clock)
    errors = [span(1, status=2)] * 3
    plain = [span(1)] * 2
    assert decide(d, *errors) == Decision(True, "mix")  # errors: 3 of 6
    assert decide(d, *errors).sampled  # errors: 6 of 6
    assert decide(d, *errors).sampled  # errors full; rest also samples it: 3 of 4
    assert not decide(d, *plain).sampled  # rest: 5 of 4 is over
    assert decide(d, span(1)).sampled  # rest: 4 of 4, total 10 of 10
    clock.now = 51.0
    assert decide(d, *plain).sampled


def test_composite_without_allocations_shares_equally_and_caps_the_total() -> None:
    clock = FakeClock()
    d = decider(policy("mix", "composite", max_total_spans_per_second=4,
                       composite_sub_policy=[ALWAYS, policy("count", "span_count", min_spans=1)]), clock=clock)
    assert [decide(d, span(1)).sampled for _ in range(5)] == [True, True, True, True, False]


# ── the decision order ──

DROP_HEALTH = policy("no-health", "drop", drop_sub_policy=[
    policy("health", "string_attribute", key="url.path", values=["/healthz"])])


def test_a_matching_drop_beats_everything() -> None:
    d = decider(ALWAYS, ERRORS, DROP_HEALTH)
    assert decide(d, span(1, status=2, attrs={"url.path": "/healthz"})) == Decision(False, "no-health")
    assert decide(d, span(1, attrs={"url.path": "/api"})) == Decision(True, "always")


def test_an_inverted_not_sample_beats_any_sample_and_the_first_inverted_is_named() -> None:
    inverted = [policy(f"not-{v}", "string_attribute", key="env", values=[v], invert_match=True) for v in ("dev", "qa")]
    d = decider(ALWAYS, *inverted)
    assert decide(d, span(1, attrs={"env": "dev"}), span(1, attrs={"env": "qa"})) == Decision(False, "not-dev")
    assert decide(d, span(1, attrs={"env": "qa"})) == Decision(False, "not-qa")
    assert decide(d, span(1, attrs={"env": "prod"})) == Decision(True, "always")


def test_a_drop_beats_an_inverted_not_sample() -> None:
    inverted = policy("not-dev", "string_attribute", key="env", values=["dev"], invert_match=True)
    d = decider(inverted, DROP_HEALTH)
    assert decide(d, span(1, attrs={"env": "dev", "url.path": "/healthz"})) == Decision(False, "no-health")


def test_the_first_policy_that_samples_is_named_and_nothing_matching_is_not_sampled() -> None:
    d = decider(ERRORS, policy("slow", "latency", threshold_ms=10), ALWAYS)
    assert decide(d, span(1, end_ms=50, status=2)) == Decision(True, "errors")
    assert decide(d, span(1, end_ms=50)) == Decision(True, "slow")
    assert decide(decider(ERRORS), span(1)) == Decision(False, "")


def test_sample_on_first_match_stops_at_the_first_sample() -> None:
    """Policies after the first sample are not evaluated: their budgets are not spent, their vetoes not heard."""
    clock = FakeClock()
    rate = policy("rate", "rate_limiting", spans_per_second=2)
    first = decider(ALWAYS, rate, DROP_HEALTH, first_match=True, clock=clock)
    health = span(1, attrs={"url.path": "/healthz"})
    assert decide(first, health) == Decision(True, "always")
    every = decider(ALWAYS, rate, DROP_HEALTH, clock=clock)
    assert decide(every, health) == Decision(False, "no-health")
    assert decide(every, span(1)) == Decision(True, "always")
    assert decide(decider(DROP_HEALTH, ALWAYS, first_match=True), health) == Decision(False, "no-health")


def test_budgets_are_spent_by_policies_evaluated_before_a_veto() -> None:
    """As in the Collector: a rate_limiting policy listed before a matching drop counts the dropped trace."""
    clock = FakeClock()
    d = decider(policy("rate", "rate_limiting", spans_per_second=2), DROP_HEALTH, clock=clock)
    assert decide(d, span(1, attrs={"url.path": "/healthz"})) == Decision(False, "no-health")
    assert not decide(d, span(2)).sampled  # 1 + 1 is not under 2


def test_untraced_spans_pass_and_undecodable_ones_are_kept() -> None:
    d = decider(ERRORS)
    assert d.decide(UNTRACED, payloads(span(1))) == Decision(True, UNTRACED_POLICY)
    assert d.decide(trace_id(1), [b"\x0a\x02\xff\xff"]) == Decision(True, UNDECODABLE_POLICY)


def test_an_empty_trace_is_judged_like_any_other() -> None:
    assert decider(ERRORS).decide(trace_id(1), []) == Decision(False, "")
    assert decider(ALWAYS).decide(trace_id(1), ()) == Decision(True, "always")




def test_the_decider_is_a_trace_decider() -> None:
    assert_implements(decider(ALWAYS), TraceDecider)
