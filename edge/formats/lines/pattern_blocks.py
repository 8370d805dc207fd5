"""The default patterns with Python's `re`: over a whole block of lines at once (one `re.findall`,
records from its groups), or one line at a time for fields (`line_fields`: -f auto's text lines, policies).

`-f regex` without `--patterns` tries the four default patterns (`edge.formats.lines.patterns`) on
every line. Matching line by line with RE2 (a `Set` pass, then a capturing match) cost more than
the rest of forwarding a line. Here the four patterns are one alternation, written line-bounded
(no part of it matches a line break), and Python's `re` runs it over the block joined by newlines:
C does the per-line loop and hands back each line's groups, one tuple per line (a last branch
matches any line, so a line no pattern matches is there too, and is forwarded whole).

Python's `re` is a backtracking engine, which is why user patterns stay with RE2. These four
are ours: no quantifier is nested in another and neighbouring parts match disjoint characters,
so a line costs time linear in its length whatever it holds.

Every record is the one the reference (`pattern_fields` with `RecordBuilder`) gives, for each line:
the alternation keeps the patterns' order (the first that matches wins) and their groups; RE2's
`\\s` is `[\\t\\n\\f\\r ]` and `\\d` `[0-9]`, spelled out here. The two engines read bytes beyond ASCII
differently (RE2 by UTF-8 character), so a line holding any is parsed again by the reference, and a
block whose records hold line breaks (`--multiline-start`) is left to it whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from edge.formats.lines.records import HEX16, HEX32, SEVERITY_NUMBERS, FieldNames, Record, hex_id, time_ns

_SPACE = r"[\t\f\r ]+"  # RE2's \s+ inside a line
_BLOCK = re.compile(
    r"^(?:(?:"
    # [2023-12-01T10:30:45Z] ERROR: message
    r"\[([^\]\n]+)\]" + _SPACE + r"([A-Za-z]+):?" + _SPACE
    # 2023/12/01 10:30:45 [error] message
    + r"|([0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]+)?)" + _SPACE + r"\[([A-Za-z]+)\]" + _SPACE
    # 2023-12-01 10:30:45.123 ERROR [trace-id,span-id] --- message
    + r"|([0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(?:[.,][0-9]+)?)" + _SPACE + r"([A-Za-z]+)"
    + _SPACE + r"\[([^,\]\n]*),([^,\]\n]*)\]" + _SPACE + r"---" + _SPACE
    # ERROR: message
    + r"|((?i:trace|debug|info|notice|warn|warning|error|err|critical|crit|fatal|panic)):" + _SPACE
    + r")([^\n]*)|[^\n]*)$",  # the message; or a line no pattern matches
    re.MULTILINE | re.ASCII)
GROUP_NAMES = {"time": "timestamp", "level": "level", "message": "message", "trace_id": "trace_id",
               "span_id": "span_id"}  # the FieldNames field each of the defaults' groups is meant for
_MAX_LEVELS = 1024


def applies_to(names: FieldNames) -> bool:
    """Whether `names` reads the defaults' groups as meant: each group names its own field and no other
    (with `--time-key ts`, say, `timestamp` is an attribute: the reference path handles that)."""
    for field_name, group in GROUP_NAMES.items():
        for other in GROUP_NAMES:
            if (group in getattr(names, other)) != (other == field_name):
                return False
    return True


class PatternBlocks:
    """`Parser` of -f regex with the default patterns alone; `reference` parses one line the general way."""

    def __init__(self, reference: Callable[[bytes], Record]) -> None:
        self.reference = reference
        self.levels: dict[str, int] = {}  # level as written → its severity number

    def __call__(self, lines: list[bytes]) -> list[Record]:
        joined = b"\n".join(lines)
        found = _BLOCK.findall(joined.decode("latin-1")) if joined.count(b"\n") == len(lines) - 1 else ()
        if len(found) != len(lines):  # a record with line breaks in it
            return list(map(self.reference, lines))
        records = list(map(self._record, found, lines))
        if not joined.isascii():
            for at, line in enumerate(lines):
                if not line.isascii():
                    records[at] = self.reference(line)
        return records

    def _record(self, groups: tuple[str, ...], line: bytes) -> Record:
        """The record of one line's groups (empty groups are absent, as in the reference)."""
        ts1, level1, ts2, level2, ts3, level3, trace, span, level4, message = groups
        if level3:
            when, level = ts3, level3
        elif level1:
            when, level = ts1, level1
        elif level2:
            when, level = ts2, level2
        elif level4:
            when, level = "", level4
        else:
            return Record(body=line.decode("latin-1"))  # (ASCII here; any other line is parsed again)
        number = self.levels.get(level)
        if number is None:
            if len(self.levels) >= _MAX_LEVELS:
                self.levels.clear()
            number = self.levels[level] = SEVERITY_NUMBERS.get(level.lower(), 0)
        trace_id = hex_id(trace, HEX32) if trace else b""
        span_id = hex_id(span, HEX16) if span else b""
        ns = time_ns(when) if when else 0
        attributes = {}  # what stays an attribute, in the reference's order (RE2 lists groups by name)
        if span and not span_id:
            attributes["span_id"] = span
        if ns <= 0:
            ns = 0
            if when:
                attributes["timestamp"] = when
        if trace and not trace_id:
            attributes["trace_id"] = trace
        return Record(message or line.decode("latin-1"), ns, level, number, trace_id, span_id, attributes)


def line_fields(reference: Callable[[bytes, str], dict[str, Any]]) -> Callable[[bytes, str], dict[str, Any]]:
    """`Fields` of the default patterns for one line at a time (policies' view of -f regex, and -f auto's
    text lines): the same alternation on an ASCII line, `reference` (RE2) for any other."""
    match = _BLOCK.match

    def fields(line: bytes, text: str) -> dict[str, Any]:
        if b"\n" in line or not line.isascii():
            return reference(line, text)
        return _named(match(line.decode("ascii")).groups())  # type: ignore[union-attr]  # (a branch matches any line)
    return fields


def _named(groups: tuple[str, ...]) -> dict[str, Any]:
    """One line's non-empty groups by name, in the reference's order (RE2 lists groups by name)."""
    ts1, level1, ts2, level2, ts3, level3, trace, span, level4, message = groups
    if level3:
        named = (("level", level3), ("message", message), ("span_id", span), ("timestamp", ts3), ("trace_id", trace))
    elif level1:
        named = (("level", level1), ("message", message), ("timestamp", ts1))
    elif level2:
        named = (("level", level2), ("message", message), ("timestamp", ts2))
    elif level4:
        named = (("level", level4), ("message", message))
    else:
        return {}
    return {name: value for name, value in named if value}
