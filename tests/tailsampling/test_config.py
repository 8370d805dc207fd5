"""The `tail_sampling` config section (docs/tail-sampling.md): keys, durations, overrides and policy checks."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge import config as cfg
from edge.tailsampling.decider import compile_decider
from tests.reliability.harness import EDGE_SCRIPT

ERRORS = {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}}


def tail(doc: dict[str, Any], env: dict[str, str] | None = None) -> cfg.TailSamplingConfig:
    return cfg.build({"tail_sampling": doc}, env=env or {}).tail_sampling


def test_defaults_are_the_documented_ones() -> None:
    t = tail({})
    assert (t.enabled, t.decision_wait, t.num_traces, t.expected_new_traces_per_sec) == (False, 30.0, 50_000, 0)
    assert (t.decision_cache.sampled_cache_size, t.decision_cache.non_sampled_cache_size) == (0, 0)
    assert (t.sample_on_first_match, t.policies, t.max_buffer_bytes) == (False, (), 268_435_456)
    assert (t.wal_dir, t.wal_fsync, t.wal_fsync_interval, t.max_wal_bytes) == (
        ".tero/tail-sampling-wal", "interval", 0.1, 1_073_741_824)
    assert (t.peers.static, t.peers.dns, t.peers.port, t.peers.interval) == ((), "", 8080, 5.0)
    assert (t.rollup_interval, t.rollup_cardinality_limit, t.export_queue_bytes) == (60.0, 1000, 67_108_864)
    assert t.logs.follow_traces is False


def test_the_defaults_taken_from_outside_the_section() -> None:
    """The rollup URL follows `metrics_url`; the advertised member is $POD_IP, else listen_address, with listen_port."""
    c = cfg.build({"upstream_url": "http://up:4318", "listen_port": 9000}, env={})
    assert c.tail_sampling.metrics_url == "http://up:4318/v1/metrics"
    assert c.tail_sampling.peers.advertise == "127.0.0.1:9000"
    c = cfg.build({"metrics_url": "http://m:1", "tail_sampling": {"metrics_url": "http://r:2/v1/metrics/"}},
                  env={"POD_IP": "fd00::7"})
    assert c.tail_sampling.metrics_url == "http://r:2/v1/metrics"
    assert c.tail_sampling.peers.advertise == "[fd00::7]:8080"
    assert cfg.build({}, env={"POD_IP": "10.0.0.3"}).tail_sampling.peers.advertise == "10.0.0.3:8080"


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("500ms", 0.5), ("1m", 60.0), ("1h", 3600.0), ("1m30s", 90.0), ("1.5s", 1.5), ("250us", 0.00025),
    (" 2s ", 2.0), (7, 7.0), (0.25, 0.25), ("12", 12.0), ("0.5", 0.5)])
def test_durations_are_collector_strings_or_seconds(text: Any, seconds: float) -> None:
    assert tail({"decision_wait": text}).decision_wait == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["30 s", "s", "1d", "-1s", "0s", 0, -2, True, "nan", "inf", [1]])
def test_a_bad_duration_names_the_key(value: Any) -> None:
    with pytest.raises(cfg.ConfigError, match=r"^config key tail_sampling\.rollup_interval: "):
        tail({"rollup_interval": value})


def test_every_scalar_key_has_its_env_override() -> None:
    env = {"TERO_TAIL_SAMPLING_ENABLED": "true", "TERO_TAIL_SAMPLING_DECISION_WAIT": "10s",
           "TERO_TAIL_SAMPLING_DECISION_CACHE_SAMPLED_CACHE_SIZE": "500", "TERO_TAIL_SAMPLING_PEERS_DNS": "peers",
           "TERO_TAIL_SAMPLING_PEERS_INTERVAL": "250ms", "TERO_TAIL_SAMPLING_WAL_FSYNC": "Always",
           "TERO_TAIL_SAMPLING_LOGS_FOLLOW_TRACES": "yes", "TERO_TAIL_SAMPLING_NUM_TRACES": "7"}
    t = tail({"decision_wait": "1m", "num_traces": 3, "policies": [ERRORS]}, env)
    assert (t.enabled, t.decision_wait, t.num_traces, t.wal_fsync) == (True, 10.0, 7, "always")
    assert t.decision_cache.sampled_cache_size == 500 and t.logs.follow_traces is True
    assert (t.peers.dns, t.peers.interval) == ("peers", 0.25)


@pytest.mark.parametrize(("doc", "message"), [
    ({"num_traces": 0}, "tail_sampling.num_traces: must be positive, got 0"),
    ({"wal_fsync": "sometimes"}, "tail_sampling.wal_fsync: expected interval, always or never, got 'sometimes'"),
    ({"decision_cache": {"sampled_cache_size": -1}}, "tail_sampling.decision_cache.sampled_cache_size: must be zero"),
    ({"peers": {"static": ["a:1"], "dns": "b"}}, "tail_sampling.peers: static and dns exclude each other"),
    ({"peers": {"static": ["a:1", "b"]}}, "tail_sampling.peers.static[1]: expected host:port, got 'b'"),
    ({"peers": {"static": ["a:70000"]}}, "tail_sampling.peers.static[0]: expected host:port"),
    ({"peers": {"advertise": "nope"}}, "tail_sampling.peers.advertise: expected host:port"),
    ({"metrics_url": "ftp://x"}, "tail_sampling.metrics_url: expected an http(s) URL"),
    ({"enabled": True}, "tail_sampling.policies: tail_sampling is enabled but has no policy"),
    ({"policies": {"name": "x"}}, "tail_sampling.policies: expected a list of policies"),
    ("on", "tail_sampling: expected an object"),
])
def test_bad_values_are_one_line_naming_the_key(doc: Any, message: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        tail(doc)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_static_members_and_unknown_keys() -> None:
    c = cfg.build({"tail_sampling": {"peers": {"static": ["edge-0:8080", "[fd00::1]:8080", "10.0.0.2:8080"]},
                                     "colour": 1, "decision_cache": {"size": 1}, "policies": [
                                         {**ERRORS, "extra": 1, "status_code": {"status_codes": ["OK"], "x": 2}}]}},
                  env={})
    assert c.tail_sampling.peers.static == ("edge-0:8080", "[fd00::1]:8080", "10.0.0.2:8080")
    assert c.warnings == ("config key tail_sampling.colour: unknown, ignored",
                          "config key tail_sampling.decision_cache.size: unknown, ignored",
                          "config key tail_sampling.policies[0].extra: unknown, ignored",
                          "config key tail_sampling.policies[0].status_code.x: unknown, ignored")
    stray = policy_list_warnings([{"name": "l", "type": "latency", "latency": {
        "threshold_ms": 1, "and_sub_policy": [5]}}, {"name": "a", "type": "and", "and": {"and_sub_policy": [
            {"name": "s", "type": "always_sample", "always_sample": {"odd": 1}}]}}])
    assert stray == ("config key tail_sampling.policies[0].latency.and_sub_policy: unknown, ignored",
                     "config key tail_sampling.policies[1].and.and_sub_policy[0].always_sample.odd: unknown, ignored")


def policy_list_warnings(policies: list[Any]) -> tuple[str, ...]:
    return cfg.build({"tail_sampling": {"policies": policies}}, env={}).warnings


# ── policies ──

EVERY_TYPE = [
    {"name": "all", "type": "always_sample"},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 100, "upper_threshold_ms": 5000}},
    ERRORS,
    {"name": "num", "type": "numeric_attribute", "numeric_attribute": {"key": "http.status_code", "min_value": 500}},
    {"name": "str", "type": "string_attribute", "string_attribute": {
        "key": "service.name", "values": ["^check.*"], "enabled_regex_matching": True, "invert_match": True}},
    {"name": "bool", "type": "boolean_attribute", "boolean_attribute": {"key": "debug", "value": True}},
    {"name": "prob", "type": "probabilistic", "probabilistic": {"sampling_percentage": 12.5, "hash_salt": "s"}},
    {"name": "rate", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 100}},
    {"name": "bytes", "type": "bytes_limiting", "bytes_limiting": {"bytes_per_second": 1000}},
    {"name": "count", "type": "span_count", "span_count": {"min_spans": 2}},
    {"name": "state", "type": "trace_state", "trace_state": {"key": "vendor", "values": ["keep"]}},
    {"name": "both", "type": "and", "and": {"and_sub_policy": [ERRORS, {"name": "all", "type": "always_sample"}]}},
    {"name": "nohealth", "type": "drop", "drop": {"drop_sub_policy": [
        {"name": "h", "type": "string_attribute", "string_attribute": {"key": "url.path", "values": ["/healthz"]}}]}},
    {"name": "mix", "type": "composite", "composite": {
        "max_total_spans_per_second": 1000, "policy_order": ["e", "x"],
        "composite_sub_policy": [{"name": "x", "type": "always_sample"},
                                 {"name": "e", "type": "and", "and": {"and_sub_policy": [ERRORS]}}],
        "rate_allocation": [{"policy": "e", "percent": 60}, {"policy": "x", "percent": 40}]}},
]


def test_every_policy_type_loads_with_its_defaults_filled_in() -> None:
    policies = tail({"enabled": True, "policies": EVERY_TYPE}).policies
    assert [p["name"] for p in policies] == [p["name"] for p in EVERY_TYPE]
    by_name = {p["name"]: p for p in policies}
    assert by_name["num"]["numeric_attribute"] == {"key": "http.status_code", "min_value": 500, "max_value": None,
                                                   "invert_match": False}
    assert by_name["str"]["string_attribute"]["cache_max_size"] == 0
    assert by_name["bytes"]["bytes_limiting"] == {"bytes_per_second": 1000, "burst_capacity": 0}
    assert by_name["count"]["span_count"] == {"min_spans": 2, "max_spans": 0}
    assert by_name["all"] == {"name": "all", "type": "always_sample", "always_sample": {}}
    assert by_name["mix"]["composite"]["composite_sub_policy"][1]["and"]["and_sub_policy"][0] == ERRORS


def test_the_validated_policies_reach_the_workers_unchanged() -> None:
    c = cfg.build({"tail_sampling": {"enabled": True, "decision_wait": "2s", "policies": EVERY_TYPE}}, env={})
    assert cfg.from_json(c.to_json()) == c


def _policy_error(policy: dict[str, Any]) -> str:
    with pytest.raises(cfg.ConfigError) as err:
        tail({"policies": [ERRORS, policy]})
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize(("policy", "message"), [
    ({"name": "o", "type": "ottl_condition", "ottl_condition": {"span": ["true"]}},
     "config key tail_sampling.policies[1] (o): ottl_condition is not supported; "),
    ({"name": "u", "type": "sometimes"}, "config key tail_sampling.policies[1] (u): unknown policy type 'sometimes'; "
                                         "expected one of always_sample, and, boolean_attribute,"),
    ({"name": "t"}, "policies[1] (t): type is missing"),
    ({"type": "always_sample"}, "policies[1]: every policy needs a name"),
    ("errors", "policies[1]: expected an object"),
    ({**ERRORS}, "policies: two policies are named 'errors'"),
    ({"name": "l", "type": "latency"}, "policies[1] (l): latency.threshold_ms: required"),
    ({"name": "l", "type": "latency", "latency": {"threshold_ms": "5"}},
     "policies[1] (l): latency.threshold_ms: expected an integer, got '5'"),
    ({"name": "l", "type": "latency", "latency": {"threshold_ms": 50, "upper_threshold_ms": 50}},
     "latency.upper_threshold_ms: must be above threshold_ms"),
    ({"name": "l", "type": "latency", "latency": [1]}, "policies[1] (l): latency: expected an object"),
    ({"name": "s", "type": "status_code", "status_code": {"status_codes": ["FAILED"]}},
     "status_code.status_codes[0]: expected OK, ERROR or UNSET, got 'FAILED'"),
    ({"name": "s", "type": "status_code", "status_code": {"status_codes": []}},
     "status_code.status_codes: must name at least one value"),
    ({"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k"}},
     "numeric_attribute: needs min_value, max_value or both"),
    ({"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "k", "min_value": 5, "max_value": 1}},
     "numeric_attribute: min_value 5 is above max_value 1"),
    ({"name": "n", "type": "numeric_attribute", "numeric_attribute": {"key": "", "min_value": 5}},
     "numeric_attribute.key: must not be empty"),
    ({"name": "r", "type": "string_attribute", "string_attribute": {"key": "k", "values": ["(["],
                                                                     "enabled_regex_matching": True}},
     "policies[1] (r): string_attribute.values[0]: invalid regex '(['"),
    ({"name": "b", "type": "boolean_attribute", "boolean_attribute": {"key": "k", "value": "true"}},
     "boolean_attribute.value: expected true or false, got 'true'"),
    ({"name": "p", "type": "probabilistic", "probabilistic": {"sampling_percentage": 101}},
     "probabilistic.sampling_percentage: expected 0..100, got 101"),
    ({"name": "p", "type": "rate_limiting", "rate_limiting": {"spans_per_second": 0}},
     "rate_limiting.spans_per_second: must be positive"),
    ({"name": "c", "type": "span_count", "span_count": {"min_spans": 5, "max_spans": 2}},
     "span_count.max_spans: must be at least min_spans"),
    ({"name": "t", "type": "trace_state", "trace_state": {"key": "k", "values": "v"}},
     "trace_state.values: expected a list of strings, got 'v'"),
    ({"name": "a", "type": "and", "and": {"and_sub_policy": []}}, "and.and_sub_policy: expected a non-empty list"),
    ({"name": "a", "type": "and", "and": {"and_sub_policy": [{"name": "d", "type": "drop"}]}},
     "policies[1] (a): and.and_sub_policy[0] (d): a drop policy cannot be nested here"),
    ({"name": "a", "type": "and", "and": {"and_sub_policy": [{"name": "l", "type": "latency", "latency": {}}]}},
     "policies[1] (a): and.and_sub_policy[0] (l): latency.threshold_ms: required"),
    ({"name": "d", "type": "drop", "drop": {"drop_sub_policy": [{"name": "o", "type": "ottl_condition"}]}},
     "policies[1] (d): drop.drop_sub_policy[0] (o): ottl_condition is not supported"),
    ({"name": "c", "type": "composite", "composite": {"max_total_spans_per_second": 10, "composite_sub_policy": [
        {"name": "x", "type": "composite"}]}}, "composite.composite_sub_policy[0] (x): a composite policy cannot be"),
    ({"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 10, "policy_order": ["y"],
        "composite_sub_policy": [{"name": "x", "type": "always_sample"}]}},
     "composite.policy_order[0]: no composite_sub_policy is named 'y'"),
    ({"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 10, "composite_sub_policy": [{"name": "x", "type": "always_sample"}],
        "rate_allocation": [{"policy": "x", "percent": 70}, {"policy": "x", "percent": 40}]}},
     "composite.rate_allocation: the percents add up to more than 100"),
    ({"name": "c", "type": "composite", "composite": {
        "max_total_spans_per_second": 10, "composite_sub_policy": [{"name": "x", "type": "always_sample"}],
        "rate_allocation": [{"policy": "z", "percent": 10}]}},
     "composite.rate_allocation[0].policy: no composite_sub_policy is named 'z'"),
])
def test_a_bad_policy_is_one_line_naming_it(policy: Any, message: str) -> None:
    assert message in _policy_error(policy)


# ── through the commands ──

OTTL = {"tail_sampling": {"enabled": True, "policies": [
    ERRORS, {"name": "by-ottl", "type": "ottl_condition", "ottl_condition": {"span": ['name == "x"']}}]}}
OTTL_LINE = ("config key tail_sampling.policies[1] (by-ottl): ottl_condition is not supported; express the condition "
             "with the other policy types (string_attribute, numeric_attribute, status_code, ...) or as an edge "
             "trace policy")
UNKNOWN = {"tail_sampling": {"policies": [{"name": "odd", "type": "sometimes"}]}}


def _run(tmp_path: Path, doc: dict[str, Any], *command: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(doc))
    return subprocess.run([str(EDGE_SCRIPT), *command, str(path)], capture_output=True, text=True, timeout=60)


def test_edge_validate_prints_the_policy_error_and_exits_2(tmp_path: Path) -> None:
    result = _run(tmp_path, OTTL, "validate")
    assert result.returncode == 2 and result.stderr == ""
    assert result.stdout.splitlines() == [f"config: {tmp_path / 'config.json'}", f"error: {OTTL_LINE}"]
    result = _run(tmp_path, UNKNOWN, "validate")
    assert result.returncode == 2 and "policies[0] (odd): unknown policy type 'sometimes'" in result.stdout


def test_edge_refuses_to_start_with_one_line(tmp_path: Path) -> None:
    for doc, line in [(OTTL, OTTL_LINE), (UNKNOWN, "unknown policy type 'sometimes'")]:
        result = _run(tmp_path, {**doc, "listen_port": 0})
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("edge: config key tail_sampling.")
        assert line in result.stderr and "Traceback" not in result.stderr


# ── fuzzing: built or one ConfigError line, never another exception ──

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 2**64), st.floats(), st.text(max_size=6),
                     st.sampled_from(["30s", "1m30s", "ERROR", "OK", "(", "^a", "k", "a:1", "x", "interval"]))
_fields = st.sampled_from(["key", "values", "min_value", "threshold_ms", "upper_threshold_ms", "status_codes",
                           "max_value", "invert_match", "enabled_regex_matching", "cache_max_size", "value",
                           "sampling_percentage", "hash_salt", "spans_per_second", "bytes_per_second",
                           "burst_capacity", "min_spans", "max_spans", "and_sub_policy", "drop_sub_policy",
                           "max_total_spans_per_second", "policy_order", "composite_sub_policy", "rate_allocation"])
_types = st.sampled_from(["always_sample", "latency", "status_code", "numeric_attribute", "string_attribute",
                          "boolean_attribute", "probabilistic", "rate_limiting", "bytes_limiting", "span_count",
                          "trace_state", "and", "drop", "composite", "ottl_condition", "other"])


def _policies(depth: int) -> st.SearchStrategy[Any]:
    nested = st.lists(_policies(depth - 1), max_size=2) if depth else st.lists(_scalars, max_size=2)
    values = st.one_of(_scalars, st.lists(_scalars, max_size=3), nested,
                       st.lists(st.fixed_dictionaries({}, optional={"policy": _scalars, "percent": _scalars}),
                                max_size=2))
    spec = st.dictionaries(_fields, values, max_size=4)
    names = st.sampled_from(["a", "b", "c", ""]) | st.integers(0, 1)
    policy = st.builds(lambda name, kind, body: {"name": name, "type": kind, kind: body}, names, _types, spec)
    return st.one_of(policy, policy, policy, st.none())


_sections = st.dictionaries(
    st.sampled_from(["enabled", "decision_wait", "num_traces", "decision_cache", "policies", "wal_fsync", "peers",
                     "rollup_interval", "metrics_url", "logs", "other"]),
    st.one_of(_scalars, st.lists(_policies(2), max_size=3),
              st.dictionaries(st.sampled_from(["static", "dns", "port", "interval", "advertise",
                                               "sampled_cache_size", "follow_traces"]),
                              _scalars | st.lists(_scalars, max_size=2), max_size=3)), max_size=5)


@settings(max_examples=400, deadline=None)
@given(_sections)
def test_any_section_is_built_or_refused_in_one_line(doc: dict[str, Any]) -> None:
    try:
        config = cfg.build({"tail_sampling": doc}, env={})
    except cfg.ConfigError as exc:
        assert "\n" not in str(exc) and str(exc).startswith("config key tail_sampling")
        return
    assert cfg.from_json(config.to_json()) == config
    compile_decider(config.tail_sampling)


@settings(max_examples=400, deadline=None)
@given(st.lists(_policies(2), max_size=3))
def test_any_policy_list_is_built_or_refused_in_one_line(policies: list[Any]) -> None:
    test_any_section_is_built_or_refused_in_one_line.hypothesis.inner_test({"policies": policies})


def test_an_integer_beyond_64_bits_is_refused_in_one_line() -> None:
    with pytest.raises(cfg.ConfigError, match=r"^config key tail_sampling\.num_traces: 18446744073709551616 is out "
                                              r"of the 64-bit integer range$"):
        tail({"num_traces": 1 << 64})
    with pytest.raises(cfg.ConfigError, match=r"^config key tail_sampling\.num_traces: .* 64-bit"):
        tail({}, env={"TERO_TAIL_SAMPLING_NUM_TRACES": str(1 << 64)})


@pytest.mark.parametrize("key", ["traces_url", "metrics_url"])
def test_a_grpc_upstream_for_what_the_sampler_exports_is_refused(key: str) -> None:
    with pytest.raises(cfg.ConfigError, match=rf"^config key {key}: the tail sampler exports over OTLP/HTTP; "):
        cfg.build({key: "grpc://127.0.0.1:4317", "tail_sampling": {"enabled": True, "policies": [ERRORS]}}, env={})
    assert cfg.build({key: "grpc://127.0.0.1:4317", "tail_sampling": {"policies": [ERRORS]}}, env={})
