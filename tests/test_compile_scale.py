"""Match tables that scale with the policy count: exact-value dicts, the literal database, regex chunks.

Each path must give exactly RE2's answer per value (docs/policies.md §3): case-insensitive
folding as RE2 does it, negation, missing fields, non-ASCII text and values that hold
newlines. The last tests check a few thousand policies at once against an oracle.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import re2

from edge.engine.matching import condition_masks, policy_masks
from edge.engine.values import MISSING, Column
from edge.policy import databases
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from edge.policy.model import LOG
from edge.policy.snapshot import Snapshot
from tests.test_matching import S, _body_dropped, _dropped, _log_doc, kv

BODY = ("log_field", 1)
SEVERITY = ("log_field", 2)
ATTRIBUTE = ("log_attribute", ("a",))


# ── exact values: one dict lookup per value ────────────────────────────────

EXACT_VALUES = ["checkout", "Checkout", "CHECKOUT", "checkout ", "check", "", None, "chec\u212aout",
                "\u017fhop", "shop", "SHOP", "\u0130d", "id", "ID", "idé", "IDÉ", "a\nb", "A\nB", "日本", "日本語"]


@pytest.mark.parametrize("layout", [1, 12])  # unique values, and a low-cardinality batch
@pytest.mark.parametrize(
    "matcher",
    [
        {"exact": "checkout"},
        {"exact": "checkout", "case_insensitive": True},
        {"exact": "shop", "case_insensitive": True},
        {"exact": "id", "case_insensitive": True},
        {"exact": "idé", "case_insensitive": True},
        {"exact": "日本"},
        {"exact": "a\nb"},
        {"exact": "a\nb", "case_insensitive": True},
        {"exact": "checkout", "negate": True},
        {"exact": "shop", "case_insensitive": True, "negate": True},
    ],
)
def test_exact_lookup_is_re2_equality(matcher, layout):
    """`exact` is whole-value equality; case-insensitive as RE2 folds (K is k, ſ is s, İ is no i)."""
    values = EXACT_VALUES * layout
    pattern = ("(?i)" if matcher.get("case_insensitive") else "") + "^" + re2.escape(matcher["exact"]) + "$"
    expected = {i for i, v in enumerate(values) if v and re2.search(pattern, v) is not None}
    if matcher.get("negate"):
        expected = set(range(len(values))) - expected
    assert _body_dropped(matcher, values) == expected


def test_exact_lookup_on_a_missing_attribute():
    """A missing attribute equals nothing, and its negation holds."""
    records = [{"attributes": [kv("a", S("x"))]}, {}, {"attributes": [kv("b", S("x"))]}]
    assert _dropped("log", [{"log_attribute": "a", "exact": "x"}], _log_doc(records)) == {0}
    assert _dropped("log", [{"log_attribute": "a", "exact": "x", "negate": True}], _log_doc(records)) == {1, 2}
    assert _dropped("log", [{"log_attribute": "a", "exact": "X", "case_insensitive": True}],
                    _log_doc(records)) == {0}


def test_many_exact_values_share_one_dict():
    """Several policies on one field, some with the same value: each gets its own records."""
    snapshot = _compile([{"log_attribute": "a", "exact": v} for v in ("x", "y", "x")]
                        + [{"log_attribute": "a", "exact": "X", "case_insensitive": True}])
    fp = snapshot.plan(LOG).fields[ATTRIBUTE]
    assert fp.exact == {"x": [0, 2], "y": [1]} and fp.exact_caseless == {"x": [3]}
    assert not fp.hs_databases


# ── prefixes, suffixes and substrings: the pure-literal database ───────────

LITERAL_VALUES = ["GET /api", "get /API/x", "GET /ap", "xGET /api", "/api GET", "GET /api\nx", "x\nGET /api",
                  "", None, "GET /apı", "ſtop", "stop", "STOP", "\u212aey", "key", "日本語", "語日本", "a\nb"]


@pytest.mark.parametrize("layout", [1, 12])
@pytest.mark.parametrize("kind", ["starts_with", "ends_with", "contains"])
@pytest.mark.parametrize(
    "text,caseless,negate",
    [
        ("GET /api", False, False),
        ("GET /api", True, False),
        ("/api", False, True),
        ("stop", True, False),
        ("key", True, False),
        ("日本", False, False),
        ("語", True, False),
        ("T /", False, False),
    ],
)
def test_literal_database_matches_like_re2(kind, text, caseless, negate, layout):
    """Prefix / suffix / substring literals on whole values, the first and last of the batch included."""
    values = LITERAL_VALUES * layout
    body = re2.escape(text)
    pattern = ("(?i)" if caseless else "") + {"starts_with": f"^{body}", "ends_with": f"{body}$",
                                              "contains": body}[kind]
    expected = {i for i, v in enumerate(values) if v and re2.search(pattern, v) is not None}
    if negate:
        expected = set(range(len(values))) - expected
    matcher = {kind: text, "case_insensitive": caseless, "negate": negate}
    assert _body_dropped(matcher, values) == expected


def test_literal_matches_at_the_edges_of_the_batch():
    """The first value's prefix and the last value's suffix are found (the buffer starts with a newline)."""
    values = ["abc", "x", "y", "abc"]
    assert _body_dropped({"starts_with": "ab"}, values) == {0, 3}
    assert _body_dropped({"ends_with": "bc"}, values) == {0, 3}
    assert _body_dropped({"exact": "abc"}, values) == {0, 3}


def test_literal_kinds_compile_into_one_literal_database():
    snapshot = _compile([{"log_field": "body", "starts_with": "a"}, {"log_field": "body", "ends_with": "b"},
                         {"log_field": "body", "contains": "c", "case_insensitive": True}])
    fp = snapshot.plan(LOG).fields[BODY]
    assert len(fp.hs_databases) == 1 and sorted(fp.scanned) == [0, 1, 2] and not fp.re2_only


# ── regexes: databases of bounded size ─────────────────────────────────────


def test_regexes_are_compiled_in_bounded_chunks(monkeypatch):
    """More regexes than a chunk holds: several databases, and every match maps to its condition."""
    monkeypatch.setattr(databases, "REGEX_CHUNK", 4)
    patterns = [f"w{i}[0-9]+x" for i in range(9)] + [rf"s{i}\s+t" for i in range(5)]
    snapshot = _compile([{"log_field": "body", "regex": p} for p in patterns])
    assert len(snapshot.plan(LOG).fields[BODY].hs_databases) == 4  # 14 regexes, 4 a database
    values = ["w3 12x", "w312x", "s4  t", "s4\nt", "w8 0x w80x", "", "s1 t s2\tt"]
    masks = _policy_masks(snapshot, {BODY: values})
    for policy, pattern, mask in zip(snapshot.plan(LOG).policies, patterns, masks, strict=True):
        assert mask == _oracle_mask(values, lambda v, p=pattern: re2.search(p, v) is not None), policy.id


def test_identical_conditions_compile_once_and_all_match():
    snapshot = _compile([{"log_field": "body", "regex": "ab+c"}, {"log_field": "body", "regex": "ab+c"},
                         {"log_field": "body", "contains": "b", "negate": True},
                         {"log_field": "body", "contains": "b"}])
    fp = snapshot.plan(LOG).fields[BODY]
    assert sorted(fp.scanned) == [0, 2] and fp.aliases == {0: [1], 2: [3]}
    values = ["abbc", "ac", "", "b"]
    assert _policy_masks(snapshot, {BODY: values}) == [0b1, 0b1, 0b0110, 0b1001]


def test_rejected_patterns_go_to_re2_with_their_aliases():
    """Hyperscan rejects some patterns of a chunk: they (and their duplicates) run on RE2, the rest stay."""
    patterns = ["a+b", "x*", "c+d", "x*", "e", "a$b"]  # empty-matching, embedded end anchor
    snapshot = _compile([{"log_field": "body", "regex": p} for p in patterns])
    fp = snapshot.plan(LOG).fields[BODY]
    assert sorted(fp.re2_only) == [1, 3, 5] and sorted(fp.scanned) == [0, 2, 4]
    assert len(fp.hs_databases) == 1  # the accepted ones back in one database
    values = ["aab", "xx", "cd e", "q", "a\nb", ""]
    masks = _policy_masks(snapshot, {BODY: values})
    assert masks == [_oracle_mask(values, lambda v, p=p: re2.search(p, v) is not None) for p in patterns]


# ── a few thousand policies at once ────────────────────────────────────────

WORDS = ["alpha", "beta", "Gamma", "délta", "ε", "日本", "error", "warn", "KELVIN", "ſtatus"]
SEPARATORS = ["-", " ", "  ", "\t"]


def _random_matcher(rng: random.Random, i: int) -> dict:
    kind = rng.choice(["exact", "exact", "starts_with", "ends_with", "contains", "regex", "regex"])
    field = rng.choice([{"log_field": "body"}, {"log_field": "body"}, {"log_field": "severity_text"},
                        {"log_attribute": "a"}])
    word = rng.choice(WORDS)
    text = {"exact": f"{word}-{i % 50}", "starts_with": f"{word}-{i % 7}", "ends_with": f"-{i % 50}",
            "contains": f"{word[:3]}", "regex": rng.choice([f"{word}-{i % 50}$", rf"^{word}\s+\d", rf"[a-z]+-{i % 9}\b",
                                                           rf"{word}[^-]*-{i % 13}", "^$", r"\b\d+$"])}[kind]
    matcher = {**field, kind: text}
    if rng.random() < 0.25:
        matcher["case_insensitive"] = True
    if rng.random() < 0.1:
        matcher["negate"] = True
    return matcher


def _random_value(rng: random.Random) -> str | None:
    roll = rng.random()
    if roll < 0.1:
        return None
    if roll < 0.15:
        return ""
    word = rng.choice(WORDS + [w.upper() for w in WORDS] + ["\u212aelvin", "\u0130d"])
    value = word + rng.choice(SEPARATORS) + str(rng.randrange(60))
    if rng.random() < 0.1:
        value += rng.choice(["\nnext", " tail", "\n"])
    return value


def test_thousands_of_policies_match_like_re2(monkeypatch):
    """2,500 policies of every kind (bounded chunks kept small so there are many) against RE2 per value."""
    monkeypatch.setattr(databases, "REGEX_CHUNK", 64)
    rng = random.Random(20240612)
    matchers = [[_random_matcher(rng, i) for _ in range(rng.choice([1, 1, 2]))] for i in range(2500)]
    matchers.append([{"log_field": "body", "regex": "a$b"}])  # rejected by Hyperscan: RE2
    matchers.append([{"log_field": "body", "regex": "("}])  # invalid: inert, the others still work
    loaded = load_document({"policies": [{"id": f"p{i:05d}", "log": {"match": m, "keep": "none"}}
                                         for i, m in enumerate(matchers)]})
    snapshot = Snapshot.from_bytes(compile_policies(loaded.policies).to_bytes())
    assert list(snapshot.errors()) == ["p02501"]
    plan = snapshot.plan(LOG)
    assert len(plan.fields[BODY].hs_databases) > 3
    columns = {key: [_random_value(rng) for _ in range(400)] for key in (BODY, SEVERITY, ATTRIBUTE)}
    columns[SEVERITY] = [rng.choice(["alpha-1", "ERROR-3", "warn-5", None]) for _ in range(400)]  # few values
    masks = _policy_masks(snapshot, columns)
    by_id = {policy.id: mask for policy, mask in zip(plan.policies, masks, strict=True)}
    for i, policy_matchers in enumerate(matchers[:-1]):
        expected = (1 << 400) - 1
        for matcher in policy_matchers:
            expected &= _matcher_oracle(matcher, columns)
        assert by_id[f"p{i:05d}"] == expected, policy_matchers


def _matcher_oracle(matcher: dict, columns: dict) -> int:
    key = ATTRIBUTE if "log_attribute" in matcher else (BODY if matcher.get("log_field") == "body" else SEVERITY)
    kind = next(k for k in ("exact", "starts_with", "ends_with", "contains", "regex") if k in matcher)
    text = matcher[kind]
    body = text if kind == "regex" else re2.escape(text)
    pattern = ("(?i)" if matcher.get("case_insensitive") else "") + {
        "exact": f"^{body}$", "starts_with": f"^{body}", "ends_with": f"{body}$"}.get(kind, body)
    program = re2.compile(pattern)
    mask = _oracle_mask(columns[key], lambda v: program.search(v) is not None)
    return mask ^ ((1 << len(columns[key])) - 1) if matcher.get("negate") else mask


# ── helpers ────────────────────────────────────────────────────────────────


@dataclass
class _Batch:
    """Field values per record, as the engine's batches give them to the matcher."""

    columns: dict

    @property
    def n(self) -> int:
        return len(next(iter(self.columns.values())))

    @property
    def full(self) -> int:
        return (1 << self.n) - 1

    def column(self, key) -> Column:
        return Column([MISSING if v is None else v for v in self.columns.get(key, [None] * self.n)])

    def strings(self, key) -> Column:
        return Column([v or "" for v in self.columns.get(key, [None] * self.n)])


def _compile(matchers: list[dict]) -> Snapshot:
    """One drop policy per matcher (ids in matcher order), compiled cleanly."""
    loaded = load_document({"policies": [{"id": f"p{i:03d}", "log": {"match": [m], "keep": "none"}}
                                         for i, m in enumerate(matchers)]})
    snapshot = compile_policies(loaded.policies)
    assert snapshot.errors() == {}
    return snapshot


def _policy_masks(snapshot: Snapshot, columns: dict) -> list[int]:
    """Per log policy (id order): the records it matches."""
    plan = snapshot.plan(LOG)
    batch = _Batch(columns)
    return policy_masks(plan, condition_masks(snapshot, plan, batch), batch.full)


def _oracle_mask(values: list, predicate) -> int:
    return sum(1 << i for i, v in enumerate(values) if v and predicate(v))
