"""Property tests: random policies against random OTLP/JSON batches (docs/policies.md §3, §4, §8)."""

from __future__ import annotations

import base64
import contextlib
import logging
import random

import orjson
import re2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.engine.engine import Engine
from edge.engine.ratelimit import LocalRateLimiter
from edge.formats.otlp import body as otlp_body
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document

SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


def re2_valid(pattern: str) -> bool:
    try:
        re2.compile(pattern, _RE2_OPTIONS)
    except re2.error:
        return False
    return True


# ── OTLP documents ─────────────────────────────────────────────────────────

SMALL_ALPHABET = "abAB \n\té日.$ÉK\u212a\u017fs"
CHARS = st.characters(blacklist_categories=("Cs",), max_codepoint=0x2FFF)
TEXT = st.one_of(
    st.text(CHARS, max_size=10),
    st.text(alphabet=SMALL_ALPHABET, max_size=6),
    st.sampled_from(["", "a", "ab", "a\nb", "foo\n", "\n", "INFO", "DEBUG"]),
)
KEYS = st.sampled_from(["a", "b", "http", "user", "service.name"])
HEX16 = st.one_of(
    st.just(""),
    st.binary(min_size=16, max_size=16).map(bytes.hex),
    st.binary(min_size=16, max_size=16).map(lambda b: b.hex().upper()),
)
HEX8 = st.one_of(st.just(""), st.binary(min_size=8, max_size=8).map(bytes.hex))


def any_value(depth: int) -> st.SearchStrategy:
    scalars = st.one_of(
        TEXT.map(lambda s: {"stringValue": s}),
        st.integers(-(2**63), 2**63 - 1).map(lambda i: {"intValue": str(i)}),
        st.integers(-10, 10).map(lambda i: {"intValue": i}),
        st.floats(allow_nan=False, allow_infinity=False).map(lambda f: {"doubleValue": f}),
        st.booleans().map(lambda b: {"boolValue": b}),
        st.binary(max_size=6).map(lambda b: {"bytesValue": base64.b64encode(b).decode()}),
    )
    if depth == 0:
        return scalars
    return st.one_of(
        scalars,
        attributes(depth - 1).map(lambda kvs: {"kvlistValue": {"values": kvs}}),
        st.lists(any_value(depth - 1), max_size=2).map(lambda vs: {"arrayValue": {"values": vs}}),
    )


def attributes(depth: int) -> st.SearchStrategy:
    return st.lists(st.builds(lambda k, v: {"key": k, "value": v}, KEYS, any_value(depth)), max_size=4)


def _optional(**fields) -> st.SearchStrategy:
    return st.fixed_dictionaries({}, optional=fields)


def _some(**fields) -> st.SearchStrategy:
    """Document parts: either fully populated or with any subset of the fields."""
    return st.one_of(st.fixed_dictionaries(fields), _optional(**fields))


SCOPE = _some(name=TEXT, version=TEXT, attributes=attributes(1))
RESOURCE = _some(attributes=attributes(1))

LOG_RECORD = _some(
    body=any_value(1),
    severityText=TEXT,
    attributes=attributes(2),
    traceId=HEX16,
    spanId=HEX8,
    eventName=TEXT,
    timeUnixNano=st.integers(0, 10**18).map(str),
)


def _otlp(top: str, scopes: str, records: str, record: st.SearchStrategy) -> st.SearchStrategy:
    scope = st.builds(
        lambda recs, extra: {records: recs, **extra},
        st.lists(record, min_size=1, max_size=6),
        _some(scope=SCOPE, schemaUrl=TEXT),
    )
    resource = st.builds(
        lambda scs, extra: {scopes: scs, **extra},
        st.lists(scope, min_size=1, max_size=2),
        _some(resource=RESOURCE, schemaUrl=TEXT),
    )
    return st.lists(resource, min_size=1, max_size=3).map(lambda rs: {top: rs})


LOGS = _otlp("resourceLogs", "scopeLogs", "logRecords", LOG_RECORD)

POINT = _some(attributes=attributes(1), asInt=st.integers(0, 9).map(str))
TEMPORALITY = st.sampled_from([1, 2, "AGGREGATION_TEMPORALITY_DELTA", "AGGREGATION_TEMPORALITY_CUMULATIVE", 0])
METRIC = st.builds(
    lambda name, extra, kind, points, temporality: {
        "name": name,
        **extra,
        kind: {
            "dataPoints": points,
            **({"aggregationTemporality": temporality} if kind in ("sum", "histogram", "exponentialHistogram") else {}),
        },
    },
    TEXT,
    _optional(unit=TEXT, description=TEXT),
    st.sampled_from(["gauge", "sum", "histogram", "exponentialHistogram", "summary"]),
    st.lists(POINT, max_size=3),
    TEMPORALITY,
)
METRICS = _otlp("resourceMetrics", "scopeMetrics", "metrics", METRIC)

TRACESTATE = st.one_of(
    TEXT,
    st.sampled_from(["", "vendor=a", "ot=th:8", "ot=rv:80000000000000;th:4,x=y", "ot=rv:0123;th:zz", "a=1,ot=p:1"]),
)
SPAN = _some(
    name=TEXT,
    traceId=HEX16,
    spanId=HEX8,
    parentSpanId=HEX8,
    traceState=TRACESTATE,
    kind=st.one_of(st.integers(0, 5), st.sampled_from(["SPAN_KIND_SERVER", "SPAN_KIND_CLIENT"])),
    status=_optional(code=st.one_of(st.integers(0, 2), st.just("STATUS_CODE_ERROR"))),
    attributes=attributes(1),
    events=st.lists(_some(name=TEXT, attributes=attributes(1)), max_size=2),
    links=st.lists(_some(traceId=HEX16), max_size=2),
)
TRACES = _otlp("resourceSpans", "scopeSpans", "spans", SPAN)

DOCS = {"log": LOGS, "metric": METRICS, "trace": TRACES}
SHAPE = {
    "log": ("resourceLogs", "scopeLogs", "logRecords"),
    "metric": ("resourceMetrics", "scopeMetrics", "metrics"),
    "trace": ("resourceSpans", "scopeSpans", "spans"),
}


def count_records(signal: str, doc: dict) -> int:
    top, scopes, records = SHAPE[signal]
    return sum(len(sl.get(records) or []) for rl in doc.get(top) or [] for sl in rl.get(scopes) or [])


# ── policies ───────────────────────────────────────────────────────────────

ATOMS = st.sampled_from(
    [
        "a",
        "b",
        "A",
        "é",
        " ",
        ".",
        r"\s",
        r"\S",
        r"\w",
        r"\W",
        r"\d",
        "[ab]",
        "[^a]",
        r"[^\n]",
        r"\n",
        "^",
        "$",
        r"\b",
        r"\B",
        r"\A",
        r"\z",
        "(?:a|b)",
        r"\.",
        r"\$",
        "日",
        "(a)",
        r"\pL",
        r"\p{Lu}",
        "[[:alpha:]]",
        r"\x{e9}",
        "(?i:a)",
        r"\Qa.\E",
        "(?U)",
        r"\C",
        "(?P<n>b)",
        "\t",
        "k",
        "s",
    ]
)
QUANTIFIERS = st.sampled_from(["", "", "", "*", "+", "?", "{1,2}", "*?"])
SIMPLE_REGEX = st.lists(st.tuples(ATOMS, QUANTIFIERS).map("".join), min_size=1, max_size=5).map("".join)
REGEX = st.one_of(
    SIMPLE_REGEX,
    st.tuples(SIMPLE_REGEX, SIMPLE_REGEX).map(lambda t: f"{t[0]}|{t[1]}"),
    st.tuples(st.sampled_from(["(?i)", "(?s)", "(?m)", ""]), SIMPLE_REGEX).map("".join),
    st.text(alphabet="ab.*+?|()[]^$\\ns{}", max_size=6),
)
VALID_REGEX = REGEX.filter(re2_valid)
LITERAL = st.text(alphabet=SMALL_ALPHABET, max_size=4)
PATH = st.lists(KEYS, min_size=1, max_size=2)


def string_condition(valid: bool) -> st.SearchStrategy:
    return st.one_of(
        VALID_REGEX.map(lambda r: {"regex": r}),
        *([] if valid else [REGEX.map(lambda r: {"regex": r})]),
        LITERAL.map(lambda s: {"exact": s}),
        LITERAL.map(lambda s: {"starts_with": s}),
        LITERAL.map(lambda s: {"ends_with": s}),
        LITERAL.map(lambda s: {"contains": s}),
    )


TYPED = st.one_of(
    st.integers(-5, 5),
    st.floats(-5, 5, allow_nan=False),
    st.booleans(),
    LITERAL,
    st.binary(max_size=3).map(lambda b: {"hex_value": b.hex()}),
)
NUMBER = st.one_of(st.integers(-5, 5), st.floats(-5, 5, allow_nan=False))


LIKELY = st.sampled_from(
    [
        {"exists": True},
        {"exists": False},
        {"regex": "."},
        {"contains": "a"},
        {"regex": "a|b|日"},
        {"starts_with": "a"},
        {"regex": "^[^x]"},
        {"contains": "\n"},
        {"gte": 0},
        {"equals": True},
    ]
)


def condition(valid: bool) -> st.SearchStrategy:
    """Random conditions, with a share of ones that match most random data so keeps really run."""
    return st.one_of(
        LIKELY,
        LIKELY,
        LIKELY,
        string_condition(valid),
        st.booleans().map(lambda b: {"exists": b}),
        TYPED.map(lambda v: {"equals": v}),
        st.tuples(st.sampled_from(["gt", "gte", "lt", "lte"]), NUMBER).map(lambda t: {t[0]: t[1]}),
    )


FLAGS = _optional(negate=st.booleans(), case_insensitive=st.booleans())

LOG_SELECTOR = st.one_of(
    st.sampled_from(
        ["body", "severity_text", "trace_id", "span_id", "event_name", "resource_schema_url", "scope_schema_url"]
    ).map(lambda f: {"log_field": f}),
    PATH.map(lambda p: {"log_attribute": p}),
    PATH.map(lambda p: {"resource_attribute": p}),
    PATH.map(lambda p: {"scope_attribute": p}),
)
METRIC_SELECTOR = st.one_of(
    st.sampled_from(
        ["name", "description", "unit", "resource_schema_url", "scope_schema_url", "scope_name", "scope_version"]
    ).map(lambda f: {"metric_field": f}),
    PATH.map(lambda p: {"datapoint_attribute": p}),
    PATH.map(lambda p: {"resource_attribute": p}),
    PATH.map(lambda p: {"scope_attribute": p}),
    st.sampled_from(["gauge", "sum", "histogram", "exponential_histogram", "summary"]).map(
        lambda t: {"metric_type": t}
    ),
    st.sampled_from(["delta", "cumulative"]).map(lambda t: {"aggregation_temporality": t}),
)
TRACE_SELECTOR = st.one_of(
    st.sampled_from(
        [
            "name",
            "trace_id",
            "span_id",
            "parent_span_id",
            "trace_state",
            "resource_schema_url",
            "scope_schema_url",
            "scope_name",
            "scope_version",
        ]
    ).map(lambda f: {"trace_field": f}),
    PATH.map(lambda p: {"span_attribute": p}),
    PATH.map(lambda p: {"resource_attribute": p}),
    PATH.map(lambda p: {"scope_attribute": p}),
    PATH.map(lambda p: {"event_attribute": p}),
    st.sampled_from(["server", "client", "internal", "producer", "consumer"]).map(lambda k: {"span_kind": k}),
    st.sampled_from(["ok", "error"]).map(lambda s: {"span_status": s}),
    TEXT.filter(bool).map(lambda n: {"event_name": n}),
    HEX16.filter(bool).map(lambda t: {"link_trace_id": t}),
)
SELECTORS = {"log": LOG_SELECTOR, "metric": METRIC_SELECTOR, "trace": TRACE_SELECTOR}

BROKEN_MATCHERS = st.sampled_from(
    [
        {"log_field": "body", "regex": "(["},
        {"log_attribute": [], "exact": "x"},
        {"regex": "x"},
        {"log_field": "body"},
        {"log_attribute": "a", "equals": {"hex_value": "zz"}},
        {"log_field": 0, "exact": "x"},
    ]
)


def matcher(signal: str, valid: bool = False) -> st.SearchStrategy:
    return st.builds(lambda sel, cond, flags: {**sel, **cond, **flags}, SELECTORS[signal], condition(valid), FLAGS)


def attr_transform(valid: bool) -> st.SearchStrategy:
    """Transforms that touch log attributes only; `valid` keeps regexes and rename targets well-formed."""
    return _optional(
        remove=st.lists(PATH.map(lambda p: {"log_attribute": p}), max_size=2),
        redact=st.lists(
            st.builds(
                lambda p, extra: {"log_attribute": p, **extra},
                PATH,
                _optional(
                    regex=VALID_REGEX if valid else REGEX, replacement=st.sampled_from(["", "$1", "${x}", "$$", "#"])
                ),
            ),
            max_size=2,
        ),
        rename=st.lists(
            st.builds(
                lambda p, to, up: {"from_log_attribute": p, "to": to, "upsert": up},
                PATH,
                st.sampled_from(["a", "renamed", "b"] if valid else ["", "a", "b"]),
                st.booleans(),
            ),
            max_size=2,
        ),
        add=st.lists(
            st.builds(lambda p, v, up: {"log_attribute": p, "value": v, "upsert": up}, PATH, LITERAL, st.booleans()),
            max_size=2,
        ),
    )


DETERMINISTIC_LOG_KEEP = st.sampled_from(["all", "none", "0%", "100%", "2/s", "1/m", "3/5s"])
LOG_KEEP = st.one_of(
    DETERMINISTIC_LOG_KEEP, st.sampled_from(["50%", "10%", "99.5%"]), st.sampled_from(["1.5/s", "150%", "abc", "0/s"])
)
SAMPLE_KEY = st.one_of(
    PATH.map(lambda p: {"log_attribute": p}), st.just({"log_field": "trace_id"}), st.just({"log_field": "body"})
)
TRACE_KEEP = st.fixed_dictionaries(
    {"percentage": st.one_of(st.floats(0, 100), st.sampled_from([0, 100, 150, -3]))},
    optional={
        "mode": st.sampled_from(["hash_seed", "proportional", "equalizing", 7]),
        "sampling_precision": st.integers(0, 15),
        "hash_seed": st.integers(0, 2**32 - 1),
        "fail_closed": st.booleans(),
    },
)
VALID_TRACE_KEEP = st.fixed_dictionaries(
    {"percentage": st.one_of(st.floats(0, 100), st.sampled_from([0, 100]))},
    optional={
        "mode": st.sampled_from(["hash_seed", "proportional", "equalizing"]),
        "sampling_precision": st.integers(1, 14),
        "hash_seed": st.integers(0, 2**32 - 1),
        "fail_closed": st.booleans(),
    },
)


def log_target(keep: st.SearchStrategy, keyed: bool, valid: bool = False) -> st.SearchStrategy:
    optional = {"transform": attr_transform(valid)}
    if keyed:
        optional["sample_key"] = SAMPLE_KEY
    return st.fixed_dictionaries(
        {"match": st.lists(matcher("log", valid), min_size=1, max_size=2), "keep": keep}, optional=optional
    )


def policy_body(signal: str, deterministic: bool = False) -> st.SearchStrategy:
    if signal == "log":
        if deterministic:
            target = st.one_of(
                log_target(DETERMINISTIC_LOG_KEEP, keyed=False, valid=True),
                st.builds(
                    lambda t, k, pct: {**t, "keep": pct, "sample_key": k},
                    log_target(st.just("all"), keyed=False, valid=True),
                    SAMPLE_KEY,
                    st.sampled_from(["25%", "50%", "90%"]),
                ),
            )
        else:
            target = log_target(LOG_KEEP, keyed=True)
    elif signal == "metric":
        target = st.fixed_dictionaries(
            {"match": st.lists(matcher("metric", deterministic), min_size=1, max_size=2), "keep": st.booleans()}
        )
    else:
        target = st.fixed_dictionaries(
            {
                "match": st.lists(matcher("trace", deterministic), min_size=1, max_size=2),
                "keep": VALID_TRACE_KEEP if deterministic else TRACE_KEEP,
            }
        )
    return target.map(lambda t: {signal: t})


ANY_POLICY = st.one_of(
    policy_body("log"),
    policy_body("metric"),
    policy_body("trace"),
    st.builds(
        lambda body, m: {"log": {**body["log"], "match": body["log"]["match"] + [m]}},
        policy_body("log"),
        BROKEN_MATCHERS,
    ),
)


def with_ids(bodies: list[dict], prefix: str = "p") -> list[dict]:
    return [{"id": f"{prefix}{i:02d}", "name": f"{prefix}{i}", **b} for i, b in enumerate(bodies)]


class _ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def no_internal_errors():
    """Evaluation is fail-open (errors are logged, the batch forwarded): treat any logged error as a failure."""
    handler = _ErrorLog()
    logger = logging.getLogger("edge")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    assert handler.messages == []


def _engine(policies: list[dict], seed: int = 0) -> Engine:
    loaded = load_document({"policies": policies})
    snapshot = compile_policies(loaded.policies, load_errors=loaded.errors)
    return Engine(snapshot, rng=random.Random(seed), limiter=LocalRateLimiter(clock=lambda: 1000.0))


# ── (a) + (b): never raises, counts are consistent ─────────────────────────


@SETTINGS
@given(data=st.data(), signal=st.sampled_from(["log", "metric", "trace"]))
def test_evaluate_never_raises_and_counts_are_consistent(data, signal):
    """(a) compile + evaluate never raise; (b) output is JSON, kept + dropped == total == input records."""
    bodies = data.draw(st.lists(st.one_of(policy_body(signal), policy_body(signal), ANY_POLICY), max_size=6))
    doc = data.draw(DOCS[signal])
    engine = _engine(with_ids(bodies))
    with no_internal_errors():
        evaluated = otlp_body.evaluate(engine, signal, orjson.dumps(doc), "application/json")
    out = orjson.loads(evaluated.body)
    total = count_records(signal, doc)
    assert evaluated.outcome.total == total
    assert evaluated.outcome.kept + evaluated.outcome.dropped == total
    assert count_records(signal, out) == evaluated.outcome.kept
    for counters in engine.stats.snapshot().values():
        assert counters.hits >= 0 and counters.misses >= 0
        assert counters.hits + counters.misses <= total


@SETTINGS
@given(
    data=st.data(), bodies=st.lists(policy_body("log").map(lambda b: {"log": {**b["log"], "keep": "all"}}), max_size=6)
)
def test_keep_all_policies_never_drop(data, bodies):
    """(b) with only keep "all" (plus attribute-only transforms) every input record reaches the output."""
    doc = data.draw(LOGS)
    for body in bodies:
        body["log"].pop("sample_key", None)
    engine = _engine(with_ids(bodies))
    with no_internal_errors():
        evaluated = otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json")
    out = orjson.loads(evaluated.body)
    total = count_records("log", doc)
    assert evaluated.outcome.kept == total
    assert count_records("log", out) == total
    # bodies, severities and ids are untouched by attribute-only transforms
    top, scopes, records = SHAPE["log"]
    before = [
        (r.get("body"), r.get("severityText"), r.get("traceId"))
        for rl in doc.get(top) or []
        for sl in rl.get(scopes) or []
        for r in sl.get(records) or []
    ]
    after = [
        (r.get("body"), r.get("severityText"), r.get("traceId"))
        for rl in out.get(top) or []
        for sl in rl.get(scopes) or []
        for r in sl.get(records) or []
    ]
    assert before == after


# ── (c) invalid policies never affect the output ──────────────────────────


def _break(body: dict, how: int) -> dict:
    """Make a policy certainly invalid (or disabled) in one of several ways."""
    signal = next(iter(body))
    target = dict(body[signal])
    if how == 0:
        bad = {
            "log": {"log_field": "body", "regex": "(["},
            "metric": {"metric_field": "name", "regex": "(["},
            "trace": {"trace_field": "name", "regex": "(["},
        }[signal]
        target["match"] = [*target["match"], bad]
    elif how == 1:
        target["match"] = [
            {"log": {"log_attribute": [], "exists": True}, "metric": {"metric_type": 0}, "trace": {"span_kind": 0}}[
                signal
            ]
        ]
    elif how == 2 and signal == "log":
        target["keep"] = "1.5/s"
    elif how == 2 and signal == "trace":
        target["keep"] = {"percentage": 150}
    elif how == 3 and signal == "log":
        target["transform"] = {"rename": [{"from_log_attribute": "a", "to": ""}]}
    else:
        return {signal: target, "enabled": False}
    return {signal: target}


@SETTINGS
@given(
    data=st.data(),
    signal=st.sampled_from(["log", "metric", "trace"]),
    valid=st.lists(
        st.sampled_from(["log", "metric", "trace"]).flatmap(lambda s: policy_body(s, deterministic=True)), max_size=5
    ),
    invalid=st.lists(
        st.tuples(st.sampled_from(["log", "metric", "trace"]).flatmap(policy_body), st.integers(0, 4)),
        min_size=1,
        max_size=4,
    ),
)
def test_invalid_policies_never_affect_output(data, signal, valid, invalid):
    """(c) adding invalid (or disabled) policies changes neither the output bytes nor the valid policies' stats."""
    doc = orjson.dumps(data.draw(DOCS[signal]))
    good = [{"id": f"p{i}0", **b} for i, b in enumerate(valid)]
    broken = [{"id": f"p{i}5", **_break(b, how)} for i, (b, how) in enumerate(invalid)]
    alone = _engine(good)
    assert alone.snapshot.errors() == {}  # the deterministic strategies only produce valid policies...
    mixed = _engine(good + broken)
    errors = mixed.snapshot.errors()
    for p in broken:  # ...and every broken one is invalid or disabled
        assert p["id"] in errors or p.get("enabled") is False
    with no_internal_errors():
        first = otlp_body.evaluate(alone, signal, doc, "application/json")
        second = otlp_body.evaluate(mixed, signal, doc, "application/json")
    assert first.body == second.body
    assert first.outcome == second.outcome
    mixed_stats = mixed.stats.snapshot()
    assert set(mixed_stats) <= {p["id"] for p in good}
    assert alone.stats.snapshot() == mixed_stats


# ── (d) the batch scanner agrees with per-record RE2 / string operations ────


STRING_MATCHER = st.builds(
    lambda cond, flags: {**cond, **flags},
    st.one_of(
        VALID_REGEX.map(lambda r: {"regex": r}),
        LITERAL.map(lambda s: {"exact": s}),
        LITERAL.map(lambda s: {"starts_with": s}),
        LITERAL.map(lambda s: {"ends_with": s}),
        LITERAL.map(lambda s: {"contains": s}),
    ),
    FLAGS,
).filter(lambda m: "regex" not in m or re2_valid(("(?i)" if m.get("case_insensitive") else "") + m["regex"]))

VALUE = st.one_of(
    st.text(alphabet=SMALL_ALPHABET, max_size=8), st.text(CHARS, max_size=6), st.integers(-3, 3), st.none()
)


def oracle(m: dict, value) -> bool:
    """What docs/policies.md §3 says, per record: RE2 search / Python string ops; only non-empty strings match."""
    if isinstance(value, str) and value:
        ci = m.get("case_insensitive", False)
        if "regex" in m:
            hit = re2.search(("(?i)" if ci else "") + m["regex"], value) is not None
        else:
            kind, text = next((k, m[k]) for k in ("exact", "starts_with", "ends_with", "contains") if k in m)
            if ci:
                escaped = re2.escape(text)
                pattern = {
                    "exact": f"^{escaped}$",
                    "starts_with": f"^{escaped}",
                    "ends_with": f"{escaped}$",
                    "contains": escaped,
                }[kind]
                hit = bool(text or kind != "exact") and re2.search("(?i)" + pattern, value) is not None
            else:
                hit = {
                    "exact": value == text,
                    "starts_with": value.startswith(text),
                    "ends_with": value.endswith(text),
                    "contains": text in value,
                }[kind]
    else:
        hit = False
    return hit != m.get("negate", False)


def _value_record(value, field: str) -> dict:
    if value is None:
        return {}
    typed = {"stringValue": value} if isinstance(value, str) else {"intValue": str(value)}
    return {"body": typed} if field == "body" else {"attributes": [{"key": "s", "value": typed}]}


@SETTINGS
@given(
    values=st.lists(VALUE, min_size=1, max_size=40),
    repeat=st.sampled_from([1, 1, 5]),
    matchers=st.lists(STRING_MATCHER, min_size=1, max_size=6),
    field=st.sampled_from(["body", "attr"]),
)
def test_batch_scan_agrees_with_re2_oracle(values, repeat, matchers, field):
    """(d) the set of records each string condition matches equals a per-record RE2/str oracle."""
    values = values * repeat  # repeat=5 makes the batch low-cardinality
    selector = {"log_field": "body"} if field == "body" else {"log_attribute": "s"}
    policies = [
        {
            "id": f"c{i:02d}",
            "log": {
                "match": [{**selector, **m}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": f"m{i:02d}", "value": "1"}]},
            },
        }
        for i, m in enumerate(matchers)
    ]
    engine = _engine(policies)
    assert engine.snapshot.errors() == {}
    records = [{**_value_record(v, field), "timeUnixNano": str(i)} for i, v in enumerate(values)]
    doc = {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": records}]}]}
    with no_internal_errors():
        out = orjson.loads(otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json").body)
    got_records = out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert [r["timeUnixNano"] for r in got_records] == [str(i) for i in range(len(values))]
    for i, (value, record) in enumerate(zip(values, got_records, strict=True)):
        got = {a["key"] for a in record.get("attributes", []) if a["key"].startswith("m")}
        expected = {f"m{j:02d}" for j, m in enumerate(matchers) if oracle(m, value)}
        assert got == expected, (i, value)
