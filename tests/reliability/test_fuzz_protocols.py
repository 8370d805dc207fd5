"""Fuzzing the other protocols' parsers: Datadog logs and series, the Prometheus scrape filter,
edge-tail's line formats (raw, json, logfmt).

Property (fail-open, lose nothing): no exception escapes (Datadog: only `UndecodableBody`,
after which the route forwards the bytes raw); the output keeps input items unchanged and in
order; every item missing from it is one a suite policy drops. The Prometheus filter must also
give the same output however the exposition is split into chunks.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.engine.engine import Engine
from edge.formats.datadog.body import evaluate as evaluate_datadog
from edge.formats.errors import UndecodableBody
from edge.formats.prometheus.exposition import ScrapeFilter
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from edge.proto.datadog.agentpayload.agent_payload_pb2 import MetricPayload
from edge.tail.filtering import LineFilter

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
POLICIES = [
    {"id": "drop-debug", "name": "drop debug", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}],
                                                       "keep": "none"}},
    {"id": "drop-marked", "name": "drop marked bodies", "log": {"match": [{"log_field": "body", "contains": "DROPME"}],
                                                                "keep": "none"}},
    {"id": "drop-metrics", "name": "drop drop_ metrics",
     "metric": {"match": [{"metric_field": "name", "starts_with": "drop_"}], "keep": False}},
]


@pytest.fixture(scope="module")
def engine() -> Engine:
    loaded = load_document({"policies": POLICIES})
    assert not loaded.errors
    return Engine(compile_policies(loaded.policies))


words = st.sampled_from(["debug", "info", "DROPME", "x", "", "drop_", "a b", "é", "{", "="]) | st.text(
    alphabet=st.characters(blacklist_characters="\\\"\n\r", blacklist_categories=["Cs"]), max_size=8)
junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False, allow_infinity=False),
                 words, st.lists(words, max_size=2), st.dictionaries(words, words, max_size=2))


def is_subsequence(small: list[Any], big: list[Any]) -> bool:
    it = iter(big)
    return all(any(x == y for y in it) for x in small)


# ── Datadog ──

dd_log = st.dictionaries(st.sampled_from(["message", "msg", "log", "status", "level", "service", "ddtags",
                                          "hostname", "attributes"]), junk, max_size=5)
dd_series_item = st.fixed_dictionaries({"metric": st.sampled_from(["drop_a", "keep_b", "drop", "x.drop_"]) | junk},
                                       optional={"points": st.lists(st.fixed_dictionaries(
                                           {"timestamp": st.integers(0, 9), "value": st.floats(0, 9)}), max_size=2),
                                           "tags": st.lists(words, max_size=2), "type": st.integers(0, 3) | junk})


def _datadog_dropped(item: Any) -> bool:
    if not isinstance(item, dict):
        return False
    texts = [item.get(k) for k in ("status", "level", "message", "msg", "log")]
    return any(isinstance(t, str) and ("debug" in t or "DROPME" in t) for t in texts) or "DROPME" in json.dumps(item)


@FUZZ
@given(items=st.lists(dd_log | junk, max_size=5))
def test_datadog_logs_fail_open(engine: Engine, items: list[Any]) -> None:
    body = json.dumps(items).encode()
    try:
        result = evaluate_datadog(engine, "log", body)
    except UndecodableBody:
        return
    if result.body is body:
        return
    out = msgspec.json.decode(result.body)
    assert is_subsequence(out, items)
    assert all(_datadog_dropped(item) for item in items if item not in out)


@FUZZ
@given(series=st.lists(dd_series_item | junk, max_size=5), extra=st.dictionaries(st.sampled_from(["meta", "x"]), junk,
                                                                                max_size=1))
def test_datadog_series_fail_open(engine: Engine, series: list[Any], extra: dict[str, Any]) -> None:
    body = json.dumps({"series": series, **extra}).encode()
    try:
        result = evaluate_datadog(engine, "metric", body)
    except UndecodableBody:
        return
    if result.body is body:
        return
    out = msgspec.json.decode(result.body)
    assert {k: v for k, v in out.items() if k != "series"} == extra
    assert is_subsequence(out["series"], series)
    assert all(isinstance(s, dict) and str(s.get("metric", "")).startswith("drop_")
               for s in series if s not in out["series"])


@FUZZ
@given(body=st.binary(max_size=200), signal=st.sampled_from(["log", "metric"]), protobuf=st.booleans())
def test_datadog_arbitrary_bytes(engine: Engine, body: bytes, signal: str, protobuf: bool) -> None:
    with contextlib.suppress(UndecodableBody):
        evaluate_datadog(engine, signal, body, protobuf)


dd_proto_series = st.builds(
    lambda metric, tags, kind, unknown: (metric, tags, kind, unknown),
    st.sampled_from(["drop_a", "keep_b", "drop", "x.drop_", ""]) | words, st.lists(words, max_size=3),
    st.integers(-2, 9), st.sampled_from([b"", b"\x4a\x04\x0a\x02\x20\x0a", b"\xa2\x06\x01z"]))


@FUZZ
@given(series=st.lists(dd_proto_series, max_size=6), tail=st.binary(max_size=8))
def test_datadog_protobuf_series_fail_open(engine: Engine, series: list[Any], tail: bytes) -> None:
    """Kept series leave as the same bytes in the same order; a dropped one is a `drop_` name; junk is undecodable."""
    items = []
    for metric, tags, kind, unknown in series:
        item = MetricPayload.MetricSeries(metric=metric, tags=tags, type=kind)
        item.MergeFromString(unknown)
        items.append(item.SerializeToString())
    body = MetricPayload(series=[MetricPayload.MetricSeries.FromString(i) for i in items]).SerializeToString() + tail
    try:
        result = evaluate_datadog(engine, "metric", body, protobuf=True)
    except UndecodableBody:
        return
    out = [s.SerializeToString() for s in MetricPayload.FromString(result.body).series]
    whole = [s.SerializeToString() for s in MetricPayload.FromString(body).series]
    assert is_subsequence(out, whole)
    dropped = [s for s in MetricPayload.FromString(body).series if s.SerializeToString() not in out]
    assert all(s.metric.startswith("drop_") for s in dropped)


# ── Prometheus scrape filter ──

metric_name = st.sampled_from(["drop_total", "keep_total", "drop_h_bucket", "up", "drop_", "x_drop_total"])
label_set = st.dictionaries(st.sampled_from(["le", "job", "path"]), words, max_size=2).map(
    lambda d: "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}" if d else "")
exposition_line = st.one_of(
    st.builds(lambda n, ls, v: f"{n}{ls} {v}", metric_name, label_set, st.integers(-5, 5)),
    st.builds(lambda n, t: f"# TYPE {n.removesuffix('_total').removesuffix('_bucket')} {t}", metric_name,
              st.sampled_from(["counter", "gauge", "histogram", "untyped"])),
    st.builds(lambda n, h: f"# HELP {n} {h}", metric_name, words),
    words, st.just(""), st.just("x" * 5000),
)


def _run_filter(engine: Engine, data: bytes, cuts: list[int]) -> bytes:
    scrape = ScrapeFilter(engine)
    out = []
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        out.append(scrape.feed(data[start:cut]))
        start = cut
    out.append(scrape.feed(data[start:]))
    out.append(scrape.finish())
    return b"".join(out)


@FUZZ
@given(lines=st.lists(exposition_line, max_size=12), cuts=st.lists(st.integers(0, 400), max_size=4))
def test_prometheus_filter_keeps_lines_and_ignores_chunking(engine: Engine, lines: list[str], cuts: list[int]) -> None:
    data = "".join(line + "\n" for line in lines).encode()
    whole = _run_filter(engine, data, [])
    assert _run_filter(engine, data, cuts) == whole, "the output depends on how the scrape was chunked"
    out_lines = whole.decode().split("\n")[:-1] if whole else []
    assert set(out_lines) <= set(lines), "the filter wrote a line it was not given"
    # Samples keep their order; held # HELP/# TYPE lines and blank lines may move (a held header is
    # written before an over-long line that might belong to its family) or go with their family.
    samples_in = [line for line in lines if line and not line.startswith("#")]
    samples_out = [line for line in out_lines if line and not line.startswith("#")]
    assert is_subsequence(samples_out, samples_in)
    for line in samples_in:
        if line not in samples_out:
            assert line.split("{")[0].split(" ")[0].startswith("drop_"), line


@FUZZ
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=3))
def test_prometheus_filter_arbitrary_bytes(engine: Engine, data: bytes, cuts: list[int]) -> None:
    assert _run_filter(engine, data, cuts) == _run_filter(engine, data, [])


# ── edge-tail formats ──

json_line = st.dictionaries(st.sampled_from(["message", "body", "level", "severity", "attributes", "user"]), junk,
                            max_size=4).map(lambda d: json.dumps(d, ensure_ascii=False))
logfmt_line = st.lists(st.tuples(st.sampled_from(["level", "message", "user", "msg"]), words), max_size=4).map(
    lambda pairs: " ".join(f'{k}="{v}"' if " " in v else f"{k}={v}" for k, v in pairs))
tail_line = st.one_of(json_line, logfmt_line, words, st.just("x" * 300))


@FUZZ
@given(fmt=st.sampled_from(["raw", "json", "logfmt"]), lines=st.lists(tail_line, max_size=10))
def test_tail_formats_keep_lines_byte_for_byte(engine: Engine, fmt: str, lines: list[str]) -> None:
    block = "".join(line + "\n" for line in lines).encode()
    snapshot = engine.snapshot
    kept = LineFilter.fixed(snapshot, fmt, max_line=256).apply(block, "/var/log/app.log")
    out = kept.data.split(b"\n")[:-1] if kept.data else []
    assert kept.lines == len(out)
    raw = [line.encode() for line in lines]
    assert is_subsequence(out, raw)
    for line in raw:
        if line not in out:
            assert len(line) <= 256, "over-long lines pass unfiltered"
            assert b"DROPME" in line or b"debug" in line, line
