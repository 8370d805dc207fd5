"""edge-tail's command line: every bad argument is one line on stderr and exit 2; precedence of the sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge import __version__
from tests.tail.tail_helpers import clean_env, drop_policy, run_cli, write_policy


@pytest.fixture
def input_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.log"
    path.write_bytes(b"one\n")
    return path


BAD_FLAGS = [
    (["--bogus"], "unrecognized arguments"),
    (["--read-from", "middle"], "--read-from: expected one of head, tail, checkpoint"),
    (["-f", "xml"], "--format: expected one of raw, json, logfmt"),
    (["--io-engine", "kqueue"], "--io-engine: expected one of auto, inotify, poll"),
    (["--forward-format", "avro", "--forward-url", "http://127.0.0.1:9/v1/logs"], "--forward-format"),
    (["--poll-ms", "0"], "--poll-ms: must be a positive integer, got 0"),
    (["--max-line", "-5"], "--max-line: must be a positive integer, got -5"),
    (["--read-buf", "lots"], "--read-buf: expected a positive integer, got 'lots'"),
    (["--write-buf", "1.5"], "--write-buf: expected a positive integer"),
    (["--flush-lines", "0"], "--flush-lines: must be a positive integer"),
    (["--flush-interval-ms", "-1"], "--flush-interval-ms: must be a positive integer"),
    (["--glob-interval-ms", "0"], "--glob-interval-ms"),
    (["--rotate-wait-ms", "0"], "--rotate-wait-ms"),
    (["--removed-expire-ms", "0"], "--removed-expire-ms"),
    (["--checkpoint-interval-ms", "0"], "--checkpoint-interval-ms"),
    (["--checkpoint-sync-batch", "-2"], "--checkpoint-sync-batch"),
    (["--checkpoint-snapshot-interval-ms", "0"], "--checkpoint-snapshot-interval-ms"),
    (["--checkpoint-ttl-ms", "0"], "--checkpoint-ttl-ms"),
    (["--checkpoint-max-slots", "0"], "--checkpoint-max-slots"),
    (["--batch-lines", "0"], "--batch-lines"),
    (["--batch-interval-ms", "0"], "--batch-interval-ms"),
    (["--poll-ms"], "expected one argument"),
    (["--forward-url", "ftp://example.com/x"], "--forward-url: expected an http(s) URL"),
    (["--forward-url", "http://127.0.0.1:99999/v1/logs"], "--forward-url: bad port"),
    (["--resource", "novalue"], "--resource: expected key=value"),
    (["-o", "out.log", "--forward-url", "http://127.0.0.1:9/v1/logs"], "alternatives"),
]


@pytest.mark.parametrize(("args", "message"), BAD_FLAGS, ids=[" ".join(a) for a, _ in BAD_FLAGS])
def test_bad_flags_exit_2_with_one_clear_message(args: list[str], message: str, input_file: Path,
                                                 tmp_path: Path) -> None:
    result = run_cli([str(input_file), *args], cwd=tmp_path)
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert message in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / ".tero").exists()  # nothing was started


def _assert_usage_error(result, message: str) -> None:
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("edge-tail: ") and stderr.count("\n") == 1, stderr
    assert message in stderr


def test_stdin_dash_mixed_with_paths(input_file: Path) -> None:
    _assert_usage_error(run_cli(["-", str(input_file)]), "'-' (stdin) cannot be mixed with file paths")


def test_missing_input_with_exit_on_missing(tmp_path: Path) -> None:
    _assert_usage_error(run_cli([str(tmp_path / "missing.log"), "--exit-on-missing"]), "missing.log: no such file")


def test_directory_as_input(tmp_path: Path) -> None:
    _assert_usage_error(run_cli([str(tmp_path)]), "not a regular file")


def test_glob_in_missing_directory_with_exit_on_missing(tmp_path: Path) -> None:
    _assert_usage_error(run_cli([str(tmp_path / "nodir" / "*.log"), "--exit-on-missing"]), "no such directory")


def test_unwritable_output(input_file: Path, tmp_path: Path) -> None:
    _assert_usage_error(run_cli(["-o", str(tmp_path / "nodir" / "out.log"), str(input_file)]),
                        "cannot open output")
    _assert_usage_error(run_cli(["-o", str(tmp_path), str(input_file)]), "cannot open output")


def test_unwritable_output_in_stdin_mode(tmp_path: Path) -> None:
    _assert_usage_error(run_cli(["-o", str(tmp_path / "nodir" / "out.log")], stdin=b"x\n"), "cannot open output")


def test_unusable_state_dir(input_file: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    _assert_usage_error(run_cli(["-o", str(tmp_path / "o"), "--state-dir", str(blocker / "sub"), str(input_file)]),
                        "state dir")


def test_unreadable_policy_file(tmp_path: Path) -> None:
    _assert_usage_error(run_cli(["-p", str(tmp_path / "nope.json")], stdin=b"x\n"), "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json: [")
    _assert_usage_error(run_cli(["-p", str(bad)], stdin=b"x\n"), "bad.json")


def test_config_file_problems(tmp_path: Path) -> None:
    _assert_usage_error(run_cli(["-c", str(tmp_path / "none.json")], stdin=b""), "none.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    _assert_usage_error(run_cli(["-c", str(broken)], stdin=b""), "not valid JSON")
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    _assert_usage_error(run_cli(["-c", str(listed)], stdin=b""), "expected a JSON object")
    bad_value = tmp_path / "bad.json"
    bad_value.write_text(json.dumps({"poll_ms": 0}))
    _assert_usage_error(run_cli(["-c", str(bad_value)], stdin=b""), "config key poll_ms: must be a positive integer")
    bad_paths = tmp_path / "paths.json"
    bad_paths.write_text(json.dumps({"paths": [3]}))
    _assert_usage_error(run_cli(["-c", str(bad_paths)], stdin=b""), "config key paths")


def test_bad_environment_values() -> None:
    _assert_usage_error(run_cli([], stdin=b"", env=clean_env(TERO_MAX_LINE="0")),
                        "TERO_MAX_LINE: must be a positive integer")
    _assert_usage_error(run_cli([], stdin=b"", env=clean_env(TERO_READ_FROM="sideways")), "TERO_READ_FROM")
    _assert_usage_error(run_cli([], stdin=b"", env=clean_env(TERO_FORMAT="xml")), "TERO_FORMAT")


def test_help_exits_0() -> None:
    result = run_cli(["-h"])
    assert result.returncode == 0
    for flag in ("--read-from", "--io-engine", "--checkpoint-max-slots", "--state-dir", "--forward-url"):
        assert flag.encode() in result.stdout
    text = b" ".join(result.stdout.split())
    assert b"(default )" not in text  # options without a default say nothing about one
    assert b"(default tail)" in text


def test_version() -> None:
    result = run_cli(["--version"])
    assert (result.returncode, result.stdout) == (0, f"edge-tail {__version__}\n".encode())


def test_precedence_cli_over_env_over_file_over_defaults(tmp_path: Path) -> None:
    """`output` and `format` from each source: the highest-precedence source wins."""
    write_policy(tmp_path / "p.json", [drop_policy("drop-x", {"log_field": "body", "exact": "x"})])
    stdin = b'{"message": "x"}\nx\nplain\n'
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"output": str(tmp_path / "from-file"), "format": "json",
                                  "policy": str(tmp_path / "p.json")}))
    env = clean_env(TERO_OUTPUT=str(tmp_path / "from-env"))
    # file only: json format drops the JSON line whose message is "x" (and the raw "x" line: body = line)
    assert run_cli(["-c", str(config)], stdin=stdin).returncode == 0
    assert (tmp_path / "from-file").read_bytes() == b"plain\n"
    # env beats the file for output; the file still sets the format
    assert run_cli(["-c", str(config)], stdin=stdin, env=env).returncode == 0
    assert (tmp_path / "from-env").read_bytes() == b"plain\n"
    # the command line beats both, for output and for format (raw: the JSON line's body is the whole line)
    assert run_cli(["-c", str(config), "-o", str(tmp_path / "from-cli"), "-f", "raw"], stdin=stdin,
                   env=clean_env(TERO_OUTPUT=str(tmp_path / "from-env"), TERO_FORMAT="logfmt")).returncode == 0
    assert (tmp_path / "from-cli").read_bytes() == b'{"message": "x"}\nplain\n'
    # env beats the file for format too
    assert run_cli(["-c", str(config), "-o", str(tmp_path / "env-format")], stdin=stdin,
                   env=clean_env(TERO_FORMAT="raw")).returncode == 0
    assert (tmp_path / "env-format").read_bytes() == b'{"message": "x"}\nplain\n'
