"""The Prometheus exposition filter (edge.formats.prometheus.exposition), without HTTP.

Covers the field mapping (sample name, HELP, TYPE with `_bucket`/`_sum`/`_count`/`_total`/
`_created` samples in their family, UNIT, labels), HELP/TYPE held and dropped with their
family, output that prometheus_client parses, chunking that never changes the result, the
4 KiB line buffer, both byte limits, awkward label syntax (escapes, exemplars, quoted names,
text that looks like a label inside a value), fail-open on unreadable lines, and a
cross-check against the engine: every sample as an OTLP metric gives the same keep decision
and the same match statistics.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from edge.engine.engine import Engine
from edge.formats.otlp.body import evaluate
from edge.formats.prometheus.exposition import LINE_MAX, LineCut, ScrapeFilter
from edge.formats.prometheus.labels import parse_labels
from edge.formats.prometheus.policies import scrape_policies
from tests.engine_helpers import clean_engine

EXPOSITION = b"""\
# HELP http_requests_total Total HTTP requests.
# TYPE http_requests_total counter
http_requests_total{method="GET",code="200"} 1027
http_requests_total{method="POST",code="500"} 3
http_requests_total{method="OPTIONS",code="200"} 7
# HELP process_temp_celsius Temperature of the box. DEPRECATED
# TYPE process_temp_celsius gauge
process_temp_celsius 41.5
# HELP rpc_duration_seconds RPC latency.
# TYPE rpc_duration_seconds summary
rpc_duration_seconds{service="a",quantile="0.5"} 0.01
rpc_duration_seconds{service="a",quantile="0.99"} 0.2
rpc_duration_seconds_sum{service="a"} 12.5
rpc_duration_seconds_count{service="a"} 1000
# HELP http_latency_seconds Request latency.
# TYPE http_latency_seconds histogram
http_latency_seconds_bucket{handler="/api",le="0.1"} 5
http_latency_seconds_bucket{handler="/api",le="1"} 9
http_latency_seconds_bucket{handler="/api",le="+Inf"} 10
http_latency_seconds_sum{handler="/api"} 3.5
http_latency_seconds_count{handler="/api"} 10
http_latency_seconds_bucket{handler="/healthz",le="0.1"} 50
http_latency_seconds_bucket{handler="/healthz",le="1"} 50
http_latency_seconds_bucket{handler="/healthz",le="+Inf"} 50
http_latency_seconds_sum{handler="/healthz"} 0.5
http_latency_seconds_count{handler="/healthz"} 50
untyped_thing{region="eu",empty=""} 4
"""


def drop(pid: str, *match: dict[str, Any]) -> dict[str, Any]:
    return {"id": pid, "metric": {"match": list(match), "keep": False}}


def run(engine: Engine, text: bytes, chunk: int | None = None, **options: Any) -> tuple[bytes, ScrapeFilter]:
    scrape = ScrapeFilter(engine, **options)
    step = chunk or len(text) or 1
    out = [scrape.feed(text[i:i + step]) for i in range(0, len(text), step)]
    out.append(scrape.finish())
    scrape.drain()
    assert not scrape.unfiltered, "the filter failed and fell back to forwarding unfiltered"
    return b"".join(out), scrape


def filtered(policies: list[dict[str, Any]], text: bytes = EXPOSITION, **options: Any) -> bytes:
    return run(clean_engine(policies), text, **options)[0]


def sample_lines(text: bytes) -> list[bytes]:
    return [line for line in text.splitlines() if line and not line.startswith(b"#")]


def sample_values(text: bytes) -> list[bytes]:
    """The value of every sample line with labels (the token after the label set)."""
    return [line.split(b"} ", 1)[1].split()[0] for line in sample_lines(text)]


def families(text: bytes) -> dict[str, tuple[str, str, list[tuple[str, dict[str, str], float]]]]:
    """name -> (type, help, samples) as prometheus_client parses the text format."""
    return {f.name: (f.type, f.documentation, [(s.name, s.labels, s.value) for s in f.samples])
            for f in text_string_to_metric_families(text.decode())}


def without(text: bytes, *names: bytes) -> list[bytes]:
    """EXPOSITION's sample lines minus those whose sample name is in `names`."""
    return [line for line in sample_lines(text) if line.split(b"{")[0].split(b" ")[0] not in names]


# ── the field mapping ──


def test_name_is_the_sample_name_and_the_family_keeps_its_headers_once() -> None:
    out = filtered([drop("buckets", {"metric_field": "name", "exact": "http_latency_seconds_bucket"})])
    assert sample_lines(out) == without(EXPOSITION, b"http_latency_seconds_bucket")
    assert out.count(b"# TYPE http_latency_seconds histogram\n") == 1
    parsed = families(out)
    assert parsed["http_latency_seconds"][0] == "histogram"
    assert [s[0] for s in parsed["http_latency_seconds"][2]] == ["http_latency_seconds_sum",
                                                                 "http_latency_seconds_count"] * 2


@pytest.mark.parametrize(("metric_type", "family"), [
    ("sum", b"http_requests_total"),
    ("gauge", b"process_temp_celsius"),
    ("histogram", b"http_latency_seconds"),
    ("summary", b"rpc_duration_seconds"),
])
def test_metric_type_comes_from_type_for_every_sample_of_the_family(metric_type: str, family: bytes) -> None:
    out = filtered([drop("by-type", {"metric_type": metric_type})])
    assert family not in out, out.decode()  # every sample and both headers
    kept = sample_lines(out)
    assert kept == [line for line in sample_lines(EXPOSITION) if not line.startswith(family)]
    assert families(out)  # still a valid exposition


def test_description_is_the_help_text_and_a_dropped_family_leaves_no_headers() -> None:
    out = filtered([drop("deprecated", {"metric_field": "description", "contains": "DEPRECATED"})])
    assert b"process_temp_celsius" not in out
    assert out == EXPOSITION.replace(b"# HELP process_temp_celsius Temperature of the box. DEPRECATED\n"
                                     b"# TYPE process_temp_celsius gauge\nprocess_temp_celsius 41.5\n", b"")


def test_datapoint_attribute_is_the_label_value() -> None:
    out = filtered([drop("options", {"datapoint_attribute": "method", "exact": "OPTIONS"}),
                    drop("health", {"metric_field": "name", "starts_with": "http_latency"},
                         {"datapoint_attribute": "handler", "exact": "/healthz"})])
    assert b'method="OPTIONS"' not in out and b"/healthz" not in out
    assert len(sample_lines(out)) == len(sample_lines(EXPOSITION)) - 6
    assert families(out)["http_requests"][2][1][1] == {"method": "POST", "code": "500"}


def test_an_empty_label_value_is_an_absent_label() -> None:
    out = filtered([drop("no-empty", {"datapoint_attribute": "empty", "exists": False},
                         {"metric_field": "name", "exact": "untyped_thing"})])
    assert b"untyped_thing" not in out
    out = filtered([drop("empty-present", {"datapoint_attribute": "empty", "exists": True})])
    assert out == EXPOSITION


def test_openmetrics_counter_total_and_created_unit_and_eof() -> None:
    text = (b"# TYPE served_bytes counter\n# UNIT served_bytes bytes\n# HELP served_bytes Bytes served.\n"
            b'served_bytes_total{path="/a"} 3.0\nserved_bytes_created{path="/a"} 1.7e9\n'
            b"# TYPE latency_seconds gauge\n# UNIT latency_seconds seconds\nlatency_seconds 0.5\n# EOF\n")
    engine = clean_engine([drop("seconds", {"metric_field": "unit", "exact": "seconds"}),
                           drop("sums", {"metric_type": "sum"}, {"metric_field": "name", "ends_with": "_created"})])
    out, scrape = run(engine, text, openmetrics=True)
    assert out == (b"# TYPE served_bytes counter\n# UNIT served_bytes bytes\n# HELP served_bytes Bytes served.\n"
                   b'served_bytes_total{path="/a"} 3.0\n# EOF\n')
    [family] = list(parse_openmetrics(out.decode()))
    assert (family.name, family.type, family.unit) == ("served_bytes", "counter", "bytes")
    assert engine.stats.snapshot()["sums"].hits == 1 and engine.stats.snapshot()["seconds"].hits == 1
    assert scrape.truncated is None


def test_samples_outside_the_typed_family_have_no_type_or_help() -> None:
    text = b"# HELP a_total A.\n# TYPE a_total counter\na_total 1\nb_total 2\n"
    out = filtered([drop("sums", {"metric_type": "sum"})], text)
    assert out == b"b_total 2\n"
    out = filtered([drop("help", {"metric_field": "description", "exists": False})], text)
    assert out == b"# HELP a_total A.\n# TYPE a_total counter\na_total 1\n"


def test_headers_go_just_before_the_first_kept_sample() -> None:
    text = (b"# HELP g A gauge.\n# TYPE g gauge\n# a plain comment\ng{k=\"drop\"} 1\ng{k=\"keep\"} 2\n"
            b"# HELP h Another.\n# TYPE h gauge\nh{k=\"drop\"} 3\n")
    out = filtered([drop("k", {"datapoint_attribute": "k", "exact": "drop"})], text)
    assert out == b"# a plain comment\n# HELP g A gauge.\n# TYPE g gauge\ng{k=\"keep\"} 2\n"


def test_nothing_matching_leaves_the_exposition_untouched_and_counts() -> None:
    engine = clean_engine([drop("nope", {"metric_field": "name", "starts_with": "nothing_"})])
    out, scrape = run(engine, EXPOSITION, chunk=37)
    assert out == EXPOSITION
    assert engine.stats.snapshot() == {}


# ── statistics and the engine's semantics ──


def test_match_statistics_follow_the_engine_rules() -> None:
    engine = clean_engine([
        drop("a-drop-post", {"datapoint_attribute": "method", "exact": "POST"}),
        drop("b-drop-5xx", {"datapoint_attribute": "code", "starts_with": "5"}),
        {"id": "c-keep-http", "metric": {"match": [{"metric_field": "name", "starts_with": "http_requests"}],
                                         "keep": True}},
    ])
    out, _ = run(engine, EXPOSITION)
    stats = {pid: (c.hits, c.misses) for pid, c in engine.stats.snapshot().items()}
    # the POST line: both drops match, the first by id takes the hit; the keep policy misses on it
    assert stats == {"a-drop-post": (1, 0), "b-drop-5xx": (0, 1), "c-keep-http": (2, 1)}
    assert b'method="POST"' not in out


NAMES = ["http_requests_total", "http_requests_created", "jobs_duration_seconds", "queue_depth", "temp_celsius"]
HELPS = ["Requests served.", "Duration of jobs, DEPRECATED", "Depth", ""]
LABELS = {"method": ["GET", "POST", "OPTIONS", "get", "x,code=", "a}b"], "code": ["200", "404", "500", "5,env="],
          "env": ["prod", "dev", "dev,x", 'say "hi"', "a\\b", "line\nbreak", "", "x,env=", "ſ", "#dev"]}
TYPES = ["counter", "gauge", "histogram", "summary"]
CONDITIONS = [
    {"metric_field": "name", "starts_with": "http_"}, {"metric_field": "name", "regex": "_(bucket|sum)$"},
    {"metric_field": "name", "exact": "queue_depth"}, {"metric_field": "description", "contains": "DEPRECATED"},
    {"metric_field": "description", "exists": False}, {"metric_type": "histogram"}, {"metric_type": "sum"},
    {"metric_type": "gauge"}, {"metric_type": "summary"}, {"aggregation_temporality": "cumulative"},
    {"datapoint_attribute": "method", "exact": "GET"},
    {"datapoint_attribute": "method", "exact": "get", "case_insensitive": True},
    {"datapoint_attribute": "code", "regex": "^5"}, {"datapoint_attribute": "code", "exists": True},
    {"datapoint_attribute": "env", "contains": "dev"}, {"datapoint_attribute": "env", "ends_with": "x"},
    {"datapoint_attribute": "env", "exact": 'say "hi"'}, {"datapoint_attribute": "env", "exists": False},
    {"datapoint_attribute": "env", "starts_with": "line"}, {"datapoint_attribute": "env", "exact": "a\\b"},
    {"datapoint_attribute": "env", "exact": "S", "case_insensitive": True},
    {"datapoint_attribute": "code", "starts_with": "5"}, {"datapoint_attribute": "method", "contains": "}"},
    {"datapoint_attribute": "code", "exact": "5,env="}, {"datapoint_attribute": "method", "starts_with": "x,"},
    {"datapoint_attribute": "env", "contains": "code"}, {"datapoint_attribute": "code", "ends_with": "0"},
    {"datapoint_attribute": "le", "exact": "+Inf"}, {"datapoint_attribute": "quantile", "exists": True},
    {"datapoint_attribute": ["env", "nested"], "exists": False},
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def random_exposition(rng: random.Random) -> tuple[bytes, list[dict[str, Any]]]:
    """A random typed exposition and, for each sample line, the same sample as an OTLP metric."""
    lines: list[str] = []
    metrics: list[dict[str, Any]] = []
    for f in range(rng.randrange(1, 6)):
        kind = rng.choice(TYPES)
        family = f"{rng.choice(NAMES)}_{f}"
        help_text = rng.choice(HELPS)
        lines += [f"# HELP {family} {help_text}" if help_text else f"# HELP {family}", f"# TYPE {family} {kind}"]
        for _ in range(rng.randrange(1, 5)):
            labels = {k: rng.choice(v) for k, v in LABELS.items() if rng.random() < 0.7}
            suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_bucket", "_sum", "_count"],
                        "summary": ["", "_sum", "_count"]}[kind]
            for suffix in suffixes:
                point = dict(labels)
                if suffix == "_bucket":
                    point["le"] = rng.choice(["0.1", "+Inf"])
                elif kind == "summary" and not suffix:
                    point["quantile"] = "0.5"
                text = ",".join(f'{k}="{_escape(v)}"' for k, v in point.items())
                lines.append(f"{family}{suffix}{{{text}}} {rng.randrange(100)}")
                data = {"dataPoints": [{"attributes": [{"key": k, "value": {"stringValue": v}}
                                                       for k, v in point.items() if v], "asDouble": 1.0}]}
                otlp_kind = {"counter": "sum", "gauge": "gauge", "histogram": "histogram", "summary": "summary"}[kind]
                if kind in ("counter", "histogram"):
                    data["aggregationTemporality"] = 2
                metrics.append({"name": family + suffix, "description": help_text, otlp_kind: data})
    return ("\n".join(lines) + "\n").encode(), metrics


@pytest.mark.parametrize("seed", range(80))
def test_same_decisions_and_statistics_as_the_engine_on_otlp(seed: int) -> None:
    rng = random.Random(seed)
    text, metrics = random_exposition(rng)
    policies = [{"id": f"p{i}", "metric": {"match": rng.sample(CONDITIONS, rng.randrange(1, 3)),
                                           "keep": rng.random() < 0.3}} for i in range(rng.randrange(1, 6))]
    prom_engine, otlp_engine = clean_engine(policies), clean_engine(policies)
    out, _ = run(prom_engine, text, chunk=rng.choice([7, 64, 4096]))
    body = orjson.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": metrics}]}]})
    result = evaluate(otlp_engine, "metric", body, "application/json")
    kept_otlp = [m["name"] for rm in orjson.loads(result.body)["resourceMetrics"]
                 for sm in rm["scopeMetrics"] for m in sm["metrics"]] if result.outcome.kept else []
    kept_prom = [line.split(b"{")[0].decode() for line in sample_lines(out)]
    assert kept_prom == kept_otlp, (policies, text.decode())
    assert _stats(prom_engine) == _stats(otlp_engine)
    parsed = [s for f in text_string_to_metric_families(out.decode()) for s in f.samples]
    assert len(parsed) == len(kept_prom)


def _stats(engine: Engine) -> dict[str, tuple[int, int]]:
    return {pid: (c.hits, c.misses) for pid, c in engine.stats.snapshot().items()}


# ── streaming ──


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=len(EXPOSITION) - 1), max_size=12, unique=True))
def test_where_the_chunks_split_never_changes_the_output(cuts: list[int]) -> None:
    engine = clean_engine([drop("options", {"datapoint_attribute": "method", "exact": "OPTIONS"}),
                           drop("buckets", {"metric_field": "name", "ends_with": "_bucket"},
                                {"datapoint_attribute": "le", "regex": "^0"})])
    whole, _ = run(engine, EXPOSITION)
    scrape = ScrapeFilter(engine)
    bounds = [0, *sorted(cuts), len(EXPOSITION)]
    pieces = [scrape.feed(EXPOSITION[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert b"".join(pieces) + scrape.finish() == whole
    assert all(not p or p.endswith(b"\n") for p in pieces)  # whole lines only


def test_a_last_line_without_newline_is_filtered_too() -> None:
    engine = clean_engine([drop("b", {"metric_field": "name", "exact": "b"})])
    assert run(engine, b"a 1\nb 2")[0] == b"a 1\n"
    assert run(engine, b"b 2\na 1")[0] == b"a 1"


def test_lines_over_the_line_buffer_pass_unfiltered() -> None:
    long_value = "x" * (LINE_MAX + 100)
    long_line = f'dropme{{big="{long_value}"}} 1'.encode()
    text = b"# HELP dropme D.\n# TYPE dropme gauge\n" + long_line + b"\ndropme{small=\"1\"} 2\nkeep 3\n"
    engine = clean_engine([drop("d", {"metric_field": "name", "exact": "dropme"})])
    for chunk in (None, 1000, 17):
        out, _ = run(engine, text, chunk=chunk)
        assert out == b"# HELP dropme D.\n# TYPE dropme gauge\n" + long_line + b"\nkeep 3\n", chunk


def test_a_long_comment_is_forwarded_where_it_stands_and_describes_nothing() -> None:
    long_help = b"# HELP g " + b"h" * LINE_MAX
    text = long_help + b"\n# TYPE g gauge\ng{k=\"a\"} 1\ng{k=\"b\"} 2\n"
    engine = clean_engine([drop("a", {"datapoint_attribute": "k", "exact": "a"}),
                           drop("described", {"metric_field": "description", "exists": True})])
    for chunk in (None, 100, 7):
        out, _ = run(engine, text, chunk=chunk)
        assert out == long_help + b"\n# TYPE g gauge\ng{k=\"b\"} 2\n", chunk


def test_the_input_limit_ends_at_a_line_boundary_and_is_reported() -> None:
    engine = clean_engine([drop("none", {"metric_field": "name", "exact": "nothing"})])
    limit = EXPOSITION.index(b"process_temp_celsius 41.5") + 5
    out, scrape = run(engine, EXPOSITION, chunk=10, max_input=limit)
    assert out == EXPOSITION[:EXPOSITION.rindex(b"\n", 0, limit) + 1].replace(
        b"# HELP process_temp_celsius Temperature of the box. DEPRECATED\n# TYPE process_temp_celsius gauge\n", b"")
    assert scrape.truncated == "input" and scrape.done
    assert scrape.feed(b"more 1\n") == b""


def test_the_output_limit_ends_at_a_line_boundary_and_openmetrics_still_ends_with_eof() -> None:
    engine = clean_engine([drop("temp", {"metric_field": "name", "exact": "process_temp_celsius"})])
    full, _ = run(engine, EXPOSITION)
    for limit in (1, 60, 200, 333, len(full) - 1):
        out, scrape = run(engine, EXPOSITION, chunk=50, max_output=limit)
        assert len(out) <= limit and full.startswith(out) and (not out or out.endswith(b"\n")), limit
        assert scrape.truncated == "output"
        if len(full) > limit + 6:
            om, scrape = run(engine, EXPOSITION, chunk=50, max_output=limit + 6, openmetrics=True)
            assert om.endswith(b"# EOF\n") and len(om) <= limit + 6 and scrape.truncated == "output"
            assert full.startswith(om[:-6])
    out, scrape = run(engine, EXPOSITION, max_output=len(full))
    assert out == full and scrape.truncated is None


def test_a_limit_inside_a_forwarded_long_line_aborts() -> None:
    text = b"a 1\n" + b"b{x=\"" + b"y" * (3 * LINE_MAX) + b"\"} 1\n"
    engine = clean_engine([drop("a", {"metric_field": "name", "exact": "zzz"})])
    with pytest.raises(LineCut):
        run(engine, text, chunk=LINE_MAX, max_input=2 * LINE_MAX)


# ── awkward label syntax ──


def test_escapes_exemplars_and_label_lookalikes_are_read_exactly() -> None:
    text = (b'm{a="x,env=",env="prod"} 1\n'  # `,env="` inside a value, then the real label
            b'm{a="x,env=",b="1"} 2\n'  # only inside a value: env is absent
            b'm{env="dev",a="\\"q\\\\"} 3\n'  # escapes
            b'm{env = "dev" , a="1"} 4\n'  # blanks the format allows
            b'm{"env"="dev"} 5\n'  # a quoted label name
            b'm_total{a="1"} 6 # {env="dev"} 1.0\n'  # an exemplar is not a label
            b'm{a="1",env="dev"} 7\n')
    out = filtered([drop("dev", {"datapoint_attribute": "env", "exact": "dev"})], text)
    assert sample_values(out) == [b"1", b"2", b"6"]
    out = filtered([drop("no-env", {"datapoint_attribute": "env", "exists": False})], text)
    assert sample_values(out) == [b"1", b"3", b"4", b"5", b"7"]


def test_a_label_name_that_ends_another_is_not_that_label() -> None:
    for policy in (drop("fine", {"datapoint_attribute": "le", "regex": "^0"}),
                   drop("fine", {"datapoint_attribute": "le", "exact": "0.1"})):
        assert filtered([policy], b'm{xle="0.1"} 1\nm{a="x",le="0.1"} 2\nm{xle="0.1"} 3\n') == (
            b'm{xle="0.1"} 1\nm{xle="0.1"} 3\n')
        assert filtered([policy], b'm{xle="0.1"} 1\n') == b'm{xle="0.1"} 1\n'


def test_unreadable_lines_pass_unfiltered() -> None:
    text = b'm{env="dev} 1\nm{env="dev"} 2\n{"quoted.name"} 3\n9bad 4\n\n  \n'
    engine = clean_engine([drop("dev", {"datapoint_attribute": "env", "contains": "dev"}),
                           drop("all", {"metric_field": "name", "regex": ".*"}, {"metric_field": "name",
                                                                                  "exact": "9bad"})])
    out, _ = run(engine, text)
    assert out == b'm{env="dev} 1\n{"quoted.name"} 3\n9bad 4\n\n  \n'


def test_parse_labels() -> None:
    assert parse_labels(b'm{a="1", "b.c"="x\\"y",}  2') == {b"a": b"1", b"b.c": b'x\\"y'}
    assert parse_labels(b"m 2") == {}
    assert parse_labels(b'm{a="1"') is None
    assert parse_labels(b'm{"m.name", a="1"} 2') == {b"a": b"1"}


def test_prepared_policies_are_built_once_per_snapshot() -> None:
    engine = clean_engine([drop("a", {"datapoint_attribute": "k", "exact": "v"})])
    first = scrape_policies(engine.snapshot)
    run(engine, EXPOSITION)
    assert scrape_policies(engine.snapshot) is first and first.verdicts
    other = clean_engine([drop("a", {"datapoint_attribute": "k", "exact": "v"})])
    assert scrape_policies(other.snapshot) is not first


def test_an_internal_error_forwards_the_rest_unfiltered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fault injection: no input is known to break the filter, so a failure is forced once it has started."""
    engine = clean_engine([drop("temp", {"metric_field": "name", "exact": "process_temp_celsius"}),
                           drop("options", {"datapoint_attribute": "method", "exact": "OPTIONS"})])
    cut = EXPOSITION.index(b"# HELP process_temp")
    scrape = ScrapeFilter(engine)
    first = scrape.feed(EXPOSITION[:cut])

    def broken(*args: Any) -> bytes:
        raise RuntimeError("injected")

    monkeypatch.setattr(scrape.policies, "evaluate", broken)
    monkeypatch.setattr(scrape.policies, "resolve", broken)
    rest = scrape.feed(EXPOSITION[cut:]) + scrape.finish()
    assert b'method="OPTIONS"' not in first
    assert first + rest == EXPOSITION.replace(b'http_requests_total{method="OPTIONS",code="200"} 7\n', b"")
    assert scrape.unfiltered


def test_crlf_line_endings() -> None:
    text = (b'# HELP g Help me\r\n# TYPE g gauge\r\ng{k="v"} 1\r\ng{k="w"} 2\r\n'
            b'# HELP h Other\r\n# TYPE h gauge\r\nh{k="x"} 3\r\nu{k="v"} 4\r\n')
    out = filtered([drop("gauge-v", {"metric_type": "gauge"}, {"datapoint_attribute": "k", "exact": "v"}),
                    drop("other", {"metric_field": "description", "exact": "Other"})], text)
    assert out == b'# HELP g Help me\r\n# TYPE g gauge\r\ng{k="w"} 2\r\nu{k="v"} 4\r\n'
