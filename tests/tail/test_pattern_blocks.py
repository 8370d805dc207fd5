"""The default patterns run by Python's re (a whole block at a time for -f regex's records, a line at a time for
fields) give what RE2 gives for any line."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.formats.lines.pattern_blocks import PatternBlocks, applies_to
from edge.formats.lines.patterns import compile_patterns, fields_parser, pattern_fields
from edge.formats.lines.records import DEFAULT_NAMES, FieldNames, Record
from edge.tail.otlp import record_parser

# pieces of the default layouts, and of near misses, joined at random
PIECES = st.sampled_from([
    "[", "]", ",", ":", " ", "  ", "\t", "\v", "\f", "\r", "---", " --- ", "2024-05-01", "2024/05/01", "12:00:07",
    "T", " ", ".123", ",5", "Z", "+02:00", "1969-12-31 23:59:59", "2024-13-01 00:00:00", "INFO", "error", "WARN",
    "Warning", "warn", "notice", "x", "GET /a done", "service=api", "é", "\u00a0", "\u212a", "\xff",
    "0123456789abcdef0123456789abcdef", "0123456789abcdef", "00000000000000000000000000000000", "zz",
    "[2024-05-01T12:00:07Z] INFO: ", "2024-05-01 12:00:07.123 ERROR [", "] --- ", "ERROR: ", "2024/05/01 12:00:07 [",
    "[error] ",
])
LINES = st.lists(PIECES, max_size=12).map("".join)


RE2_FIELDS = pattern_fields(compile_patterns(()))  # the reference: RE2, line by line


def reference(lines: list[bytes]) -> list[Record]:
    return record_parser("regex", fields=RE2_FIELDS)(lines)


def same(fast: list[Record], slow: list[Record]) -> None:
    assert fast == slow
    assert [list(r.attributes) for r in fast] == [list(r.attributes) for r in slow]  # the order sent too


@settings(max_examples=1500, deadline=None)
@given(st.lists(LINES.map(lambda text: text.encode("utf-8", "surrogateescape")), min_size=1, max_size=8))
def test_the_block_path_gives_the_reference_records(lines: list[bytes]) -> None:
    parse = record_parser("regex")
    assert isinstance(parse, PatternBlocks)
    same(parse(lines), reference(lines))


@given(st.lists(st.binary(max_size=30), min_size=1, max_size=6))
def test_any_bytes_give_the_reference_records(lines: list[bytes]) -> None:
    same(record_parser("regex")(lines), reference(lines))  # line breaks inside a record: the reference whole


@settings(max_examples=1500, deadline=None)
@given(LINES.map(lambda text: text.encode("utf-8", "surrogateescape")) | st.binary(max_size=30))
def test_line_fields_give_re2s_fields(line: bytes) -> None:
    text = line.decode("utf-8", "replace")
    want = RE2_FIELDS(line, text)
    for fmt in ("regex", "auto"):
        got = fields_parser(fmt)(line, text)
        if fmt == "regex" or not (text[:1] == "{" or "=" in text):  # (auto tries json and logfmt first)
            assert got == want
            assert list(got) == list(want)


def test_a_block_of_the_default_layouts() -> None:
    lines = [b"2024-05-01 12:00:07.123 ERROR [0123456789abcdef0123456789abcdef,0123456789abcdef] --- GET /a done",
             b"[2024-05-01T12:00:07Z] WARN: slow", b"2024/05/01 12:00:07 [error] boom", b"warning: disk",
             b"no pattern here", b"", "[2024-05-01T12:00:07Z] INFO: caf\u00e9".encode(), b"\xff\xfe"]
    records = record_parser("regex")(lines)
    same(records, reference(lines))
    assert [(r.body, r.severity_text, r.severity_number) for r in records] == [
        ("GET /a done", "ERROR", 17), ("slow", "WARN", 13), ("boom", "error", 17), ("disk", "warning", 13),
        ("no pattern here", "", 0), ("", "", 0), ("caf\u00e9", "INFO", 9), (b"\xff\xfe", "", 0)]
    assert records[0].trace_id.hex() == "0123456789abcdef0123456789abcdef"
    assert records[0].time_ns == 1714564807123000000


def test_renamed_fields_keep_the_reference_path() -> None:
    assert applies_to(DEFAULT_NAMES)
    assert applies_to(FieldNames.overridden(trace_id="trace_id"))
    assert not applies_to(FieldNames.overridden(time="ts"))
    assert not applies_to(FieldNames.overridden(message="level"))
    assert not isinstance(record_parser("regex", FieldNames.overridden(time="ts")), PatternBlocks)


def test_near_misses_are_forwarded_whole_as_by_re2() -> None:
    lines = [b"ERROR:\x0bdisk", b"[t]\x0bINFO: x", b"ERROR:", b"2024-05-01 12:00:07 INFO [a,b,c] --- m"]
    records = record_parser("regex")(lines)
    same(records, reference(lines))  # RE2's \s is [\t\n\f\r ]: no vertical tab
    assert [r.body for r in records] == [line.decode() for line in lines]
    assert not any(r.severity_text for r in records)
