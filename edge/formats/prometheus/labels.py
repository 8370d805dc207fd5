"""Label sets of exposition lines: the exact grammar, and finding the values policies test in bulk.

`parse_labels` reads one line exactly as the text format defines it. `LabelLocator` serves
the filter's hot path over many lines at once: one Hyperscan scan finds the lines where a
literal condition on a label holds (or where the value it tests starts) and the lines only
the exact parser reads right; labels with other conditions are read with one `bytes.find`
per line where they can matter. C-level passes map all of it to lines and values.
"""

from __future__ import annotations

import re
import threading
from bisect import bisect_right
from dataclasses import dataclass
from itertools import compress, repeat
from operator import add, and_, lt, not_, sub
from typing import Any

import hyperscan

from edge.policy.model import Condition, FieldKey, Op, SignalPlan

# A label set exactly as the text format defines it (for lines the fast path cannot read).
_QUOTED = rb'"(?:[^"\\\n]|\\.)*"'
_LABEL_NAME = rb"(?:[a-zA-Z_][a-zA-Z0-9_]*|" + _QUOTED + rb")"
_ITEM = rb"(?:" + _LABEL_NAME + rb"[ \t]*=[ \t]*" + _QUOTED + rb"|" + _QUOTED + rb")"
_LABEL_SET = re.compile(rb"[ \t]*[^{ \t\n]*[ \t]*\{[ \t]*((?:" + _ITEM + rb"[ \t]*,[ \t]*)*(?:" + _ITEM
                        + rb"[ \t]*)?)\}")
_PAIRS = re.compile(rb"(" + _LABEL_NAME + rb")[ \t]*=[ \t]*\"((?:[^\"\\\n]|\\.)*)\"|" + _QUOTED)
_ESCAPES = re.compile(rb"\\(.)")
_UNESCAPE = {b"n": b"\n", b"\\": b"\\", b'"': b'"'}


def unescape(text: bytes) -> bytes:
    """Undo the text format's `\\\\`, `\\"` and `\\n` escapes."""
    if b"\\" not in text:
        return text
    return _ESCAPES.sub(lambda m: _UNESCAPE.get(m.group(1), m.group(0)), text)


def parse_labels(line: bytes) -> dict[bytes, bytes] | None:
    """The label set of one sample line (label name -> raw value), None if it is malformed."""
    m = _LABEL_SET.match(line)
    if m is None:
        return {} if b"{" not in line.split(b"#", 1)[0] else None
    return {unescape(name[1:-1] if name[:1] == b'"' else name): value
            for name, value in _PAIRS.findall(m.group(1)) if name}


_HS_LITERAL = re.compile(r"(\^?)((?:[A-Za-z0-9]|\\x\{[0-9a-f]+\})+)(\$?)\Z")
_HS_ESCAPE = re.compile(r"\\x\{([0-9a-f]+)\}")


def label_literal(condition: Condition) -> tuple[str, bool, bool] | None:
    """(text, anchored at start, anchored at end) of an exact / starts_with / ends_with / contains condition.

    Read back from its Hyperscan expression (`^lit$`, `^lit`, `lit$`, `lit`, with every character
    other than ASCII letters and digits spelled `\\x{hex}`); None for regexes and anything else.
    """
    regex = condition.hs_flags & hyperscan.HS_FLAG_SOM_LEFTMOST
    if condition.op is not Op.STRING or condition.hs_pattern is None or regex:
        return None
    m = _HS_LITERAL.match(condition.hs_pattern)
    if m is None:
        return None
    text = _HS_ESCAPE.sub(lambda e: chr(int(e.group(1), 16)), m.group(2))
    return text, bool(m.group(1)), bool(m.group(3))


def _never_matches_text(condition: Condition) -> bool:
    """Conditions no label value (always a string) can satisfy: they hold exactly as on an absent label."""
    return condition.op in (Op.NEVER, Op.EQUALS, Op.COMPARE)


@dataclass(slots=True)
class Detector:
    """One expression of the locator's Hyperscan database and what its reports mean.

    `label` >= 0: literal `condition` holds on a value of label key `label`; the report ends
    `back` bytes after the literal starts, and the value starts after the last quote before it
    (plain values hold no quotes). `label` EXACT: the line has something only the exact parser
    reads right.
    """

    label: int
    expression: bytes
    flags: int = 0
    back: int = 0
    condition: int = -1
    anchored: bool = False  # the literal starts the value: it starts exactly `back` bytes before the end
    # A report may come from inside another value, so its quote parity must be checked. Not so when
    # the literal is anchored at a value's start or end and has no character of label syntax: the
    # text next to a quote that closes a value is label syntax.
    verify: bool = True


EXACT = -1
_SYNTAX = frozenset(b'{},= \t#"')
# Escapes, exemplars (`# {...}`), quoted label names (`"name"="`) and blanks inside label
# syntax, which the fast paths do not spell, and the two characters RE2's case folding maps
# onto ASCII letters (ſ, K) where Hyperscan does not.
_EXACT_MARKERS = (b"\\", b"#", b'"=', b"{ ", b"{\t", b", ", b",\t", b" =", b"\t=", b"= ", b"=\t",
                  "\u017f".encode(), "\u212a".encode())
_BARE_NAME = re.compile(rb"[a-zA-Z_][a-zA-Z0-9_]*\Z")


def literal_conditions(plan: SignalPlan, key: FieldKey) -> list[tuple[Condition, tuple[str, bool, bool]]] | None:
    """The conditions on a label with their literals, or None when one of them is no literal."""
    conditions = [c for c in plan.conditions if c.field == key and not _never_matches_text(c)]
    literals = [label_literal(c) for c in conditions]
    return None if None in literals else list(zip(conditions, literals, strict=True))


def detectors(plan: SignalPlan, keys: list[FieldKey]) -> list[Detector]:
    """What to look for so that every line where a literal condition on a label can hold is reported.

    A line without a report cannot satisfy any of them, which is what an absent label gives
    too. Labels with other conditions (regex, exists, ...) need every occurrence: they are not
    looked for here (see `_values_by_find`). The markers report lines for the exact parser.
    """
    out = [Detector(EXACT, _hs_literal(marker)) for marker in _EXACT_MARKERS]
    for index, key in enumerate(keys):
        label = key[1][0].encode()
        literals = literal_conditions(plan, key)
        if literals is None:
            continue
        for condition, (text, at_start, at_end) in literals:
            value = _escape(text.encode())
            body = (b"" if at_start else rb'[^"\n]*') + _hs_literal(value) + (b'"' if at_end else b"")
            flags = condition.hs_flags & hyperscan.HS_FLAG_CASELESS
            verify = not (at_start or at_end) or any(c in _SYNTAX for c in value) or not value
            out.append(Detector(index, _needle(label) + body, flags, len(value) + at_end, condition.index, at_start,
                                verify))
    return out


@dataclass(slots=True)
class Located:
    """What a scan found in the lines of a region (line numbers are the region's).

    `lines`: the lines to evaluate with their labels. `values`: per label key {line: value}
    wherever a value can matter (for every line when `holds` is None, else only for `exact`
    lines). `holds`: when every label condition is a literal, per condition the plain lines on
    which it holds, so these lines need no values at all.
    """

    lines: list[int]
    values: list[dict[int, str]]
    holds: dict[int, list[int]] | None
    exact: set[int]
    malformed: set[int]


class LabelLocator:
    """Finds what the label conditions of a snapshot need, in many lines at once.

    Literal conditions have detectors: the start of a value in a label set (`{name="`,
    `,name="`, name bare or quoted) followed by the literal. Labels with any other condition
    are read line by line with `bytes.find`, only where they can change an outcome. Lines
    neither can read with certainty (backslash escapes, a `#` of exemplars, quoted label
    names, blanks in label syntax, an unterminated value) are parsed exactly instead.
    """

    def __init__(self, plan: SignalPlan, keys: list[FieldKey]) -> None:
        self.keys = keys
        self.labels = [key[1][0].encode() for key in keys]
        self.detectors = detectors(plan, keys)
        # Labels whose every value is read (some condition is no literal), line by line where they matter.
        self.dense = {k for k, key in enumerate(keys) if literal_conditions(plan, key) is None}
        # Otherwise every condition is settled by its own detector's reports on plain lines: no values needed.
        self.literal_only = not self.dense
        self.database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
        self.database.compile(expressions=[d.expression for d in self.detectors],
                              ids=list(range(len(self.detectors))), flags=[d.flags for d in self.detectors])
        self._local = threading.local()

    def _scratch(self) -> hyperscan.Scratch:
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = hyperscan.Scratch(self.database)
        return scratch

    def locate(self, region: bytes, lines: list[bytes], next_starts: list[int], wanted: bytearray | None,
               wanted_keys: list[bytearray | None] | None = None) -> Located:
        """Scan `lines`, joined as `region` (line i ends with the newline at `next_starts[i] - 1`).

        Only the lines `wanted` count (all when None), and for label key k only the lines
        `wanted_keys[k]` when given. Lines with something the fast paths do not spell are
        parsed exactly; those that cannot be parsed are `malformed` and pass.
        """
        reports: list[list[int]] = [[] for _ in self.detectors]
        adders = [r.append for r in reports]

        def on_match(detector: int, start: int, end: int, flags: int, context: Any) -> None:
            adders[detector](end)

        self.database.scan(region, match_event_handler=on_match, scratch=self._scratch())
        special = [end - 1 for d, ends in zip(self.detectors, reports, strict=True) if d.label == EXACT for end in ends]
        exact = set(map(bisect_right, repeat(next_starts), special))
        holds: dict[int, list[int]] | None = None
        if self.literal_only:
            holds = _holds(region, self.detectors, reports, next_starts, wanted, exact)
            values: list[dict[int, str]] = [{} for _ in self.keys]
        else:
            starts: list[list[int]] = [[] for _ in self.keys]
            for detector, ends in zip(self.detectors, reports, strict=True):
                if ends and detector.label != EXACT:
                    starts[detector.label].extend(_value_starts(region, ends, detector))
            keys_wanted = wanted_keys or [None] * len(self.keys)
            values = []
            for k, (positions, only) in enumerate(zip(starts, keys_wanted, strict=True)):
                where = wanted if only is None else only
                if k in self.dense:
                    values.append(_values_by_find(lines, self.labels[k], where, exact))
                else:
                    values.append(_values(region, positions, next_starts, exact, where) if positions else {})
        exact.update(_odd_quoted(region, next_starts, set().union(*values, *(holds.values() if holds else ())) - exact))
        if wanted is not None:
            exact = {i for i in exact if wanted[i]}
        malformed = self._parse_exactly(region, next_starts, exact, values)
        lines = exact.union(*values, *(holds.values() if holds else ())) - malformed
        return Located(sorted(lines), values, holds, exact, malformed)

    def _parse_exactly(self, region: bytes, next_starts: list[int], exact: set[int],
                       values: list[dict[int, str]]) -> set[int]:
        """Values of `exact` lines from the exact parser; returns the lines it cannot read."""
        malformed: set[int] = set()
        for i in exact:
            labels = parse_labels(region[next_starts[i - 1] if i else 0:next_starts[i] - 1])
            if labels is None:
                malformed.add(i)
            for found, label in zip(values, self.labels, strict=True):
                found.pop(i, None)
                value = labels.get(label) if labels else None
                if value:
                    found[i] = unescape(value).decode("utf-8", "replace")
        return malformed


def _holds(region: bytes, detectors: list[Detector], reports: list[list[int]], next_starts: list[int],
           wanted: bytearray | None, exact: set[int]) -> dict[int, list[int]]:
    """Per literal condition, the lines where one of its detectors reported a real label.

    A report is real when the quote opening its value is preceded on its line by an even
    number of quotes: elsewhere it lies inside another value (plain lines have no escapes).
    Only reports of detectors that can come from inside a value are checked.
    """
    starts: list[int] = []
    conditions: list[int] = []
    verify: list[bool] = []
    open_ended: list[int] = []  # value starts of reports whose match did not reach the closing quote
    for detector, ends in zip(detectors, reports, strict=True):
        if ends and detector.label != EXACT:
            value_starts = list(_value_starts(region, ends, detector))
            starts.extend(value_starts)
            conditions.extend(repeat(detector.condition, len(ends)))
            verify.extend(repeat(detector.verify, len(ends)))
            if not detector.expression.endswith(b'"'):
                open_ended.extend(value_starts)
    holds: dict[int, list[int]] = {}
    if not starts:
        return holds
    lines = list(map(bisect_right, repeat(next_starts), starts))
    real: list[int] = [1] * len(starts)
    if any(verify):
        line_starts = [0, *next_starts]
        for k in compress(range(len(starts)), verify):
            real[k] = region.count(b'"', line_starts[lines[k]], starts[k]) & 1
    if open_ended:  # a value that does not end on its line: the exact parser judges the line
        exact.update(_unended_lines(region, open_ended, next_starts))
    if wanted is not None:
        real = list(map(and_, real, map(wanted.__getitem__, lines)))
    for condition, line in compress(zip(conditions, lines, strict=True), real):
        where = holds.get(condition)
        if where is None:
            holds[condition] = [line]
        else:
            where.append(line)
    return holds


def _values_by_find(lines: list[bytes], label: bytes, wanted: bytearray | None, exact: set[int]
                    ) -> dict[int, str]:
    """{line: value} of `label` on the `wanted` lines (all when None), one `bytes.find` per line.

    Plain lines (the others are in `exact`, whatever is found on them) spell a label `{name="`
    or `,name="`. A find that lands elsewhere (`xname="`, or inside another value, which the
    value it reads then shows, see `_suspect_values`), or a value without its closing quote on
    the line, sends the line to the exact parser.
    """
    if not _BARE_NAME.match(label):
        return {}  # such a name is always quoted: only on lines for the exact parser
    needle = label + b'="'
    index = list(range(len(lines))) if wanted is None else list(compress(range(len(lines)), wanted))
    where = lines if wanted is None else list(map(lines.__getitem__, index))
    offsets = list(map(bytes.find, where, repeat(needle)))
    present = list(map(lt, repeat(0), offsets))  # at 0 there is no `{` or `,` before it
    index = list(compress(index, present))
    where = list(compress(where, present))
    offsets = list(compress(offsets, present))
    if not index:
        return {}
    opened = map(_OPENERS.__contains__, map(bytes.__getitem__, where, map(sub, offsets, repeat(1))))
    starts = list(map(add, offsets, repeat(len(needle))))
    closing = list(map(bytes.find, where, repeat(b'"'), starts))
    good = list(map(and_, opened, map(lt, repeat(-1), closing)))
    if not all(good):
        exact.update(compress(index, map(not_, good)))
        index, where, starts, closing = (list(compress(x, good)) for x in (index, where, starts, closing))
    values = list(map(bytes.__getitem__, where, map(slice, starts, closing)))
    for k in _suspect_values(values):
        exact.add(index[k])
        values[k] = b""
    return _decoded(index, values)


_OPENERS = frozenset(b"{,")


def _escape(text: bytes) -> bytes:
    """A label value (or quoted label name) as the text format writes it."""
    return text.replace(b"\\", b"\\\\").replace(b'"', b'\\"').replace(b"\n", b"\\n")


def _needle(label: bytes) -> bytes:
    """Hyperscan expression that ends where a value of `label` starts in a label set.

    `{name="` or `,name="` with the name bare (where it may be) or quoted: a few literals.
    """
    names = [_hs_literal(b'"' + _escape(label) + b'"')]
    if _BARE_NAME.match(label):
        names.append(_hs_literal(label))
    return rb"[{,](?:" + b"|".join(names) + rb')="'


def _hs_literal(text: bytes) -> bytes:
    return b"".join(bytes([c]) if c < 128 and chr(c).isalnum() else b"\\x%02x" % c for c in text)


def _odd_quoted(region: bytes, next_starts: list[int], lines: set[int]) -> list[int]:
    """The `lines` with an odd number of quotes: a value on them never ends.

    Plain lines have no escapes, so every value takes two quotes. A line where a value is
    left open elsewhere than in the label the fast path read (`{env="dev",v="abc} 1`) cannot
    be parsed: the exact parser must see it, so it passes as it is instead of being decided
    by the labels read before the break.
    """
    if not lines:
        return []
    order = sorted(lines)
    starts = [next_starts[i - 1] if i else 0 for i in order]
    quotes = map(region.count, repeat(b'"'), starts, map(next_starts.__getitem__, order))
    return list(compress(order, map(and_, quotes, repeat(1))))


def _unended_lines(region: bytes, starts: list[int], next_starts: list[int]) -> set[int]:
    """The lines of the values starting at `starts` that have no closing quote on their line."""
    lines = list(map(bisect_right, repeat(next_starts), starts))
    closing = map(region.find, repeat(b'"'), starts, map(next_starts.__getitem__, lines))
    return set(compress(lines, map(lt, closing, repeat(0))))


def _value_starts(region: bytes, ends: list[int], detector: Detector) -> list[int] | map[int]:
    """Where the values of a detector's reports start."""
    back = detector.back
    if detector.anchored:
        return map(sub, ends, repeat(back))
    return map(add, map(region.rfind, repeat(b'"'), repeat(0), map(sub, ends, repeat(back))), repeat(1))


_SUSPECT = (b"=", b",", b"}")


def _values(region: bytes, positions: list[int], next_starts: list[int], exact: set[int],
            wanted: bytearray | None) -> dict[int, str]:
    """Value start offsets -> {line: value} in C-level passes over all of them at once.

    Plain lines (the others are in `exact`) have no escapes, so a value holds no quote. A
    report inside another value reads label syntax as its value (see `_suspect_values`) and a
    value running past its line is cut short: both send the line to the exact parser.
    """
    lines = list(map(bisect_right, repeat(next_starts), positions))
    if wanted is not None:
        keep = list(map(wanted.__getitem__, lines))
        lines = list(compress(lines, keep))
        positions = list(compress(positions, keep))
        if not positions:
            return {}
    closing = list(map(region.find, repeat(b'"'), positions, map(next_starts.__getitem__, lines)))
    values = list(map(region.__getitem__, map(slice, positions, closing)))
    if -1 in closing:
        for k in compress(range(len(closing)), map(lt, closing, repeat(0))):
            exact.add(lines[k])
            values[k] = b""
    for k in _suspect_values(values):
        exact.add(lines[k])
        values[k] = b""
    return _decoded(lines, values)


def _suspect_values(values: list[bytes]) -> list[int]:
    """Positions of values that may have been read from outside any value.

    A `name="` found inside another value (one ending in `,name=`) starts at that value's
    closing quote, so what it reads up to the next quote is label syntax between two quoted
    strings, which on a plain line always holds `=`, `,` or `}`. Values holding any of these
    are rare enough to leave to the exact parser.
    """
    joined = b"\n".join(values)
    if not any(s in joined for s in _SUSPECT):
        return []
    return [k for k, value in enumerate(values) if any(s in value for s in _SUSPECT)]


def _decoded(lines: list[int], values: list[bytes]) -> dict[int, str]:
    """{line: text} for the non-empty values (plain values hold no newline: one decode for all)."""
    if not values:
        return {}
    texts = b"\n".join(values).decode("utf-8", "replace").split("\n")
    return dict(compress(zip(lines, texts, strict=True), values))
