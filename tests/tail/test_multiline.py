"""--multiline-start: continuation lines join their record, through the real `edge-tail` and in process."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.tail.block import Block
from edge.tail.multiline import Multiline, MultilineError, RecordJoiner
from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import (
    Tailer,
    clean_env,
    drop_policy,
    lines_of,
    run_cli,
    wait_until,
    write_lines,
    write_policy,
)
from tests.tail.test_parsed_records import records

START = r"^\d{4}-\d{2}-\d{2} "
TRACE = ["2024-05-01 12:00:00.001 ERROR [,] --- payment failed",
         "java.lang.NullPointerException: card",
         "\tat com.shop.Pay.charge(Pay.java:42)",
         "\tat com.shop.Cart.checkout(Cart.java:7)"]
NEXT = "2024-05-01 12:00:01.000 INFO [,] --- next request"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def joiner(max_line: int = 1000, timeout_ms: int = 1000) -> RecordJoiner:
    return Multiline.compile(START, timeout_ms).joiner(max_line)


def block(lines: list[str], start: int) -> Block:
    data = "".join(f"{line}\n" for line in lines).encode()
    return Block(data, start + len(data))


# ── in process: what is emitted, and the positions that go with it ──


def test_a_record_is_emitted_when_the_next_one_starts_with_the_position_of_its_end() -> None:
    joins = joiner()
    first = block(TRACE, 0)
    assert joins.feed(first) == []  # the trace may go on
    [out] = joins.feed(block([NEXT], first.end_offset))
    assert out.records == ["\n".join(TRACE).encode()]
    assert out.data == "".join(f"{line}\n" for line in TRACE).encode()
    assert out.end_offset == first.end_offset  # the checkpoint stays before the record still joining
    assert joins.take_pending() == Block(f"{NEXT}\n".encode(), first.end_offset + len(NEXT) + 1, [NEXT.encode()])


def test_records_inside_one_block_get_their_own_ends_and_the_last_waits() -> None:
    joins = joiner()
    joins.start_at(100)  # a file resumed at its checkpoint
    lines = ["2024-05-01 a", " a2", "2024-05-01 b", "2024-05-01 c", " c2"]
    [out] = joins.feed(block(lines, 100))
    assert out.records == [b"2024-05-01 a\n a2", b"2024-05-01 b"]
    assert out.end_offset == 100 + len(b"2024-05-01 a\n a2\n2024-05-01 b\n")


def test_the_timeout_emits_a_quiet_record_and_continuations_without_a_start_stand_alone() -> None:
    joins = joiner(timeout_ms=50)
    assert joins.feed(block([" orphan", " orphan 2"], 0)) == []  # read from the middle of a record
    assert joins.deadline() is not None
    assert joins.expired(time.monotonic()) is None
    [out] = [b for b in (joins.expired(time.monotonic() + 0.06),) if b is not None]
    assert out.records == [b" orphan\n orphan 2"] and out.end_offset == 18
    assert joins.deadline() is None and joins.expired(time.monotonic() + 10) is None


def test_max_line_cuts_the_joined_record_and_a_bare_position_waits_for_the_pending_record() -> None:
    joins = joiner(max_line=20)
    first = block(["2024-05-01 start", " " + "x" * 50, " more"], 0)
    assert joins.feed(first) == []
    assert joins.feed(Block(b"", first.end_offset + 9)) == []  # the rest of a cut line: still this record
    [out] = joins.feed(block(["2024-05-01 next"], first.end_offset + 9))
    assert out.records == [b"2024-05-01 start\n xx"]
    assert out.end_offset == first.end_offset + 9


def test_a_bad_start_pattern_is_named() -> None:
    with pytest.raises(MultilineError, match=r"--multiline-start: RE2 does not accept '\(\?<'"):
        Multiline.compile("(?<", 1000)


# ── the real command ──


def test_stdin_stack_traces_forward_as_one_record_each_parsed_by_the_format(upstream: RecordingUpstream) -> None:
    text = "\n".join([*TRACE, NEXT, *TRACE]) + "\n"
    result = run_cli(["-f", "regex", "--multiline-start", START, "--forward-url", f"{upstream.url}/v1/logs"],
                     stdin=text.encode())
    assert result.returncode == 0, result.stderr.decode()
    got = records(upstream)
    assert [r.body.string_value for r in got] == ["\n".join(["payment failed", *TRACE[1:]]), "next request",
                                                  "\n".join(["payment failed", *TRACE[1:]])]
    assert [r.severity_text for r in got] == ["ERROR", "INFO", "ERROR"]


def test_pretty_printed_json_records_are_parsed_whole(upstream: RecordingUpstream) -> None:
    docs = [{"level": "warn", "msg": "slow", "took_ms": 900}, {"level": "info", "msg": "ok"}]
    text = "".join(json.dumps(doc, indent=2) + "\n" for doc in docs)
    result = run_cli(["-f", "json", "--multiline-start", r"^\{", "--forward-url", f"{upstream.url}/v1/logs"],
                     stdin=text.encode())
    assert result.returncode == 0, result.stderr.decode()
    assert [(r.body.string_value, r.severity_number) for r in records(upstream)] == [("slow", 13), ("ok", 9)]


def test_file_output_keeps_line_breaks_and_a_policy_sees_the_whole_record(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    policy = write_policy(tmp_path / "p.json", [drop_policy("npe", {"log_field": "body", "contains": "NullPointer"})])
    write_lines(src, [NEXT, *TRACE, NEXT])
    args = [str(src), "--read-from", "head", "-o", str(out), "-p", str(policy), "--multiline-start", START,
            "--multiline-timeout-ms", "100"]
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: lines_of(out) == [NEXT.encode(), NEXT.encode()]), tailer.stderr()
        write_lines(src, ["2024-05-01 12:00:02.000 INFO [,] --- multi", "  line"])
        assert wait_until(lambda: len(lines_of(out)) == 4), tailer.stderr()  # by the timeout: no next record
        tailer.stop()
    assert lines_of(out)[2:] == [b"2024-05-01 12:00:02.000 INFO [,] --- multi", b"  line"]


def test_a_record_pending_at_sigterm_is_read_again_whole_after_the_restart(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, [NEXT, *TRACE[:2]])
    args = [str(src), "--read-from", "checkpoint", "-o", str(out), "--multiline-start", START,
            "--multiline-timeout-ms", "60000"]
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: lines_of(out) == [NEXT.encode()]), tailer.stderr()
        time.sleep(0.2)  # the checkpoint interval is 50 ms: the position before the pending trace is saved
        tailer.stop()
    write_lines(src, TRACE[2:])
    with Tailer(tmp_path, args) as tailer:
        write_lines(src, [NEXT])
        assert wait_until(lambda: len(lines_of(out)) == 5), tailer.stderr()
        tailer.stop()
    assert lines_of(out) == [NEXT.encode(), *(line.encode() for line in TRACE)]


def test_multiline_options_come_from_the_environment_and_a_bad_pattern_exits_2(tmp_path: Path) -> None:
    env = clean_env(TERO_MULTILINE_START=START, TERO_MULTILINE_TIMEOUT_MS="100")
    result = run_cli([], stdin="\n".join([*TRACE, NEXT]).encode() + b"\n", env=env)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [*TRACE, NEXT]
    config = tmp_path / "tail.json"
    config.write_text(json.dumps({"multiline_start": "(?<"}))
    result = run_cli(["-c", str(config)])
    assert result.returncode == 2
    assert re.fullmatch(r"edge-tail: --multiline-start: RE2 does not accept '\(\?<': .*\n", result.stderr.decode())


def test_a_record_pending_when_its_file_is_rotated_or_truncated_is_delivered(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    args = [str(src), "--read-from", "head", "-o", str(out), "--multiline-start", START,
            "--multiline-timeout-ms", "60000"]
    write_lines(src, TRACE)
    with Tailer(tmp_path, args) as tailer:
        tailer.wait_tailing(src)
        src.rename(tmp_path / "app.log.1")  # rotated: drained, then abandoned with the trace pending
        write_lines(src, ["2024-05-01 12:00:05.000 INFO [,] --- after rotation", "  continued"])
        assert wait_until(lambda: len(lines_of(out)) == 4), tailer.stderr()
        with open(src, "r+b") as f:  # copytruncate: the pending record was read whole before the cut
            f.truncate(0)
        write_lines(src, [NEXT])
        assert wait_until(lambda: len(lines_of(out)) == 6), tailer.stderr()
        tailer.stop()
    assert lines_of(out) == [*(line.encode() for line in TRACE), b"2024-05-01 12:00:05.000 INFO [,] --- after rotation",
                             b"  continued"]
