"""Consistent-probability trace sampling (docs/policies.md §6): thresholds, randomness, modes, tracestate."""

from __future__ import annotations

import random

import orjson
import pytest

from edge.engine import sampling
from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from edge.policy.model import TraceKeep
from edge.proto.tero.policy.v1 import policy_pb2 as pb

SPACE = 1 << 56
HASH_SEED, PROPORTIONAL, EQUALIZING = (
    pb.SAMPLING_MODE_HASH_SEED,
    pb.SAMPLING_MODE_PROPORTIONAL,
    pb.SAMPLING_MODE_EQUALIZING,
)


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) % (1 << 64)
    return h


def tid(r: int, prefix: str = "4bf92f3577b34da6") -> bytes:
    """A 16-byte trace id whose last 7 bytes are `r`."""
    return bytes.fromhex(prefix + "00" + f"{r:014x}")


def keep(
    percentage: float, mode: int = HASH_SEED, precision: int = 4, seed: int = 0, fail_closed: bool = True
) -> TraceKeep:
    return TraceKeep(percentage=percentage, mode=mode, precision=precision, hash_seed=seed, fail_closed=fail_closed)


def th_of(tracestate: str | None) -> str | None:
    """The `th` sub-key of the `ot` entry."""
    for entry in (tracestate or "").split(","):
        if entry.startswith("ot="):
            for part in entry[3:].split(";"):
                if part.startswith("th:"):
                    return part[3:]
    return None


# ── threshold encoding ─────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "percentage,precision,expected",
    [
        (25, 4, "c"),
        (50, 4, "8"),
        (75, 4, "4"),
        (12.5, 4, "e"),
        (10, 4, "e666"),
        (10, 1, "e"),
        (10, 2, "e6"),
        (1, 4, "fd7"),  # fd70 truncated, then the trailing zero stripped
        (1, 3, "fd7"),
        (90, 4, "1999"),
        (99.99, 4, "0006"),  # leading zeros are digits too
        (99.99, 2, "0"),  # "00" stripped to nothing -> "0"
        (100, 4, "0"),
    ],
)
def test_encode_threshold(percentage, precision, expected):
    """§6: 14-digit lowercase hex of T truncated to precision, trailing zeros stripped, "0" if empty."""
    assert sampling.encode_threshold(sampling.threshold(percentage), precision) == expected


def test_threshold_formula():
    """§6: T = floor((1 - p/100) * 2^56); 100% -> 0, 0% -> 2^56."""
    assert sampling.threshold(25) == 0xC0000000000000
    assert sampling.threshold(50) == 1 << 55
    assert sampling.threshold(100) == 0
    assert sampling.threshold(0) == SPACE
    assert abs(sampling.threshold(10) - (SPACE * 9) // 10) <= 4


def test_encode_threshold_full_precision():
    """§6: precision 14 keeps every digit (minus trailing zeros)."""
    t = 0x0123456789ABC0
    assert sampling.encode_threshold(t, 14) == "0123456789abc"
    assert sampling.encode_threshold(0xFFFFFFFFFFFFFF, 14) == "ff" * 7


@pytest.mark.parametrize(
    "text,expected",
    [
        ("c", 0xC0000000000000),
        ("8", 1 << 55),
        ("e666", 0xE6660000000000),
        ("0", 0),
        ("fd7", 0xFD700000000000),
        ("0123456789abcd", 0x0123456789ABCD),
        ("", None),
        ("g", None),
        ("0123456789abcde", None),
        ("8;", None),
        ("-1", None),
    ],
)
def test_parse_threshold(text, expected):
    """§6: a th is 1..14 hex digits, right-padded with zeros to 14."""
    assert sampling.parse_threshold(text) == expected


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0123456789abcd", 0x0123456789ABCD),
        ("ffffffffffffff", SPACE - 1),
        ("00000000000000", 0),
        ("123", None),
        ("0123456789abcde", None),
        ("0123456789abcx", None),
        ("", None),
    ],
)
def test_parse_randomness(text, expected):
    """§6: rv must be exactly 14 hex digits."""
    assert sampling.parse_randomness(text) == expected


# ── hash_seed mode ─────────────────────────────────────────────────────────


def test_hash_seed_zero_uses_last_seven_bytes():
    """§6: seed 0 -> R = last 7 bytes of the trace id; keep when R >= T and write th."""
    t = sampling.threshold(25)
    kept = sampling.decide_span(keep(25), tid(t), "")
    assert kept.keep and kept.tracestate == "ot=th:c"
    assert not sampling.decide_span(keep(25), tid(t - 1), "").keep
    assert sampling.decide_span(keep(25), tid(SPACE - 1, prefix="0" * 16), "").keep
    assert not sampling.decide_span(keep(25), tid(0, prefix="f" * 16), "").keep


@pytest.mark.parametrize("seed", [1, 42, 0xDEADBEEF])
def test_hash_seed_nonzero(seed):
    """§6: non-zero seed -> R = FNV-1a 64 over (trace id || seed as 4 bytes LE), masked to 56 bits."""
    rng = random.Random(seed)
    t = sampling.threshold(40)
    decisions = []
    for _ in range(300):
        trace_id = rng.getrandbits(128).to_bytes(16, "big")
        r = fnv1a64(trace_id + seed.to_bytes(4, "little")) & (SPACE - 1)
        decision = sampling.decide_span(keep(40, seed=seed), trace_id, "")
        assert decision.keep == (r >= t)
        if decision.keep:
            assert th_of(decision.tracestate) == sampling.encode_threshold(t, 4)
        decisions.append(decision.keep)
    assert 60 < sum(decisions) < 180


def test_hash_seed_changes_decisions():
    """§6: different seeds make (partly) different decisions for the same trace ids."""
    rng = random.Random(3)
    ids = [rng.getrandbits(128).to_bytes(16, "big") for _ in range(200)]
    a = [sampling.decide_span(keep(50, seed=1), i, "").keep for i in ids]
    b = [sampling.decide_span(keep(50, seed=2), i, "").keep for i in ids]
    assert a != b


def test_rv_is_used_as_randomness():
    """§6: the rv sub-key of the ot entry, when present, is R (seed 0)."""
    t = sampling.threshold(50)
    high_id, low_id = tid(SPACE - 1), tid(0)
    assert not sampling.decide_span(keep(50), high_id, "ot=rv:00000000000001").keep
    decision = sampling.decide_span(keep(50), low_id, f"ot=rv:{t:014x}")
    assert decision.keep and decision.tracestate == f"ot=rv:{t:014x};th:8"


def test_malformed_rv_falls_back_to_trace_id():
    """§6: an rv that is not 14 hex digits is not randomness; the trace id is used instead."""
    assert sampling.decide_span(keep(50), tid(SPACE - 1), "ot=rv:00").keep
    assert not sampling.decide_span(keep(50), tid(0), "ot=rv:ffffffffffffff0").keep


# ── proportional / equalizing ──────────────────────────────────────────────


def test_proportional_without_incoming_threshold():
    """§6: proportional with no th: T_o = 2^56 - floor(p/100 * 2^56) = T."""
    t = sampling.threshold(50)
    decision = sampling.decide_span(keep(50, PROPORTIONAL), tid(t), "")
    assert decision.keep and th_of(decision.tracestate) == "8"
    assert not sampling.decide_span(keep(50, PROPORTIONAL), tid(t - 1), "").keep


def test_proportional_with_incoming_threshold():
    """§6: p_s = (2^56 - T_s)/2^56; T_o = 2^56 - floor(p/100 * p_s * 2^56); write T_o."""
    t_o = SPACE - (SPACE // 4)  # 50% of an incoming 50% -> 25% -> 0xc0000000000000
    decision = sampling.decide_span(keep(50, PROPORTIONAL), tid(t_o), "ot=th:8")
    assert decision.keep and decision.tracestate == "ot=th:c"
    assert not sampling.decide_span(keep(50, PROPORTIONAL), tid(t_o - 1), "ot=th:8").keep
    # incoming 25% (th:c) and p = 50% -> 12.5% -> T_o = 0xe0000000000000
    decision = sampling.decide_span(keep(50, PROPORTIONAL), tid(0xE0000000000000), "ot=th:c")
    assert decision.keep and th_of(decision.tracestate) == "e"
    assert not sampling.decide_span(keep(50, PROPORTIONAL), tid(0xDFFFFFFFFFFFFF), "ot=th:c").keep


def test_equalizing_incoming_threshold_greater_keeps_and_writes_incoming():
    """§6: equalizing: incoming T_s > T_d -> keep and write T_s (even when R < T_d)."""
    decision = sampling.decide_span(keep(50, EQUALIZING), tid(0x10000000000000), "ot=th:c")
    assert decision.keep and decision.tracestate == "ot=th:c"


def test_equalizing_incoming_threshold_lower_uses_target():
    """§6: equalizing: incoming T_s <= T_d -> keep when R >= T_d and write T_d."""
    t = sampling.threshold(50)
    decision = sampling.decide_span(keep(50, EQUALIZING), tid(t), "ot=th:4")
    assert decision.keep and decision.tracestate == "ot=th:8"
    assert not sampling.decide_span(keep(50, EQUALIZING), tid(t - 1), "ot=th:4").keep
    decision = sampling.decide_span(keep(50, EQUALIZING), tid(t), "")
    assert decision.keep and decision.tracestate == "ot=th:8"


def test_inconsistent_rv_below_th_keeps():
    """§6: rv < th -> keep regardless of R and drop the stale threshold."""
    decision = sampling.decide_span(keep(50), tid(0), "ot=rv:10000000000000;th:c")
    assert decision.keep
    assert th_of(decision.tracestate) != "c"
    assert decision.tracestate.startswith("ot=rv:10000000000000")
    # consistent rv >= th: normal decision with R = rv
    assert not sampling.decide_span(keep(50), tid(SPACE - 1), "ot=rv:40000000000000;th:2").keep


# ── extremes and missing ids ───────────────────────────────────────────────


@pytest.mark.parametrize("mode", [HASH_SEED, PROPORTIONAL, EQUALIZING])
def test_percentage_zero_drops_and_hundred_keeps(mode):
    """§6: percentage <= 0 drops; >= 100 keeps and writes threshold 0."""
    assert not sampling.decide_span(keep(0, mode), tid(SPACE - 1), "ot=th:c").keep
    decision = sampling.decide_span(keep(100, mode), tid(0), "")
    assert decision.keep and decision.tracestate == "ot=th:0"


@pytest.mark.parametrize("trace_id", [None, b"", bytes(16)])
def test_missing_trace_id_fail_closed(trace_id):
    """§6: no trace id and no rv: fail_closed true drops, false keeps; no threshold is written."""
    assert not sampling.decide_span(keep(50, fail_closed=True), trace_id, "").keep
    decision = sampling.decide_span(keep(50, fail_closed=False), trace_id, "vendor=x")
    assert decision.keep
    assert decision.tracestate is None or th_of(decision.tracestate) is None


def test_missing_trace_id_with_rv_is_decided_by_rv():
    """§6: with an rv the missing trace id is not an error."""
    assert sampling.decide_span(keep(50), None, "ot=rv:ffffffffffffff").keep
    assert not sampling.decide_span(keep(50), None, "ot=rv:00000000000000").keep


# ── tracestate rebuild ─────────────────────────────────────────────────────


@pytest.mark.parametrize(
    "incoming,expected",
    [
        ("", "ot=th:8"),
        ("vendor=a", "ot=th:8,vendor=a"),
        ("ot=th:4", "ot=th:8"),
        ("ot=rv:ffffffffffffff", "ot=rv:ffffffffffffff;th:8"),
        ("ot=th:2;rv:ffffffffffffff;p:3", "ot=rv:ffffffffffffff;p:3;th:8"),
        ("a=1,ot=foo:bar;th:2,b=2", "ot=foo:bar;th:8,a=1,b=2"),
        ("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7", "ot=th:8,congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ],
)
def test_tracestate_rebuild(incoming, expected):
    """§6: `ot=` first, other sub-keys kept in order, th replaced and last, other vendors after unchanged."""
    decision = sampling.decide_span(keep(50), tid(SPACE - 1), incoming)
    assert decision.keep
    assert decision.tracestate == expected


def test_tracestate_parse_keeps_vendor_entries():
    """The TraceState helper splits ot sub-keys from other vendors' entries."""
    state = sampling.TraceState.parse("x=1,ot=rv:00000000000001;th:8,y=2")
    assert state.get("rv") == "00000000000001" and state.get("th") == "8"
    assert state.others == ["x=1", "y=2"]
    assert state.with_threshold("c") == "ot=rv:00000000000001;th:c,x=1,y=2"


# ── through the engine ─────────────────────────────────────────────────────


def _spans(*specs: tuple[str, str]) -> dict:
    spans = [
        {"name": f"s{i}", "traceId": trace_id, "spanId": f"{i + 1:016x}", "traceState": state, "kind": 2}
        for i, (trace_id, state) in enumerate(specs)
    ]
    return {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}


def _trace_engine(policies: list[dict]) -> Engine:
    loaded = load_document({"policies": policies})
    snapshot = compile_policies(loaded.policies)
    assert snapshot.errors() == {}
    return Engine(snapshot)


def test_engine_writes_tracestate_and_counts():
    """Kept spans get th written into their tracestate; dropped ones are removed and counted as hits."""
    t = sampling.threshold(25)
    doc = _spans((tid(t).hex(), "vendor=a"), (tid(t - 1).hex(), ""), ("", ""), (tid(SPACE - 1).hex(), "ot=th:4"))
    engine = _trace_engine([{"id": "s", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 25}}}])
    out = orjson.loads(otlp_body.evaluate(engine, "trace", orjson.dumps(doc), "application/json").body)
    spans = out["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [(s["name"], s["traceState"]) for s in spans] == [("s0", "ot=th:c,vendor=a"), ("s3", "ot=th:c")]
    stats = engine.stats.snapshot()["s"]
    assert (stats.hits, stats.misses) == (4, 0)


def test_engine_lowest_percentage_decides():
    """§4/§6: several matching trace policies: the most restrictive (lowest %) decides each span."""
    t25, t50 = sampling.threshold(25), sampling.threshold(50)
    doc = _spans((tid(t25).hex(), ""), (tid(t50).hex(), ""), (tid(t50 - 1).hex(), ""))
    engine = _trace_engine(
        [
            {"id": "a-50", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 50}}},
            {"id": "b-25", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 25}}},
        ]
    )
    out = orjson.loads(otlp_body.evaluate(engine, "trace", orjson.dumps(doc), "application/json").body)
    spans = out["resourceSpans"][0]["scopeSpans"][0]["spans"]
    assert [s["name"] for s in spans] == ["s0"]
    assert spans[0]["traceState"] == "ot=th:c"
    counts = {pid: (c.hits, c.misses) for pid, c in engine.stats.snapshot().items()}
    assert counts == {"b-25": (3, 0), "a-50": (1, 2)}


def test_engine_fail_open_span_without_trace_id():
    """§6: fail_closed false keeps a span without trace id and leaves its tracestate alone."""
    doc = _spans(("", "vendor=z"))
    engine = _trace_engine(
        [{"id": "s", "trace": {"match": [{"span_kind": "server"}], "keep": {"percentage": 10, "fail_closed": False}}}]
    )
    body = orjson.dumps(doc)
    evaluated = otlp_body.evaluate(engine, "trace", body, "application/json")
    assert evaluated.outcome.kept == 1
    span = orjson.loads(evaluated.body)["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert span["traceState"] == "vendor=z"


# ── boundaries (each pins one comparison of decide_span) ────────────────────


def test_percentage_zero_drops_even_a_span_an_upstream_sampler_kept():
    """§6: percentage <= 0 drops before anything else: no rv/th inconsistency or fail-open keeps it."""
    assert sampling.decide_span(keep(0), tid(0), "ot=rv:00000000000001;th:8") == sampling.TraceDecision(False, None)
    assert sampling.decide_span(keep(0, fail_closed=False), None, "") == sampling.TraceDecision(False, None)


def test_percentage_one_is_sampled_not_dropped():
    decision = sampling.decide_span(keep(1), tid(SPACE - 1), "")
    assert decision.keep and decision.tracestate == "ot=th:fd7"


@pytest.mark.parametrize("mode", [HASH_SEED, PROPORTIONAL, EQUALIZING])
def test_percentage_hundred_keeps_whatever_the_incoming_threshold_or_trace_id(mode):
    """§6: >= 100 keeps and writes th:0, also over an incoming threshold and without a trace id."""
    assert sampling.decide_span(keep(100, mode), tid(0), "ot=th:8") == sampling.TraceDecision(True, "ot=th:0")
    assert sampling.decide_span(keep(100, mode), None, "") == sampling.TraceDecision(True, "ot=th:0")
    assert sampling.decide_span(keep(100, mode, precision=14), tid(0), "") == sampling.TraceDecision(True, "ot=th:0")


def test_rv_equal_to_th_is_consistent():
    """§6: only rv < th is inconsistent; rv == th is decided normally with R = rv."""
    assert not sampling.decide_span(keep(25), tid(SPACE - 1), "ot=rv:80000000000000;th:8").keep
    assert sampling.decide_span(keep(50), tid(0), "ot=rv:80000000000000;th:8").keep


def test_equalizing_incoming_threshold_equal_to_target_is_decided_by_r():
    """§6: only an incoming threshold above the target keeps unconditionally."""
    assert not sampling.decide_span(keep(50, EQUALIZING), tid(0), "ot=th:8").keep
    decision = sampling.decide_span(keep(50, EQUALIZING), tid(SPACE - 1), "ot=th:8")
    assert decision.keep and decision.tracestate == "ot=th:8"


def test_equalizing_writes_the_incoming_threshold_at_the_policy_precision():
    decision = sampling.decide_span(keep(50, EQUALIZING, precision=4), tid(0), "ot=th:c123456")
    assert decision == sampling.TraceDecision(True, "ot=th:c123")


def test_tracestate_parse_skips_empty_entries_and_splits_sub_keys_at_the_first_colon():
    state = sampling.TraceState.parse(", x=1,, ot=p:a:b;;th:8 ,y=2,")
    assert state.others == ["x=1", "y=2"]
    assert state.ot == [("p", "a:b"), ("th", "8")]
    assert state.with_threshold(None) == "ot=p:a:b,x=1,y=2"
    assert sampling.TraceState.parse("x=1").with_threshold(None) == "x=1"
