"""edge-tail on stdin: lines through policies, each format's field mapping, byte-for-byte output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.tail.tail_helpers import clean_env, drop_policy, run_cli, write_policy


def run_stdin(tmp_path: Path, policies: list[dict], stdin: bytes, *extra: str) -> bytes:
    policy = write_policy(tmp_path / "policies.json", policies)
    result = run_cli(["-p", str(policy), *extra], stdin=stdin)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    return result.stdout


def test_without_policy_stdin_is_copied_unchanged(tmp_path: Path) -> None:
    data = b"".join(b"line %d \xff\xfe raw bytes\n" % i for i in range(5000)) + b"no newline at the end"
    result = run_cli([], stdin=data)
    assert result.returncode == 0
    assert result.stdout == data + b"\n"  # the last line is completed when stdin ends


def test_dash_means_stdin_and_output_file(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    out.write_bytes(b"existing\n")
    result = run_cli(["-o", str(out), "-"], stdin=b"a\nb\n")
    assert result.returncode == 0
    assert out.read_bytes() == b"existing\na\nb\n"  # appended


def test_raw_regex_drop_keeps_other_lines_byte_for_byte(tmp_path: Path) -> None:
    lines = [b"2024 INFO started", b"2024 DEBUG noisy \xc3\xa9", b"\xff\xfe invalid utf-8 INFO", b"",
             b"2024 debug lowercase stays", b"2024 DEBUG again", b"trailing spaces   ", b"crlf INFO\r"]
    out = run_stdin(tmp_path, [drop_policy("drop-debug", {"log_field": "body", "regex": r"\bDEBUG\b"})],
                    b"\n".join(lines) + b"\n")
    assert out.split(b"\n")[:-1] == [line for line in lines if b"DEBUG" not in line]


def test_raw_policy_matches_across_many_blocks(tmp_path: Path) -> None:
    """Enough lines for many read blocks; partial lines at block boundaries are evaluated whole."""
    lines = [f"{i:06d} {'DROP' if i % 3 == 0 else 'keep'} {'x' * (i % 97)}" for i in range(60000)]
    out = run_stdin(tmp_path, [drop_policy("drop", {"log_field": "body", "contains": "DROP"})],
                    "\n".join(lines).encode() + b"\n", "--read-buf", "4096")
    assert out.decode().split("\n")[:-1] == [line for line in lines if "DROP" not in line]


def test_over_long_lines_are_truncated_then_evaluated(tmp_path: Path) -> None:
    """--max-line N keeps the first N bytes of a longer line (Tero's edge-tail does the same), whatever the reads."""
    lines = ["DROP short", "DROP " + "y" * 5000, "keep " + "k" * 3000, "kept", "keep " + "z" * 100, "last " + "w" * 999]
    for read_buf in ("512", "65536"):
        out = run_stdin(tmp_path, [drop_policy("drop", {"log_field": "body", "starts_with": "DROP"})],
                        "\n".join(lines).encode(), "--max-line", "1000", "--read-buf", read_buf)
        assert out.decode().split("\n")[:-1] == [lines[2][:1000], "kept", lines[4], lines[5][:1000]]


def test_max_line_one_byte(tmp_path: Path) -> None:
    out = run_stdin(tmp_path, [], b"abc\n\nxyz\n", "--max-line", "1")
    assert out == b"a\n\nx\n"


def test_json_format_maps_message_severity_and_attributes(tmp_path: Path) -> None:
    lines = [
        {"message": "user login", "level": "debug", "user": "alice"},
        {"body": "payment", "severity": "ERROR", "attributes": {"tenant": "acme"}},
        {"msg": "no body key", "severity_text": "INFO", "http": {"status": 500}},
        {"message": "kept", "level": "info", "tenant": "other"},
    ]
    raw = [json.dumps(line).encode() for line in lines] + [b"not json at all DEBUG", b"[1, 2]"]
    policies = [
        drop_policy("a-debug", {"log_field": "severity_text", "exact": "debug"}),
        drop_policy("b-tenant", {"log_attribute": "tenant", "exact": "acme"}),
        drop_policy("c-status", {"log_attribute": ["http", "status"], "gte": 500}),
        drop_policy("d-body", {"log_field": "body", "contains": "not json"}),
    ]
    out = run_stdin(tmp_path, policies, b"\n".join(raw) + b"\n", "-f", "json")
    assert out.split(b"\n")[:-1] == [raw[3], raw[5]]


def test_logfmt_format_maps_pairs_to_attributes(tmp_path: Path) -> None:
    lines = [
        'ts=1 level=debug msg="cache miss" key=a',
        'ts=2 level=info message="user said \\"hi\\"" user=bob',
        'ts=3 level=info message="payment ok" user=alice',
        "no pairs here at all",
        'ts=4 severity=warn message=disk',
    ]
    policies = [
        drop_policy("a-debug", {"log_field": "severity_text", "exact": "debug"}),
        drop_policy("b-user", {"log_attribute": "user", "exact": "bob"}),
        drop_policy("c-body", {"log_field": "body", "exact": "disk"}),
        drop_policy("d-line", {"log_field": "body", "regex": "^no pairs"}),
    ]
    out = run_stdin(tmp_path, policies, "\n".join(lines).encode() + b"\n", "-f", "logfmt")
    assert out.decode().split("\n")[:-1] == [lines[2]]


@pytest.mark.parametrize("fmt", ["raw", "json", "logfmt"])
def test_transforms_never_rewrite_output_lines(tmp_path: Path, fmt: str) -> None:
    line = '{"message": "mail bob@example.com", "level": "info"}' if fmt == "json" else \
        'level=info message="mail bob@example.com"'
    policies = [{"id": "redact", "name": "redact", "log": {
        "match": [{"log_field": "body", "contains": "@"}], "keep": "all",
        "transform": {"redact": [{"log_field": "body", "regex": "[a-z]+@[a-z.]+", "replacement": "<email>"}],
                      "add": [{"log_attribute": "redacted", "value": "yes"}]}}}]
    out = run_stdin(tmp_path, policies, line.encode() + b"\n", "-f", fmt)
    assert out == line.encode() + b"\n"


def test_sampling_and_keep_precedence_apply_to_lines(tmp_path: Path) -> None:
    lines = [f"req {i} GET /healthz" for i in range(4000)] + [f"req {i} GET /api" for i in range(100)]
    policies = [{"id": "sample", "name": "s", "log": {"match": [{"log_field": "body", "contains": "/healthz"}],
                                                      "keep": "10%"}}]
    out = run_stdin(tmp_path, policies, "\n".join(lines).encode() + b"\n").decode().split("\n")[:-1]
    health = [line for line in out if "/healthz" in line]
    assert [line for line in out if "/api" in line] == lines[4000:]
    assert 250 < len(health) < 550  # 10% of 4000, far outside any plausible random deviation


def test_resource_attributes_and_file_path_are_matchable(tmp_path: Path) -> None:
    policies = [drop_policy("by-pod", {"resource_attribute": "k8s.pod.name", "exact": "web-1"})]
    policy = write_policy(tmp_path / "p.json", policies)
    kept = run_cli(["-p", str(policy)], stdin=b"a\n", env=clean_env(POD_NAME="web-2"))
    dropped = run_cli(["-p", str(policy)], stdin=b"a\n", env=clean_env(POD_NAME="web-1"))
    by_flag = run_cli(["-p", str(policy), "--resource", "k8s.pod.name=web-1"], stdin=b"a\n",
                      env=clean_env(POD_NAME="web-2"))
    assert (kept.stdout, dropped.stdout, by_flag.stdout) == (b"a\n", b"", b"")


def test_inert_policy_is_reported_and_lines_pass(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.json", [drop_policy("bad", {"log_field": "body", "regex": "([bad"})])
    result = run_cli(["-p", str(policy)], stdin=b"([bad\nok\n")
    assert result.returncode == 0
    assert result.stdout == b"([bad\nok\n"
    assert b"bad" in result.stderr and b"Traceback" not in result.stderr
