"""The match tables of one field: what each kind of string condition compiles to, and why.

Hyperscan's regex compiler takes time that grows faster than the number of patterns in a
database (with start-of-match tracking, which the scanner needs for regexes: 2,000 took
30 s or more where 250 took 0.4 s), and literals spelled as regexes pay that price for
nothing. So the string conditions of a field are split by kind:

- `exact`: a dict from value to conditions, one lookup per value whatever the count;
  case-insensitive ASCII values under their lowercase form.
- `starts_with` / `ends_with` / `contains`: one database of Hyperscan's pure-literal
  compiler, spelled "\\n" + prefix, suffix + "\\n" and the text itself. The scanner puts a
  newline before and after every value, so these find exactly the values that start with,
  end with or contain the text (values holding newlines are checked with RE2, as always).
- `regex`: databases of at most `REGEX_CHUNK` expressions, so compile time grows linearly
  with the number of regexes. (Dropping start of match where a regex cannot span two
  records was tried: some common shapes, like `[a-z]+@host`, then compile far slower.)

Conditions with the same expression are compiled once and reported under the first one's
id. Whatever Hyperscan rejects, and whatever it cannot run with RE2's meaning, runs on RE2.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import hyperscan

from edge.policy.model import Condition, FieldPlan

# Up to a few hundred regexes a database compiles in time about proportional to their
# number; past that, time per pattern climbs steeply. Each database is one more scan of
# the field per batch: 256 kept 10,000 policies' evaluation near its speed at 10, and
# smaller chunks saved little more compile time.
REGEX_CHUNK = 256

_CASELESS = hyperscan.HS_FLAG_CASELESS


@dataclass(slots=True)
class _Pattern:
    """One expression as handed to Hyperscan, with the condition that reports it."""

    expression: bytes
    flags: int
    condition: int


def build_tables(fp: FieldPlan, conditions: list[Condition]) -> None:
    """Fill the exact dicts, databases and RE2 list of `fp` from its string conditions."""
    literals: list[_Pattern] = []
    regexes: list[_Pattern] = []
    for condition in conditions:
        kind, text = condition.operand
        caseless = bool(condition.hs_flags & _CASELESS)
        if kind == "exact" and (text.isascii() or not caseless):
            table = fp.exact_caseless if caseless else fp.exact
            table.setdefault(text.lower() if caseless else text, []).append(condition.index)
        elif condition.hs_pattern is None:
            fp.re2_only.append(condition.index)
        elif kind == "regex":
            regexes.append(_Pattern(condition.hs_pattern.encode(), condition.hs_flags, condition.index))
        else:
            literals.append(_Pattern(_literal(kind, text), condition.hs_flags & _CASELESS, condition.index))
    _add_databases(fp, _unique(fp, literals), literal=True, size=len(literals) or 1)
    _add_databases(fp, _unique(fp, regexes), literal=False, size=REGEX_CHUNK)


def _literal(kind: str, text: str) -> bytes:
    """The literal that finds `kind` of `text` in newline-separated values."""
    body = text.encode()
    if kind == "starts_with":
        return b"\n" + body
    if kind == "ends_with":
        return body + b"\n"
    return body


def _unique(fp: FieldPlan, patterns: list[_Pattern]) -> list[_Pattern]:
    """The first pattern of each (expression, flags); later ones become its aliases."""
    first: dict[tuple[bytes, int], _Pattern] = {}
    for pattern in patterns:
        seen = first.setdefault((pattern.expression, pattern.flags), pattern)
        if seen is not pattern:
            fp.aliases.setdefault(seen.condition, []).append(pattern.condition)
    return list(first.values())


def _add_databases(fp: FieldPlan, patterns: list[_Pattern], *, literal: bool, size: int) -> None:
    """Compile `patterns` in databases of at most `size`; rejected ones (and their aliases) go to RE2."""
    for begin in range(0, len(patterns), size):
        databases, rejected = _databases(patterns[begin:begin + size], literal)
        if len(databases) > 1:  # split around rejected patterns: one database again if it will do
            accepted = [p for _, some in databases for p in some]
            with contextlib.suppress(hyperscan.error):  # else the parts stay
                databases = [(_compile(accepted, literal), accepted)]
        for database, some in databases:
            fp.hs_databases.append(hyperscan.dumpb(database))
            fp.scanned.extend(p.condition for p in some)
        for pattern in rejected:
            fp.re2_only.append(pattern.condition)
            fp.re2_only.extend(fp.aliases.pop(pattern.condition, ()))


def _databases(patterns: list[_Pattern], literal: bool
               ) -> tuple[list[tuple[hyperscan.Database, list[_Pattern]]], list[_Pattern]]:
    """(databases of the patterns Hyperscan accepts, the ones it rejects).

    One compile when all are accepted; otherwise the list is halved until each part
    compiles or is one rejected pattern: a few compiles per culprit, not one per pattern,
    and a set that fails only as a whole still compiles in parts.
    """
    try:
        return [(_compile(patterns, literal), patterns)], []
    except hyperscan.error:
        if len(patterns) == 1:
            return [], patterns
    half = len(patterns) // 2
    left, left_rejected = _databases(patterns[:half], literal)
    right, right_rejected = _databases(patterns[half:], literal)
    return left + right, left_rejected + right_rejected


def _compile(patterns: list[_Pattern], literal: bool) -> hyperscan.Database:
    db = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    db.compile(expressions=[p.expression for p in patterns], ids=[p.condition for p in patterns],
               flags=[p.flags for p in patterns], literal=literal)
    return db
