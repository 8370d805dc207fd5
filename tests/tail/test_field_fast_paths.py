"""The shortcuts of forwarding's parse path give the answers of the general code they bypass."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.formats.lines.patterns import _LOGFMT_PAIR, _logfmt_value, compile_patterns, parse_logfmt, pattern_fields
from edge.formats.lines.records import (
    ATTRIBUTES_KEY,
    DEFAULT_NAMES,
    HEX16,
    HEX32,
    FieldNames,
    Record,
    RecordBuilder,
    first,
    hex_id,
    severity_number,
    text_time_ns,
    time_ns,
)

digits = st.text("0123456789", min_size=2, max_size=2)
canonical = st.builds(
    lambda year, month, day, sep, hour, minute, second, fraction, zone:
    f"{year}-{month}-{day}{sep}{hour}:{minute}:{second}{fraction}{zone}",
    st.sampled_from(["1969", "1970", "2024", "0001", "9999"]), digits, digits, st.sampled_from("T "),
    digits, digits, digits,
    st.sampled_from(["", ".1", ",5", ".123", ".123456", ".1234567", ".123456789", ".0000000001"]),
    st.sampled_from(["", "Z", "z", "+02:00", "-05:30", "+23:59", "+24:00", "-00:00", "+12:60", "+0200"]))


@settings(max_examples=3000, deadline=None)
@given(canonical)
def test_the_canonical_time_shortcut_agrees_with_datetime(text: str) -> None:
    assert time_ns(text) == text_time_ns(text)


@given(st.text("0123456789abcdefABCDEF -xyz", max_size=40))
def test_the_plain_hex_shortcut_agrees_with_the_pattern(text: str) -> None:
    for pattern, size in ((HEX32, 16), (HEX16, 8)):
        plain = text.replace("-", "")
        valid = pattern.fullmatch(plain) is not None and plain.strip("0") != ""
        assert hex_id(text, pattern) == (bytes.fromhex(plain) if valid else b""), (text, size)


def test_layouts_follow_the_key_set_and_skip_null_fields() -> None:
    build = RecordBuilder()
    first = build({"msg": None, "message": "m", "level": "ERROR"}, b"line")
    assert (first.body, first.severity_number, first.attributes) == ("m", 17, {"msg": None})
    second = build({"msg": "x", "message": None, "level": "warn"}, b"line")  # same keys, other values
    assert (second.body, second.severity_text, second.attributes) == ("x", "warn", {"message": None})
    assert len(build.layouts) == 1
    assert build({"other": 1}, "whole line").body == "whole line"


def test_the_pattern_set_picks_the_first_matching_pattern() -> None:
    compiled = compile_patterns((r"^(?P<word>\w+) (?P<level>[A-Z]+): (?P<message>.*)$",))
    fields = pattern_fields(compiled)
    assert fields(b"alpha ERROR: boom", "") == {"word": "alpha", "level": "ERROR", "message": "boom"}
    assert fields(b"ERROR: boom", "") == {"level": "ERROR", "message": "boom"}
    assert fields(b"nothing here", "") == {}


def plain_record(doc: dict, line: str, names: FieldNames) -> Record:
    """The reference: each field's first key present looked up in the doc itself, no layouts or caches."""
    attributes = dict(doc)
    if ATTRIBUTES_KEY in doc:
        nested = attributes.pop(ATTRIBUTES_KEY)
        if isinstance(nested, dict):
            attributes = {**nested, **attributes}
        elif nested is not None:
            attributes[ATTRIBUTES_KEY] = nested
    key, body = first(doc, names.message)
    if key:
        attributes.pop(key)
    else:
        body = line
    record = Record(body=body, attributes=attributes)
    key, level = first(doc, names.level)
    if key:
        attributes.pop(key, None)
        record.severity_text = level if isinstance(level, str) else str(level)
        record.severity_number = severity_number(level) if isinstance(level, str) else (
            level if type(level) is int and 0 < level <= 24 else 0)
    key, when = first(doc, names.time)
    if key and time_ns(when) > 0:
        attributes.pop(key)
        record.time_ns = time_ns(when)
    for keys, pattern, slot in ((names.trace_id, HEX32, "trace_id"), (names.span_id, HEX16, "span_id")):
        key, value = first(doc, keys)
        if key and hex_id(value, pattern):
            attributes.pop(key, None)
            setattr(record, slot, hex_id(value, pattern))
    return record


field_keys = st.sampled_from(["message", "msg", "level", "severity", "timestamp", "ts", "trace_id", "traceId",
                              "span_id", "spanId", ATTRIBUTES_KEY, "service", "status"])
field_values = st.none() | st.booleans() | st.integers(-5, 30) | st.floats(allow_nan=False) | st.sampled_from([
    "ERROR", "info", " Warn ", "2024-05-01T12:00:07.123Z", "1714564807", "1969-12-31 23:59:59", "0" * 32,
    "0123456789abcdef0123456789abcdef", "0123456789abcdef", "01234567-89ab-cdef-0123-456789abcdef", "x"]) | \
    st.dictionaries(st.sampled_from(["service", "message", "k"]), st.integers() | st.none(), max_size=2)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.dictionaries(field_keys, field_values, min_size=1, max_size=7), min_size=1, max_size=6),
       st.sampled_from([DEFAULT_NAMES, FieldNames.overridden(message="level"), FieldNames.overridden(time="ts")]))
def test_the_record_builder_agrees_with_plain_lookups(docs: list[dict], names: FieldNames) -> None:
    build = RecordBuilder(names)  # one builder for all: its layouts and severities are remembered between docs
    for doc in docs:
        want = plain_record(doc, "the line", names)
        got = build(doc, "the line")  # (which may take the doc over as the attributes)
        assert got == want
        assert list(got.attributes) == list(want.attributes)


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(["k", "=", "v", '"', "\\", " ", "a b", '\\"', "é", "\t", "x=1"]), max_size=14)
       .map("".join))
def test_logfmt_values_agree_with_unescaping_each(line: str) -> None:
    assert parse_logfmt(line) == {k: _logfmt_value(v) for k, v in _LOGFMT_PAIR.findall(line)}
