"""Log keep decisions (docs/policies.md §4), match statistics (§7) and metric keep=false."""

from __future__ import annotations

import random
from fractions import Fraction

import orjson
import pytest

from edge.engine.engine import Engine
from edge.formats.otlp import body as otlp_body
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from tests.engine_helpers import clean_engine

SPACE = 1 << 56


def S(text: str) -> dict:
    return {"stringValue": text}


def kv(key: str, value: dict) -> dict:
    return {"key": key, "value": value}


def fnv1a64(data: bytes) -> int:
    """Reference FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3)."""
    h = 0xCBF29CE484222325
    for byte in data:
        h ^= byte
        h = (h * 0x100000001B3) % (1 << 64)
    return h


def threshold(percent: str) -> int:
    """T = floor((1 - N/100) * 2^56), computed exactly."""
    return (SPACE * (100 - Fraction(percent))) // 100


class Clock:
    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _engine(policies: list[dict], *, clock: Clock | None = None, seed: int = 7) -> Engine:
    return clean_engine(policies, clock=clock, seed=seed)


def _log(pid: str, keep: str, matcher: dict | None = None, **target) -> dict:
    matcher = matcher or {"log_field": "body", "contains": "x"}
    return {"id": pid, "name": pid, "log": {"match": [matcher], "keep": keep, **target}}


def _doc(records: list[dict]) -> dict:
    tagged = [{**r, "timeUnixNano": str(i)} for i, r in enumerate(records)]
    return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": tagged}]}]}


def _bodies(*bodies: str) -> dict:
    return _doc([{"body": S(b)} for b in bodies])


def _run(engine: Engine, doc: dict) -> tuple[list[int], list[dict]]:
    """(indices of kept records, kept records)."""
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    out = orjson.loads(evaluated.body)
    records = [r for rl in out.get("resourceLogs", []) for sl in rl["scopeLogs"] for r in sl["logRecords"]]
    assert evaluated.outcome.kept == len(records)
    return [int(r["timeUnixNano"]) for r in records], records


def _stats(engine: Engine) -> dict[str, tuple[int, int]]:
    return {pid: (c.hits, c.misses) for pid, c in engine.stats.snapshot().items()}


# ── precedence ─────────────────────────────────────────────────────────────


def test_none_beats_all_regardless_of_id_order():
    """§4: none is the most restrictive; §7: the dropping policy gets the hit, the other a miss."""
    engine = _engine([_log("a-all", "all"), _log("z-none", "none")])
    kept, _ = _run(engine, _bodies("x1", "y", "x2"))
    assert kept == [1]
    assert _stats(engine) == {"z-none": (2, 0), "a-all": (0, 2)}


def test_none_beats_percentage_and_rate():
    """§4: none > N% > rate limits: a `none` match drops even when sampling/limits would keep."""
    engine = _engine([_log("a-pct", "100%"), _log("b-rate", "100/s"), _log("c-none", "none")], clock=Clock())
    kept, _ = _run(engine, _bodies("x", "y", "x"))
    assert kept == [1]
    assert _stats(engine) == {"c-none": (2, 0), "a-pct": (0, 2), "b-rate": (0, 2)}


def _keyed_records(count: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [{"body": S("x"), "attributes": [kv("user", S(f"user-{rng.getrandbits(40):x}"))]} for _ in range(count)]


def _r_of(record: dict) -> int:
    return fnv1a64(record["attributes"][0]["value"]["stringValue"].encode()) & (SPACE - 1)


def test_lower_percentage_beats_higher_percentage():
    """§4: lower % wins over higher %; §7: records it drops are its hits and the higher policy's misses."""
    records = _keyed_records(300, seed=1)
    key = {"sample_key": {"log_attribute": "user"}}
    engine = _engine([_log("a-75", "75%", **key), _log("b-25", "25%", **key)])
    kept, _ = _run(engine, _doc(records))
    expected = [i for i, r in enumerate(records) if _r_of(r) >= threshold("25")]
    assert kept == expected
    assert 30 < len(expected) < 120
    assert _stats(engine) == {"b-25": (300, 0), "a-75": (len(expected), 300 - len(expected))}


def test_percentage_is_applied_before_rate_limit():
    """§4: sampling is more restrictive than a rate limit; a sampled-out record spends no rate slot."""
    records = _keyed_records(40, seed=2)
    engine = _engine([_log("a-rate", "5/s"), _log("b-pct", "50%", sample_key={"log_attribute": "user"})], clock=Clock())
    kept, _ = _run(engine, _doc(records))
    survivors = [i for i, r in enumerate(records) if _r_of(r) >= threshold("50")]
    assert len(survivors) > 5
    assert kept == survivors[:5]
    sampled_out = 40 - len(survivors)
    # sampling dropped `sampled_out` (its hits, the limiter's misses); the limiter dropped the other
    # survivors (its hits, the sampler's misses); the 5 kept records are hits for both.
    assert _stats(engine) == {
        "b-pct": (5 + sampled_out, len(survivors) - 5),
        "a-rate": (len(survivors), sampled_out),
    }


def test_rate_limit_beats_all():
    """§4: a rate limit is more restrictive than all; §7: the limiter gets hits for kept and dropped."""
    engine = _engine([_log("a-all", "all"), _log("b-rate", "2/s")], clock=Clock())
    kept, _ = _run(engine, _bodies("x0", "x1", "y", "x3", "x4"))
    assert kept == [0, 1, 2]
    assert _stats(engine) == {"b-rate": (4, 0), "a-all": (2, 2)}


def test_keep_all_and_partial_matches():
    """§7: a kept record gives every matching policy a hit; non-matching policies get nothing."""
    engine = _engine(
        [
            _log("a", "all"),
            _log("b", "all", {"log_field": "body", "exact": "x2"}),
            _log("c", "none", {"log_field": "body", "exact": "nothing"}),
        ]
    )
    kept, _ = _run(engine, _bodies("x1", "x2", "y"))
    assert kept == [0, 1, 2]
    assert _stats(engine) == {"a": (2, 0), "b": (1, 0)}


def test_equal_none_keeps_first_by_id_gets_the_hit():
    """§7: two `none` policies drop the same record: only the lower id gets the hit, the other a miss."""
    engine = _engine([_log("b-none", "none"), _log("a-none", "none")])
    kept, _ = _run(engine, _bodies("x", "x", "y"))
    assert kept == [2]
    assert _stats(engine) == {"a-none": (2, 0), "b-none": (0, 2)}


def test_equal_percentages_first_by_id_gets_the_hit():
    """§7: with equal sampling keeps the lower id decides; the other policy gets misses for the drops."""
    records = _keyed_records(200, seed=3)
    key = {"sample_key": {"log_attribute": "user"}}
    engine = _engine([_log("q", "50%", **key), _log("p", "50%", **key)])
    kept, _ = _run(engine, _doc(records))
    survivors = [i for i, r in enumerate(records) if _r_of(r) >= threshold("50")]
    assert kept == survivors
    dropped = 200 - len(survivors)
    assert _stats(engine) == {"p": (200, 0), "q": (len(survivors), dropped)}


def test_partially_overlapping_drop_policies():
    """§7: each drop policy is credited with the records it dropped; overlaps go to the first by id."""
    engine = _engine(
        [
            _log("a", "none", {"log_field": "body", "starts_with": "x"}),
            _log("b", "none", {"log_field": "body", "ends_with": "z"}),
        ]
    )
    kept, _ = _run(engine, _bodies("xz", "xa", "az", "aa"))
    assert kept == [3]
    assert _stats(engine) == {"a": (2, 0), "b": (1, 1)}


# ── rate limits across batches ─────────────────────────────────────────────


def test_rate_limit_per_second_across_batches():
    """§4: the first N matching records of a window are kept; the window resets after D seconds."""
    clock = Clock(100.0)
    engine = _engine([_log("r", "3/s")], clock=clock)
    assert _run(engine, _bodies("x0", "x1", "y", "x3", "x4", "x5"))[0] == [0, 1, 2, 3]
    clock.now = 100.5
    assert _run(engine, _bodies("x0", "y", "x2"))[0] == [1]
    clock.now = 100.999
    assert _run(engine, _bodies("x0"))[0] == []
    clock.now = 101.0
    assert _run(engine, _bodies("x0", "x1", "x2", "x3"))[0] == [0, 1, 2]
    assert _stats(engine) == {"r": (5 + 2 + 1 + 4, 0)}


@pytest.mark.parametrize("keep,window", [("2/m", 60.0), ("1/5s", 5.0), ("1/2m", 120.0), ("4/10s", 10.0)])
def test_rate_limit_windows(keep, window):
    """§4: `N/m`, `N/Ds`, `N/Dm` windows last 60, D and 60·D seconds."""
    limit = int(keep.split("/")[0])
    clock = Clock(10.0)
    engine = _engine([_log("r", keep)], clock=clock)
    batch = _bodies(*[f"x{i}" for i in range(limit + 2)])
    assert _run(engine, batch)[0] == list(range(limit))
    clock.now = 10.0 + window - 0.01
    assert _run(engine, batch)[0] == []
    clock.now = 10.0 + window
    assert _run(engine, batch)[0] == list(range(limit))


def test_new_window_starts_at_first_record_after_previous_ended():
    """§4: after an idle gap, the new window starts at the first record, not on a fixed grid."""
    clock = Clock(0.0)
    engine = _engine([_log("r", "1/s")], clock=clock)
    assert _run(engine, _bodies("x"))[0] == [0]
    clock.now = 2.5  # window [0, 1) ended long ago: a new one starts now, [2.5, 3.5)
    assert _run(engine, _bodies("x", "x"))[0] == [0]
    clock.now = 3.2  # a grid-aligned window [3, 4) would keep this one
    assert _run(engine, _bodies("x"))[0] == []
    clock.now = 3.5
    assert _run(engine, _bodies("x"))[0] == [0]


def test_first_window_starts_when_policy_is_loaded():
    """§4: the first window starts when the policy is loaded (engine built at t=0), so it ends at t=1."""
    clock = Clock(0.0)
    engine = _engine([_log("r", "1/s")], clock=clock)
    clock.now = 0.6
    assert _run(engine, _bodies("x"))[0] == [0]
    clock.now = 1.1  # the first window [0, 1) is over: this record opens a new one
    assert _run(engine, _bodies("x"))[0] == [0]


def test_rate_limits_are_per_policy():
    """§4: each rate limit is evaluated by its own policy's limiter."""
    clock = Clock(0.0)
    engine = _engine(
        [
            _log("a", "1/s", {"log_field": "body", "starts_with": "a"}),
            _log("b", "2/s", {"log_field": "body", "starts_with": "b"}),
        ],
        clock=clock,
    )
    assert _run(engine, _bodies("a1", "b1", "a2", "b2", "b3"))[0] == [0, 1, 3]
    assert _stats(engine) == {"a": (2, 0), "b": (3, 0)}


# ── sampling with a sample key ─────────────────────────────────────────────


@pytest.mark.parametrize("percent", ["10", "25", "50", "75", "90", "33.3", "12.5"])
def test_sample_key_attribute_threshold(percent):
    """§4: R = FNV-1a 64 of the key bytes masked to 56 bits; keep when R >= floor((1 - N/100)·2^56)."""
    records = _keyed_records(400, seed=int(float(percent) * 10))
    engine = _engine([_log("s", f"{percent}%", sample_key={"log_attribute": "user"})])
    kept, _ = _run(engine, _doc(records))
    t = threshold(percent)
    assert kept == [i for i, r in enumerate(records) if _r_of(r) >= t]
    assert _stats(engine) == {"s": (400, 0)}


def test_sample_key_is_consistent_across_batches_and_engines():
    """§4: keyed sampling is deterministic: the same key gets the same decision everywhere."""
    records = _keyed_records(100, seed=9)
    policy = [_log("s", "40%", sample_key={"log_attribute": "user"})]
    first = _run(_engine(policy, seed=1), _doc(records))[0]
    second = _run(_engine(policy, seed=2), _doc(records))[0]
    assert first == second


def test_sample_key_on_body_and_resource_attribute():
    """§4: any non-trace-id key hashes the key value's bytes (here body and a resource attribute)."""
    bodies = [f"x-{i}" for i in range(200)]
    engine = _engine([_log("s", "50%", sample_key={"log_field": "body"})])
    kept, _ = _run(engine, _bodies(*bodies))
    assert kept == [i for i, b in enumerate(bodies) if fnv1a64(b.encode()) & (SPACE - 1) >= threshold("50")]

    services = [f"svc-{i}" for i in range(40)]
    doc = {
        "resourceLogs": [
            {
                "resource": {"attributes": [kv("service.name", S(s))]},
                "scopeLogs": [{"logRecords": [{"body": S("x"), "timeUnixNano": str(2 * j + k)} for k in range(2)]}],
            }
            for j, s in enumerate(services)
        ]
    }
    engine = _engine([_log("s", "30%", sample_key={"resource_attribute": "service.name"})])
    kept, _ = _run(engine, doc)
    expected = [
        2 * j + k
        for j, s in enumerate(services)
        for k in range(2)
        if fnv1a64(s.encode()) & (SPACE - 1) >= threshold("30")
    ]
    assert kept == expected


def _trace_id_with_r(r: int, prefix: str = "a1b2c3d4e5f60718") -> str:
    return prefix + "00" + f"{r:014x}"


@pytest.mark.parametrize("percent", ["25", "50", "75", "12.5"])
def test_sample_key_trace_id_uses_last_seven_bytes(percent):
    """§4: key trace_id: R = last 7 bytes of the raw trace id (big-endian); R = T keeps, T-1 drops."""
    t = threshold(percent)
    ids = [
        _trace_id_with_r(t),
        _trace_id_with_r(t - 1),
        _trace_id_with_r(SPACE - 1),
        _trace_id_with_r(0),
        _trace_id_with_r(t + 1, prefix="ffffffffffffffff"),
        _trace_id_with_r(t - 1, prefix="0" * 16),
    ]
    records = [{"body": S("x"), "traceId": tid} for tid in ids]
    engine = _engine([_log("s", f"{percent}%", sample_key={"log_field": "trace_id"})])
    assert _run(engine, _doc(records))[0] == [0, 2, 4]


def test_sample_key_trace_id_random_ids():
    """§4: trace-id keyed sampling over many ids follows R >= T exactly."""
    rng = random.Random(5)
    ids = [f"{rng.getrandbits(128):032x}" for _ in range(300)]
    engine = _engine([_log("s", "20%", sample_key={"log_field": "trace_id"})])
    kept, _ = _run(engine, _doc([{"body": S("x"), "traceId": tid} for tid in ids]))
    assert kept == [i for i, tid in enumerate(ids) if int(tid[-14:], 16) >= threshold("20")]


def test_absent_sample_key_keeps_the_record():
    """§4: a sample_key that is absent on a record keeps that record."""
    records = [{"body": S("x")} for _ in range(50)] + _keyed_records(50, seed=4)
    engine = _engine([_log("s", "30%", sample_key={"log_attribute": "user"})])
    kept, _ = _run(engine, _doc(records))
    assert kept[:50] == list(range(50))
    assert kept[50:] == [50 + i for i, r in enumerate(records[50:]) if _r_of(r) >= threshold("30")]


@pytest.mark.parametrize("percent,expected", [("100", 60), ("0", 0)])
def test_sampling_extremes(percent, expected):
    """§4: N >= 100 keeps everything, N <= 0 drops everything (with or without a key)."""
    records = _keyed_records(60, seed=6)
    for target in ({}, {"sample_key": {"log_attribute": "user"}}):
        engine = _engine([_log("s", f"{percent}%", **target)])
        assert len(_run(engine, _doc(records))[0]) == expected
        assert _stats(engine) == {"s": (60, 0)}


# ── sampling without a key ─────────────────────────────────────────────────


@pytest.mark.parametrize("percent", [10, 50, 90])
def test_random_sampling_fraction(percent):
    """§4: without sample_key each record gets an independent random decision (identical records too)."""
    n = 20_000
    records = [{"body": S("x"), "timeUnixNano": "1"}] * n
    doc = {"resourceLogs": [{"scopeLogs": [{"logRecords": records}]}]}
    engine = Engine(compile_policies(load_document({"policies": [_log("s", f"{percent}%")]}).policies))
    evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    p = percent / 100
    sigma = (p * (1 - p) / n) ** 0.5
    fraction = evaluated.outcome.kept / n
    assert abs(fraction - p) < 5 * sigma, fraction
    assert _stats(engine) == {"s": (n, 0)}


def test_random_sampling_differs_between_batches():
    """§4: unkeyed decisions are not derived from record content: the same batch gives different picks."""
    engine = _engine([_log("s", "50%")], seed=12345)
    batch = _bodies(*[f"x{i}" for i in range(64)])
    picks = {tuple(_run(engine, batch)[0]) for _ in range(4)}
    assert len(picks) > 1


# ── transforms only on kept records ────────────────────────────────────────


def _tagger(pid: str = "t") -> dict:
    return _log(pid, "all", transform={"add": [{"log_attribute": "tagged", "value": "yes"}]})


def test_transforms_apply_only_to_kept_records():
    """§4: a record dropped by any policy gets no transforms; stage stats count kept records only."""
    clock = Clock()
    engine = _engine([_log("a-rate", "2/s"), _tagger("b-tag")], clock=clock)
    kept, records = _run(engine, _bodies("x0", "x1", "x2", "x3"))
    assert kept == [0, 1]
    assert all(r["attributes"] == [kv("tagged", S("yes"))] for r in records)
    stages = engine.stats.snapshot()["b-tag"].stages
    assert stages["add"] == [2, 0]


def test_transform_on_the_sampling_policy_itself():
    """§4: a sampling policy's own transform runs only on the records its sampling kept."""
    records = _keyed_records(100, seed=8)
    engine = _engine(
        [
            _log(
                "s",
                "50%",
                sample_key={"log_attribute": "user"},
                transform={"add": [{"log_attribute": "sampled", "value": "1"}]},
            )
        ]
    )
    kept, out = _run(engine, _doc(records))
    assert all(any(a["key"] == "sampled" for a in r["attributes"]) for r in out)
    assert engine.stats.snapshot()["s"].stages["add"] == [len(kept), 0]


def test_dropped_by_none_not_transformed_but_others_are():
    """§4: transforms of matching policies apply to survivors only."""
    engine = _engine([_log("drop", "none", {"log_field": "body", "exact": "x-drop"}), _tagger()])
    kept, records = _run(engine, _bodies("x-drop", "x-keep", "y"))
    assert kept == [1, 2]
    assert records[0]["attributes"] == [kv("tagged", S("yes"))]
    assert "attributes" not in records[1]
    assert _stats(engine) == {"drop": (1, 0), "t": (1, 1)}


# ── metrics ────────────────────────────────────────────────────────────────


def _metrics(*names: str) -> dict:
    return {
        "resourceMetrics": [
            {
                "resource": {},
                "scopeMetrics": [
                    {
                        "scope": {},
                        "metrics": [{"name": n, "gauge": {"dataPoints": [{"asInt": "1"}]}} for n in names],
                    }
                ],
            }
        ]
    }


def _metric_policy(pid: str, keep: bool, prefix: str) -> dict:
    return {"id": pid, "metric": {"match": [{"metric_field": "name", "starts_with": prefix}], "keep": keep}}


def _metric_run(engine: Engine, doc: dict) -> list[str]:
    out = orjson.loads(otlp_body.evaluate(engine, "metric", orjson.dumps(doc), "application/json").body)
    return [m["name"] for rl in out.get("resourceMetrics", []) for sm in rl["scopeMetrics"] for m in sm["metrics"]]


def test_metric_keep_false_drops_and_counts():
    """§2: any matching metric policy with keep=false drops; §7: it gets the hit, keep=true ones a miss."""
    engine = _engine([_metric_policy("a-keep", True, "http."), _metric_policy("b-drop", False, "http.debug")])
    assert _metric_run(engine, _metrics("http.requests", "http.debug.x", "db.calls", "http.debug.y")) == [
        "http.requests",
        "db.calls",
    ]
    assert _stats(engine) == {"a-keep": (1, 2), "b-drop": (2, 0)}


def test_metric_two_drop_policies_first_by_id_gets_the_hit():
    """§7: two keep=false policies on the same metric: the lower id gets the hit, the other a miss."""
    engine = _engine([_metric_policy("z", False, "m"), _metric_policy("y", False, "m.")])
    assert _metric_run(engine, _metrics("m.a", "mb", "n")) == ["n"]
    assert _stats(engine) == {"y": (1, 0), "z": (1, 1)}


def test_metric_keep_true_leaves_the_body_untouched():
    """A keep=true metric policy only counts: the original bytes are forwarded."""
    engine = _engine([_metric_policy("k", True, "m")])
    body = orjson.dumps(_metrics("m1", "m2", "x"))
    evaluated = otlp_body.evaluate(engine, "metric", body, "application/json")
    assert evaluated.body == body
    assert (evaluated.outcome.total, evaluated.outcome.kept) == (3, 3)
    assert _stats(engine) == {"k": (2, 0)}


def test_metric_drop_prunes_empty_scopes_and_resources():
    """Dropping every metric of a scope/resource removes it; the rest of the document is kept."""
    doc = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [kv("r", S("1"))]},
                "scopeMetrics": [{"scope": {"name": "s1"}, "metrics": [{"name": "drop.a", "gauge": {}}]}],
            },
            {
                "resource": {"attributes": [kv("r", S("2"))]},
                "scopeMetrics": [
                    {"scope": {"name": "s2"}, "metrics": [{"name": "drop.b", "gauge": {}}]},
                    {"scope": {"name": "s3"}, "metrics": [{"name": "keep", "gauge": {}}]},
                ],
            },
        ]
    }
    engine = _engine([_metric_policy("d", False, "drop.")])
    out = orjson.loads(otlp_body.evaluate(engine, "metric", orjson.dumps(doc), "application/json").body)
    assert len(out["resourceMetrics"]) == 1
    assert out["resourceMetrics"][0]["resource"]["attributes"] == [kv("r", S("2"))]
    assert [sm["scope"]["name"] for sm in out["resourceMetrics"][0]["scopeMetrics"]] == ["s3"]
