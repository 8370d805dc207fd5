"""The shortcuts of forwarding's parse path give the answers of the general code they bypass."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edge.formats.lines.patterns import compile_patterns, pattern_fields
from edge.formats.lines.records import HEX16, HEX32, RecordBuilder, hex_id, text_time_ns, time_ns

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
