"""Evaluate every condition of a signal against a batch, one field at a time.

For each field the values of all records are looked up in the field's exact-value dicts,
then joined with `\\n` into one buffer (that also starts with one) and scanned with each
of the field's Hyperscan databases: a literal one, whose prefixes and suffixes include
the separator, and regex ones compiled MULTILINE, so `^`/`$` see record boundaries.
Match ends are mapped back to records with a bisect. Reports that Hyperscan cannot
settle alone are verified with RE2 on that one value: records whose value itself
contains a newline, and regex matches whose leftmost start lies before the record (a
match that spans the separator). The result is one bitmask per condition.
"""

from __future__ import annotations

import operator
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Collection, Iterable
from itertools import accumulate, compress, repeat
from typing import Any

import hyperscan

from edge.engine import bits
from edge.engine.batch import Matchable
from edge.engine.values import MISSING, Column, only_numbers, string_view
from edge.policy.model import Condition, FieldPlan, Op, SignalPlan
from edge.policy.snapshot import Snapshot

_SOM = hyperscan.HS_FLAG_SOM_LEFTMOST
# Below this many values a field is matched value by value: probing a small batch for repeated
# values costs more than the matching it could save.
_PROBE_MIN = 64
# Up to this many positions a mask is cheaper to OR together bit by bit than to build as a row of flags.
_FEW_BITS = 8


def _fold(matched_values: Collection[int], owners: list[int] | None) -> int:
    """Value positions (in any order) -> record mask."""
    mask = 0
    if owners is not None:
        for j in matched_values:
            mask |= owners[j]
        return mask
    if len(matched_values) > _FEW_BITS:
        return bits.from_indices(matched_values, max(matched_values) + 1)
    for j in matched_values:
        mask |= 1 << j
    return mask


def _scan_field(snapshot: Snapshot, plan: SignalPlan, fp: FieldPlan, column: Column,
                hits: dict[int, int]) -> None:
    """String conditions of one field: one Hyperscan scan plus RE2 for the rest.

    `column.values` are string views: "" where the field is absent or not a string,
    which no string condition matches. Low-cardinality fields (severity, method,
    service) of a big batch are scanned once per distinct value and mapped back without
    a per-record Python loop; others (told by a probe of the first values), and every
    field of a small batch, are scanned as one joined buffer.
    """
    values = column.values
    if not values:
        return
    if len(values) >= _PROBE_MIN and len(set(values[:256])) <= 64:
        distinct = list(dict.fromkeys(values))
        if len(distinct) <= min(255, len(values) // 4):
            _scan_distinct(snapshot, plan, fp, column, distinct, hits)
            return
    if not (fp.hs_databases or fp.re2_only or fp.exact_caseless):
        _exact_hits(fp.exact, values, column.owners, hits)
        return
    for ci, positions in _match_values(snapshot, plan, fp, values).items():
        if positions:
            hits[ci] = _fold(positions, column.owners)


def _exact_hits(table: dict[str, list[int]], values: list[str], owners: list[int] | None,
                hits: dict[int, int]) -> None:
    """A field whose string conditions are all exact values: one lookup per value, a bit per hit."""
    found = list(map(table.get, values))
    for i in compress(range(len(found)), found):
        bit = 1 << i if owners is None else owners[i]
        for ci in found[i]:
            hits[ci] = hits.get(ci, 0) | bit


def _scan_distinct(snapshot: Snapshot, plan: SignalPlan, fp: FieldPlan, column: Column, distinct: list[str],
                   hits: dict[int, int]) -> None:
    """Match the distinct values only, then spread each condition's verdicts over the records in C."""
    matched = _match_values(snapshot, plan, fp, distinct)
    codes = bytes(map({v: j for j, v in enumerate(distinct)}.__getitem__, column.values))
    for ci, positions in matched.items():
        if positions:
            table = bytearray(b"0" * 256)
            for j in positions:
                table[j] = 49  # "1"
            flags = codes.translate(table)
            mask = int(flags[::-1], 2)
            hits[ci] = mask if column.owners is None else _fold(bits.indices(mask), column.owners)


def _match_values(snapshot: Snapshot, plan: SignalPlan, fp: FieldPlan, values: list[str]
                  ) -> dict[int, set[int]]:
    """condition index -> positions in `values` that satisfy it."""
    matched: dict[int, set[int]] = defaultdict(set)
    if fp.exact:
        _add_lookups(map(fp.exact.get, values), matched)
    if fp.exact_caseless:
        _add_lookups(map(fp.exact_caseless.get, _ascii_folded(values)), matched)
    if fp.hs_databases:
        _hyperscan_pass(snapshot, plan, fp, values, matched)
    for ci in fp.re2_only:
        search = snapshot.regex(plan.conditions[ci].re2_pattern).search
        verdicts: dict[str, bool] = {"": False}
        hits = matched[ci]
        for i, v in enumerate(values):
            verdict = verdicts.get(v)
            if verdict is None:
                verdict = verdicts[v] = search(v) is not None
            if verdict:
                hits.add(i)
    return matched


def _add_lookups(found: Iterable[list[int] | None], matched: dict[int, set[int]]) -> None:
    """Per value, the conditions an exact-value dict gave (None: none) -> `matched`; Python only per hit."""
    found = list(found)
    for i in compress(range(len(found)), found):
        for ci in found[i]:
            matched[ci].add(i)


def _ascii_folded(values: list[str]) -> list[str]:
    """Values as RE2's case folding compares them with an ASCII text: lowercase, and ſ as s.

    `str.lower` turns K (U+212A) into k as RE2 folds it; the only other character it lowers
    to something holding ASCII, İ, becomes two characters, one of them not ASCII, so it
    equals no ASCII text, as in RE2.
    """
    folded = list(map(str.lower, values))
    if "\u017f" in "".join(folded):
        folded = [v.replace("\u017f", "s") for v in folded]
    return folded


def _hyperscan_pass(snapshot: Snapshot, plan: SignalPlan, fp: FieldPlan, values: list[str],
                    matched: dict[int, set[int]]) -> None:
    # Every value is preceded and followed by a newline (prefix and suffix literals include
    # it), and one more newline pads the buffer: libhs 5.4 misses end-anchored matches that
    # end at, or one byte before, the end of the buffer when other patterns share the
    # database (tests/test_matching.py pins both cases).
    joined = "\n".join(values)
    encoded = joined.encode()
    buffer = b"\n" + encoded + b"\n\n"
    lengths = map(len, values if len(encoded) == len(joined) else map(str.encode, values))
    starts = list(accumulate(map(_PLUS_SEPARATOR, lengths), initial=1))
    reports: list[tuple[int, int, int]] = []
    report = reports.append

    def on_match(cid: int, start: int, end: int, flags: int, context: Any) -> None:
        report((cid, start, end))

    for db, scratch in snapshot.databases(plan.signal, fp.key):
        db.scan(buffer, on_match, 0, None, scratch)  # positionally: keywords cost a parse per call
    if reports:
        doubtful = _settle(plan.conditions, reports, starts, matched)
        dirty = _values_with_newlines(values, joined)
        if doubtful or dirty:
            _recheck(snapshot, plan.conditions, values, reports, doubtful, dirty, matched)
    if "\u017f" in joined or "\u212a" in joined:  # rare: a call less per scan when absent
        _refold_caseless(snapshot, plan, fp, values, matched)
    if fp.aliases:  # conditions compiled once under the first one's id
        for ci in [ci for ci in matched if ci in fp.aliases]:
            for other in fp.aliases[ci]:
                matched[other] = set(matched[ci])


def _settle(conditions: list[Condition], reports: list[tuple[int, int, int]], starts: list[int],
            matched: dict[int, set[int]]) -> list[tuple[int, int]]:
    """Hyperscan's reports (condition, match start, match end) -> records; returns the
    (condition, record) pairs RE2 must settle.

    Record k spans `starts[k]` up to its separator at `starts[k + 1] - 1`. A literal's
    match ends inside its record or, for a suffix literal, just after the separator: it
    lies in the last record starting before its end. A regex match (reported with its
    leftmost start) that begins in an earlier record, takes in the separator or ends in
    the padding belongs to no single record, and its record is checked with RE2 instead.
    One plain loop over the matches, a bisect each, costs less than mapping them in C
    passes per condition did, at 10 records and at 3,000.
    """
    doubtful: list[tuple[int, int]] = []
    last = len(starts) - 1
    for cid, begin, end in reports:
        after = bisect_left(starts, end)
        k = after - 1
        if conditions[cid].hs_flags & _SOM:
            if not 0 <= k < last:
                continue  # inside the padding: no record's
            if begin < starts[k] or end >= starts[after]:
                doubtful.append((cid, k))
                continue
        matched[cid].add(k)
    return doubtful


def _recheck(snapshot: Snapshot, conditions: list[Condition], values: list[str], reports: list[tuple[int, int, int]],
             doubtful: list[tuple[int, int]], dirty: set[int], matched: dict[int, set[int]]) -> None:
    """RE2 decides the doubtful matches, and the matches found in values holding a newline."""
    todo = set(doubtful)
    if dirty:
        for ci in {report[0] for report in reports}:
            hits = matched[ci]
            todo.update((ci, k) for k in hits & dirty)
            hits -= dirty
    for ci, k in todo:
        value = values[k]
        if value and snapshot.regex(conditions[ci].re2_pattern).search(value) is not None:
            matched[ci].add(k)


def _values_with_newlines(values: list[str], joined: str) -> set[int]:
    """Values whose own newlines blur record boundaries in the joined buffer: RE2 decides them.

    `joined` holds a newline between each two values, and more only when a value has its own.
    """
    if joined.count("\n") == len(values) - 1:
        return set()
    return {k for k, v in enumerate(values) if "\n" in v}


def _refold_caseless(snapshot: Snapshot, plan: SignalPlan, fp: FieldPlan, values: list[str],
                     matched: dict[int, set[int]]) -> None:
    """RE2 folds U+017F (ſ) and U+212A (K) into ASCII s/k; Hyperscan's caseless mode does not.

    Records holding either character get their case-insensitive conditions decided by RE2.
    """
    caseless = [c for c in (plan.conditions[i] for i in fp.scanned)
                if c.hs_flags & hyperscan.HS_FLAG_CASELESS or "(?i" in (c.hs_pattern or "")]
    for k, value in enumerate(values):
        if "\u017f" in value or "\u212a" in value:
            for c in caseless:
                hits = matched[c.index]
                hits.discard(k)
                if snapshot.regex(c.re2_pattern).search(value) is not None:
                    hits.add(k)


_PLUS_SEPARATOR = (1).__add__  # a value's length plus its "\n", in C


# ── typed conditions ───────────────────────────────────────────────────────


def _is_number(v: Any) -> bool:
    return (v.__class__ is int or v.__class__ is float)


def _equals(v: Any, operand: Any) -> bool:
    if operand.__class__ is bool or v.__class__ is bool:
        return v.__class__ is bool and operand.__class__ is bool and v == operand
    if _is_number(operand):
        return _is_number(v) and v == operand
    return v.__class__ is operand.__class__ and v == operand


_OPERATORS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le, "eq": operator.eq}

_COMPARE = {
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
}


def _numeric_mask(condition: Condition, values: list[Any]) -> int | None:
    """Numeric comparisons over an all-number record column, compared in C; None otherwise."""
    if condition.op is Op.COMPARE:
        name, number = condition.operand
    elif condition.op is Op.EQUALS and _is_number(condition.operand):
        name, number = "eq", condition.operand
    else:
        return None
    if not only_numbers(values):
        return None
    return bits.from_bools(list(map(_OPERATORS[name], values, repeat(number))))


def _typed_mask(condition: Condition, column: Column) -> int:
    values = column.values
    op = condition.op
    if column.owners is None:
        fast = _numeric_mask(condition, values)
        if fast is not None:
            return fast
    if op is Op.EXISTS:
        if condition.operand:
            hits = [i for i, v in enumerate(values) if v is not MISSING]
        else:
            # per value, then "any value matches": a metric with one data point lacking
            # the attribute satisfies exists:false (docs/policies.md §3)
            hits = [i for i, v in enumerate(values) if v is MISSING]
        return _fold(hits, column.owners) if hits else 0
    if op is Op.EQUALS:
        operand = condition.operand
        hits = [i for i, v in enumerate(values) if _equals(v, operand)]
    elif op is Op.COMPARE:
        name, number = condition.operand
        compare = _COMPARE[name]
        hits = [i for i, v in enumerate(values) if _is_number(v) and v.__class__ is not bool and compare(v, number)]
    elif op is Op.ENUM:
        hits = [i for i, v in enumerate(values) if v == condition.operand]
    elif op is Op.PRESENT:
        target = condition.field[1]
        hits = [i for i, v in enumerate(values) if v == target]
    elif op is Op.NON_EMPTY:
        hits = [i for i, v in enumerate(values) if string_view(v) is not None]
    else:  # Op.NEVER
        hits = []
    return _fold(hits, column.owners) if hits else 0


def condition_hits(snapshot: Snapshot, plan: SignalPlan, batch: Matchable) -> dict[int, int]:
    """condition index -> mask of the records it holds on, for the conditions that hold somewhere;
    before negation (`negate` is applied by the caller)."""
    hits: dict[int, int] = {}
    for key, fp in plan.fields.items():
        if fp.scanned or fp.re2_only or fp.exact or fp.exact_caseless:
            _scan_field(snapshot, plan, fp, batch.strings(key), hits)
        if fp.typed:
            column = batch.column(key)
            for ci in fp.typed:
                mask = _typed_mask(plan.conditions[ci], column)
                if mask:
                    hits[ci] = mask
    return hits


def condition_masks(snapshot: Snapshot, plan: SignalPlan, batch: Matchable) -> list[int]:
    """One record mask per condition of the plan, negation applied."""
    hits = condition_hits(snapshot, plan, batch)
    masks = [hits.get(ci, 0) for ci in range(len(plan.conditions))]
    for condition in plan.conditions:
        if condition.negate:
            masks[condition.index] ^= batch.full
    return masks


def policy_masks(plan: SignalPlan, masks: list[int], full: int) -> list[int]:
    """Per valid policy (plan order): the records on which all its conditions hold."""
    out = []
    for policy in plan.policies:
        mask = full
        for ci in policy.conditions:
            mask &= masks[ci]
            if not mask:
                break
        out.append(mask)
    return out
