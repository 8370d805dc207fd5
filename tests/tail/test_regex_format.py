"""-f regex and -f auto: text lines parsed by the default patterns and a user's RE2 patterns, nothing dropped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import drop_policy, run_cli, write_policy
from tests.tail.test_parsed_records import attributes, records

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def forward(upstream: RecordingUpstream, lines: list[str], *args: str) -> list:
    stdin = "".join(f"{line}\n" for line in lines).encode()
    result = run_cli(["--forward-url", f"{upstream.url}/v1/logs", *args], stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    return records(upstream)


@pytest.mark.parametrize(("line", "time_ns", "level", "number", "body"), [
    ("[2023-12-01T10:30:45Z] ERROR: disk full", 1701426645 * 10**9, "ERROR", 17, "disk full"),
    ("2023/12/01 10:30:45 [error] upstream timed out", 1701426645 * 10**9, "error", 17, "upstream timed out"),
    ("ERROR: no route", 0, "ERROR", 17, "no route"),
    ("warning: low memory", 0, "warning", 13, "low memory"),
])
def test_default_patterns(upstream: RecordingUpstream, line: str, time_ns: int, level: str, number: int,
                          body: str) -> None:
    [record] = forward(upstream, [line], "-f", "regex")
    assert (record.time_unix_nano, record.severity_text, record.severity_number) == (time_ns, level, number)
    assert record.body.string_value == body
    assert attributes(record) == {"log.file.path": ""}


def test_default_pattern_with_trace_context(upstream: RecordingUpstream) -> None:
    line = f"2023-12-01 10:30:45.123 INFO [{TRACE},{SPAN}] --- order placed"
    [record] = forward(upstream, [line], "-f", "regex")
    assert record.time_unix_nano == 1701426645123000000
    assert (record.severity_text, record.severity_number, record.body.string_value) == ("INFO", 9, "order placed")
    assert (record.trace_id.hex(), record.span_id.hex()) == (TRACE, SPAN)


def test_unmatched_line_is_forwarded_whole(upstream: RecordingUpstream) -> None:
    got = forward(upstream, ["just some text", "Note: not a level"], "-f", "regex")
    assert [(r.body.string_value, r.severity_number) for r in got] == [("just some text", 0),
                                                                       ("Note: not a level", 0)]


def test_custom_patterns_come_first_and_other_groups_are_attributes(tmp_path: Path,
                                                                   upstream: RecordingUpstream) -> None:
    patterns = tmp_path / "patterns.txt"
    patterns.write_text("# access logs\n"
                        r"^(?P<client>\S+) (?P<level>[A-Z]+) (?P<method>GET|POST) (?P<message>.*)$" "\n")
    got = forward(upstream, ["10.0.0.1 WARN GET /slow", "ERROR: still the defaults"], "-f", "regex",
                  "--patterns", str(patterns))
    assert (got[0].severity_number, got[0].body.string_value) == (13, "/slow")
    assert attributes(got[0]) == {"client": "10.0.0.1", "method": "GET", "log.file.path": ""}
    assert (got[1].severity_number, got[1].body.string_value) == (17, "still the defaults")


def test_pattern_rejected_by_re2_is_one_line_and_exit_2(tmp_path: Path) -> None:
    patterns = tmp_path / "patterns.txt"
    patterns.write_text(r"^(?P<level>\w+) (?=ahead)" "\n")
    result = run_cli(["-f", "regex", "--patterns", str(patterns)], stdin=b"x\n")
    assert result.returncode == 2
    assert result.stderr.decode() == (f"edge-tail: patterns {patterns}: RE2 does not accept "
                                      "'^(?P<level>\\\\w+) (?=ahead)': invalid perl operator: (?=\n")


def test_auto_tries_json_then_logfmt_then_patterns(upstream: RecordingUpstream) -> None:
    lines = ['{"level": "debug", "msg": "from json"}', 'level=info msg="from logfmt"', "FATAL: from a pattern",
             "plain words"]
    got = forward(upstream, lines, "-f", "auto")
    assert [(r.severity_number, r.body.string_value) for r in got] == [
        (5, "from json"), (9, "from logfmt"), (21, "from a pattern"), (0, "plain words")]


def test_tail_policies_see_pattern_fields(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.json", [drop_policy("debug", {"log_field": "severity_text", "exact": "DEBUG"})])
    lines = b"[2023-12-01T10:30:45Z] DEBUG: noise\n[2023-12-01T10:30:46Z] INFO: kept\n"
    result = run_cli(["-f", "regex", "-p", str(policy)], stdin=lines)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b"[2023-12-01T10:30:46Z] INFO: kept\n"
