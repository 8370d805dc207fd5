"""Lines as fields, per `--format`: json objects, logfmt pairs, or the named groups of RE2 patterns.

`regex` tries its patterns in order and takes the named groups of the first that
matches: `level`, `message`, `timestamp`, `trace_id` and `span_id` become the record's
severity, body, time and trace context (`edge.formats.lines.records`), any other group
an attribute. The four default patterns cover the text layouts of common frameworks;
`--patterns FILE` puts the user's patterns (one per line, `#` comments) before them.
`auto` tries a JSON object, then a line made only of logfmt pairs, then the patterns.
The defaults' message takes the rest of the record, line breaks included, so a multi-line
record (`--multiline-start`) keeps its continuation lines in its body.
A line nothing matches has no fields: it is forwarded whole, never dropped.
Patterns are RE2 (linear time whatever the line), the engine the policies use too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import re2

_LEVEL = r"(?P<level>[A-Za-z]+)"
DEFAULT_PATTERNS = (
    # [2023-12-01T10:30:45Z] ERROR: message
    r"^\[(?P<timestamp>[^\]]+)\]\s+" + _LEVEL + r":?\s+(?P<message>(?s:.*))$",
    # 2023/12/01 10:30:45 [error] message
    r"^(?P<timestamp>\d{4}/\d{2}/\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?)\s+\[" + _LEVEL + r"\]\s+(?P<message>(?s:.*))$",
    # 2023-12-01 10:30:45.123 ERROR [trace-id,span-id] --- message
    r"^(?P<timestamp>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)\s+" + _LEVEL
    + r"\s+\[(?P<trace_id>[^,\]]*),(?P<span_id>[^,\]]*)\]\s+---\s+(?P<message>(?s:.*))$",
    # ERROR: message
    r"^(?P<level>(?i:trace|debug|info|notice|warn|warning|error|err|critical|crit|fatal|panic)):\s+"
    r"(?P<message>(?s:.*))$",
)
_LOGFMT_PAIR = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|[^\s"]*)')
_LOGFMT_LINE = re.compile(r'\s*(?:[^\s=]+=(?:"(?:[^"\\]|\\.)*"|[^\s"]*)\s*)+')
_LOGFMT_ESCAPE = re.compile(r"\\(.)")
_ANCHOR_START = re2._re2.RE2.Anchor.ANCHOR_START
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # the error is reported once, in our own words
Fields = Callable[[bytes, str], dict[str, Any]]  # (line bytes, line text) → its fields; {} = none


class PatternError(ValueError):
    """A patterns file that cannot be read or holds a pattern RE2 refuses (one line for the operator)."""


def _logfmt_value(raw: str) -> str:
    if raw.startswith('"') and len(raw) >= 2:
        return _LOGFMT_ESCAPE.sub(r"\1", raw[1:-1])
    return raw


def parse_logfmt(line: str) -> dict[str, Any]:
    return {k: _logfmt_value(v) for k, v in _LOGFMT_PAIR.findall(line)}


def parse_json(line: bytes) -> dict[str, Any]:
    """The object on a JSON line; {} when the line is not a JSON object (it still has a body)."""
    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError:
        return {}
    return doc if doc.__class__ is dict else {}


def load_patterns(path: str) -> tuple[str, ...]:
    """The patterns of a file: one per line; blank lines and lines starting with # are skipped."""
    if not path:
        return ()
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise PatternError(f"patterns {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return tuple(line for line in (raw.strip() for raw in text.splitlines()) if line and not line.startswith("#"))


def compile_patterns(user: tuple[str, ...], where: str = "") -> list[Any]:
    """The user's patterns, then the defaults, compiled with RE2; PatternError names the bad one."""
    compiled = []
    for pattern in (*user, *DEFAULT_PATTERNS):
        try:
            compiled.append(re2.compile(pattern, _RE2_OPTIONS))
        except re2.error as exc:
            reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else exc
            raise PatternError(f"patterns {where}: RE2 does not accept {pattern!r}: {reason}") from None
    return compiled


def pattern_fields(compiled: list[Any]) -> Fields:
    """The named groups of the first pattern that matches the line, found with one RE2 `Set` pass
    (every pattern at once, as a DFA) and then one capturing match of that pattern alone.

    The line's bytes go to RE2's own matcher: google-re2's `match` on text converts every offset
    between bytes and characters in Python and builds a Match object, several times the cost of
    the match. Should the set find nothing (it also gives up when its DFA runs out of memory),
    the patterns are tried in order, so the answer is always the first matching pattern's."""
    programs = [(pattern._regexp.Match, tuple(pattern.groupindex.items())) for pattern in compiled]
    chooser = re2._re2.Set(_ANCHOR_START, _RE2_OPTIONS)
    for pattern in compiled:
        chooser.Add(pattern.pattern.encode())
    chooser.Compile()
    choose = chooser.Match

    def fields(line: bytes, text: str) -> dict[str, Any]:
        end = len(line)
        found = choose(line)
        for match, groups in [programs[min(found)]] if found else programs:
            spans = match(_ANCHOR_START, line, 0, end)
            if spans[0][0] >= 0:
                return {name: line[spans[i][0]:spans[i][1]].decode("utf-8", "replace")
                        for name, i in groups if spans[i][1] > spans[i][0]}
        return {}
    return fields


def check_available() -> None:
    """Fail fast at import if google-re2 changed the internals `pattern_fields` relies on."""
    fields = pattern_fields(compile_patterns(()))
    assert fields("ERROR: é x".encode(), "") == {"level": "ERROR", "message": "é x"}


def fields_parser(fmt: str, compiled: list[Any] | None = None) -> Fields:
    """How a line of `fmt` becomes fields (`compiled` patterns: regex and auto; the defaults when None)."""
    if fmt == "json":
        return lambda line, text: parse_json(line)
    if fmt == "logfmt":
        return lambda line, text: parse_logfmt(text)
    by_pattern = pattern_fields(compiled if compiled is not None else compile_patterns(()))
    if fmt == "regex":
        return by_pattern

    def auto(line: bytes, text: str) -> dict[str, Any]:
        if text[:1] == "{" and (doc := parse_json(line)):
            return doc
        if "=" in text and _LOGFMT_LINE.fullmatch(text):
            return parse_logfmt(text)
        return by_pattern(line, text)
    return auto


check_available()
