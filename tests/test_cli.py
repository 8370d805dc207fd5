"""The `edge-policy` command line: eval (file and sync-server modes) and validate, run as a subprocess."""

from __future__ import annotations

import contextlib
import http.server
import socket
import subprocess
import sys
import threading
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format

from edge.policy.loader import load_document
from edge.proto.tero.policy.v1 import policy_pb2 as pb

_SCRIPT = Path(sys.executable).with_name("edge-policy")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.cli.policy"]

POLICIES = {
    "policies": [
        {
            "id": "drop-debug",
            "name": "drop debug",
            "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"},
        },
        {
            "id": "bad-regex",
            "name": "broken",
            "log": {"match": [{"log_field": "body", "regex": "([bad"}], "keep": "none"},
        },
        {
            "id": "all-api",
            "name": "tag api",
            "log": {
                "match": [{"resource_attribute": "service.name", "exact": "api"}],
                "keep": "all",
                "transform": {"add": [{"log_attribute": "tagged", "value": "yes"}]},
            },
        },
        {
            "id": "never",
            "name": "never matches",
            "log": {"match": [{"log_field": "body", "exact": "no such body"}], "keep": "none"},
        },
    ]
}


def _record(severity: str, body: str) -> dict:
    return {"severityText": severity, "body": {"stringValue": body}}


INPUT = {
    "resourceLogs": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "api"}}]},
            "scopeLogs": [
                {
                    "scope": {},
                    "logRecords": [
                        _record("DEBUG", "a"),
                        _record("INFO", "b"),
                        _record("DEBUG", "c"),
                        _record("WARN", "d"),
                    ],
                }
            ],
        }
    ]
}


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, timeout=60)


def run_eval(policies: object, input_file: object, output: object, *extra: str,
             signal: str = "log") -> subprocess.CompletedProcess:
    """`edge-policy eval --policies P --input I --output O --signal S [extra...]`."""
    return run("eval", "--policies", str(policies), "--input", str(input_file), "--output", str(output),
               "--signal", signal, *extra)


def assert_clean_failure(proc: subprocess.CompletedProcess) -> str:
    """Non-zero exit, a short message on stderr, and no Python traceback."""
    assert proc.returncode != 0
    err = proc.stderr.decode()
    assert "Traceback" not in err and "Traceback" not in proc.stdout.decode()
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    paths = {name: tmp_path / f"{name}.json" for name in ("policies", "input", "output", "stats")}
    paths["policies"].write_bytes(orjson.dumps(POLICIES))
    paths["valid"] = tmp_path / "valid.json"
    paths["valid"].write_bytes(orjson.dumps({"policies": [p for p in POLICIES["policies"] if p["id"] != "bad-regex"]}))
    paths["input"].write_bytes(orjson.dumps(INPUT))
    return paths


def _bodies(path: Path) -> list[str]:
    doc = orjson.loads(path.read_bytes())
    return [r["body"]["stringValue"] for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]


# ── eval --policies ────────────────────────────────────────────────────────


def test_eval_writes_output_and_stats(files):
    """eval --policies: filtered output plus a stats file in the documented format, sorted by id."""
    proc = run_eval(files["policies"], files["input"], files["output"], "--stats", str(files["stats"]),
                    "--allow-invalid")
    assert proc.returncode == 0, proc.stderr
    assert _bodies(files["output"]) == ["b", "d"]
    out = orjson.loads(files["output"].read_bytes())
    records = out["resourceLogs"][0]["scopeLogs"][0]["logRecords"]
    assert all(r["attributes"] == [{"key": "tagged", "value": {"stringValue": "yes"}}] for r in records)
    stats = orjson.loads(files["stats"].read_bytes())
    assert list(stats) == ["policies"]
    rows = stats["policies"]
    assert [r["policy_id"] for r in rows] == ["all-api", "bad-regex", "drop-debug"]  # sorted; "never" absent
    assert rows[0] == {"policy_id": "all-api", "hits": 2, "misses": 2}
    assert rows[2] == {"policy_id": "drop-debug", "hits": 2}  # misses omitted when 0, no errors key
    assert rows[1]["hits"] == 0 and "misses" not in rows[1]
    assert len(rows[1]["errors"]) == 1
    assert rows[1]["errors"][0].startswith('log: match[0]: invalid regex "([bad"')


def test_eval_stdin_stdout(files):
    """`-` reads the batch from stdin and writes the result to stdout."""
    proc = run(
        "eval",
        "--policies",
        str(files["policies"]),
        "--input",
        "-",
        "--output",
        "-",
        "--signal",
        "log",
        "--allow-invalid",
        stdin=orjson.dumps(INPUT),
    )
    assert proc.returncode == 0, proc.stderr
    doc = orjson.loads(proc.stdout)
    assert [r["body"]["stringValue"] for r in doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]] == ["b", "d"]


def test_eval_yaml_policy_file(files, tmp_path):
    """eval accepts a YAML policy file."""
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(
        "policies:\n  - id: d\n    log:\n      match:\n        - log_field: body\n"
        "          exact: c\n      keep: none\n"
    )
    proc = run_eval(str(policy_file), str(files["input"]), str(files["output"]))
    assert proc.returncode == 0, proc.stderr
    assert _bodies(files["output"]) == ["a", "b", "d"]


def test_eval_missing_input_file_fails_cleanly(files, tmp_path):
    """A missing input file: non-zero exit, one-line message naming it, no traceback."""
    missing = tmp_path / "nope.json"
    proc = run_eval(str(files["valid"]), str(missing), str(files["output"]))
    assert "nope.json" in assert_clean_failure(proc)


def test_eval_missing_or_bad_policy_file_fails_cleanly(files, tmp_path):
    """An unreadable or unparseable policy file: non-zero exit with a message, no traceback."""
    bad = tmp_path / "bad.json"
    bad.write_text("{: [")
    for policy_file in (tmp_path / "missing.json", bad):
        proc = run_eval(str(policy_file), str(files["input"]), str(files["output"]))
        assert policy_file.name in assert_clean_failure(proc)


def test_eval_undecodable_input_passes_through(files, tmp_path):
    """A body that is not OTLP/JSON is forwarded unchanged (fail-open) with a message, never a traceback."""
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"this is not json")
    proc = run_eval(str(files["valid"]), str(garbage), str(files["output"]))
    err = proc.stderr.decode()
    assert "Traceback" not in err
    assert "not an OTLP/JSON log request" in err
    assert files["output"].read_bytes() == b"this is not json"


def test_eval_unwritable_output_fails_cleanly(files, tmp_path):
    """An output path in a missing directory: non-zero exit, one-line message."""
    proc = run_eval(str(files["valid"]), str(files["input"]), str(tmp_path / "no" / "dir" / "out.json"))
    assert_clean_failure(proc)


# ── eval --server ──────────────────────────────────────────────────────────


class SyncServer:
    """A policy sync server on 127.0.0.1 that records every request and answers in JSON or protobuf."""

    def __init__(self, wire: str) -> None:
        self.wire = wire
        self.requests: list[pb.SyncRequest] = []
        self.content_types: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server API
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                server.content_types.append(self.headers.get("Content-Type", ""))
                request = pb.SyncRequest()
                if server.wire == "protobuf":
                    request.ParseFromString(raw)
                else:
                    json_format.Parse(raw, request)
                server.requests.append(request)
                first = len(server.requests) == 1
                if server.wire == "protobuf":
                    response = pb.SyncResponse(hash="h1", recommended_sync_interval_seconds=30)
                    if first:
                        response.policies.extend(load_document(POLICIES).policies)
                    body, ctype = response.SerializeToString(), "application/x-protobuf"
                else:
                    doc = {"hash": "h1", "policies": POLICIES["policies"] if first else []}
                    body, ctype = orjson.dumps(doc), "application/json"
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1/policy/sync"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> SyncServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.mark.parametrize("wire", ["json", "protobuf"])
def test_eval_server_mode_reports_statuses(files, wire):
    """--server: fetch policies by sync, evaluate, and report hits/misses/errors in a final sync."""
    with SyncServer(wire) as server:
        proc = run(
            "eval",
            "--server",
            server.url,
            "--sync-format",
            wire,
            "--input",
            str(files["input"]),
            "--output",
            str(files["output"]),
            "--signal",
            "log",
            "--allow-invalid",
        )
    assert proc.returncode == 0, proc.stderr
    assert _bodies(files["output"]) == ["b", "d"]
    assert len(server.requests) == 2
    expected_type = "application/x-protobuf" if wire == "protobuf" else "application/json"
    assert all(ct.startswith(expected_type) for ct in server.content_types)

    first, final = server.requests
    assert first.full_sync is True
    assert list(first.policy_statuses) == []
    assert pb.POLICY_STAGE_LOG_FILTER in first.client_metadata.supported_policy_stages
    assert final.last_successful_hash == "h1"
    assert final.full_sync is False

    statuses = {s.id: s for s in final.policy_statuses}
    assert set(statuses) == {"all-api", "bad-regex", "drop-debug"}
    assert (statuses["drop-debug"].match_hits, statuses["drop-debug"].match_misses) == (2, 0)
    assert (statuses["all-api"].match_hits, statuses["all-api"].match_misses) == (2, 2)
    assert statuses["all-api"].add.hits == 2
    assert statuses["bad-regex"].match_hits == 0
    assert len(statuses["bad-regex"].errors) == 1
    assert statuses["bad-regex"].errors[0].startswith('log: match[0]: invalid regex "([bad"')
    assert list(statuses["drop-debug"].errors) == []


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_eval_server_down_fails_cleanly(files):
    """--server with nothing listening: non-zero exit, a one-line message, no traceback."""
    url = f"http://127.0.0.1:{_free_port()}/v1/policy/sync"
    proc = run(
        "eval",
        "--server",
        url,
        "--input",
        str(files["input"]),
        "--output",
        str(files["output"]),
        "--signal",
        "log",
        "--timeout",
        "5",
    )
    line = assert_clean_failure(proc)
    assert "unreachable" in line or "refused" in line.lower()
    assert not files["output"].exists()


def test_eval_server_error_status_fails_cleanly(files):
    """A sync server answering HTTP 500 or an error_message makes eval fail with one line."""

    class Failing(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server API
            self.rfile.read(int(self.headers["Content-Length"]))
            if self.path.endswith("/500"):
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = orjson.dumps({"error_message": "policy store is down"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        for path, needle in (("/500", "500"), ("/sync", "policy store is down")):
            proc = run(
                "eval",
                "--server",
                base + path,
                "--input",
                str(files["input"]),
                "--output",
                str(files["output"]),
                "--signal",
                "log",
            )
            assert needle in assert_clean_failure(proc)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


# ── validate ───────────────────────────────────────────────────────────────


def test_validate_clean_file(tmp_path):
    """validate: exit 0 on a file whose policies all compile."""
    path = tmp_path / "ok.json"
    path.write_bytes(orjson.dumps({"policies": [p for p in POLICIES["policies"] if p["id"] != "bad-regex"]}))
    proc = run("validate", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "OK" in proc.stdout.decode()


def test_validate_reports_each_error(tmp_path):
    """validate: exit 1 and one line per error, naming the policy."""
    path = tmp_path / "bad.json"
    path.write_bytes(
        orjson.dumps(
            {
                "policies": [
                    *POLICIES["policies"],
                    {"id": "two-errors", "log": {"match": [{"log_attribute": [], "exact": "x"}], "keep": "1.5/s"}},
                    {"id": "undecodable", "log": {"match": "not-a-list"}},
                ]
            }
        )
    )
    proc = run("validate", str(path))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert "Traceback" not in out + proc.stderr.decode()
    lines = out.splitlines()
    assert any("bad-regex" in line and 'invalid regex "([bad"' in line for line in lines)
    assert any("two-errors" in line and "attribute has empty path" in line for line in lines)
    assert any("two-errors" in line and "1.5/s" in line for line in lines)
    assert any("undecodable" in line for line in lines)
    assert not any("drop-debug" in line for line in lines)


@pytest.mark.parametrize("content", [None, b"{: [", b"[1, 2", b'"a string"'])
def test_validate_unreadable_or_non_policy_file(tmp_path, content):
    """validate: a missing, unparseable or non-policy file gives exit 1 and a clear message naming it."""
    path = tmp_path / "policies.json"
    if content is not None:
        path.write_bytes(content)
    proc = run("validate", str(path))
    assert proc.returncode == 1
    text = proc.stdout.decode() + proc.stderr.decode()
    assert "Traceback" not in text
    assert "policies.json" in text
    assert "OK" not in text


def test_validate_several_files(tmp_path):
    """validate checks every file and fails if any has errors."""
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_bytes(orjson.dumps({"policies": POLICIES["policies"][:1]}))
    bad.write_bytes(orjson.dumps({"policies": POLICIES["policies"][1:2]}))
    proc = run("validate", str(good), str(bad))
    assert proc.returncode == 1
    out = proc.stdout.decode()
    assert "good.json" in out and "bad.json" in out


# ── eval: invalid policies, signal check, stdout and terminals, --help/--version ──


BAD_REGEX_ERROR = 'edge-policy: policy bad-regex: log: match[0]: invalid regex "([bad": missing ]: [bad'
INVALID_HINT = "edge-policy: invalid policies; fix them, or pass --allow-invalid to evaluate with the valid ones"


def test_eval_invalid_policies_exit_1_with_every_error(files, tmp_path):
    """Without --allow-invalid, every load and compile error is on stderr, exit 1, nothing is written."""
    doc = {"policies": [*POLICIES["policies"], {"id": "undecodable", "log": {"match": "not-a-list"}}]}
    files["policies"].write_bytes(orjson.dumps(doc))
    proc = run_eval(files["policies"], files["input"], files["output"])
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [
        "edge-policy: policy undecodable: 'log.match' must be a list, got a string",
        BAD_REGEX_ERROR,
        INVALID_HINT,
    ]
    assert not files["output"].exists()


def test_eval_allow_invalid_prints_errors_and_goes_on(files):
    """--allow-invalid: the same errors on stderr, then the valid policies are applied (exit 0)."""
    proc = run_eval(files["policies"], files["input"], files["output"], "--allow-invalid")
    assert proc.returncode == 0
    assert proc.stderr.decode().splitlines() == [BAD_REGEX_ERROR]
    assert _bodies(files["output"]) == ["b", "d"]


def test_eval_server_mode_invalid_policies_reported_then_exit_1(files):
    """--server without --allow-invalid: the errors still reach the server in the final sync; exit 1."""
    with SyncServer("json") as server:
        proc = run("eval", "--server", server.url, "--input", str(files["input"]), "--output",
                   str(files["output"]), "--signal", "log")
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == [BAD_REGEX_ERROR, INVALID_HINT]
    assert not files["output"].exists()
    final = server.requests[-1]
    assert len(server.requests) == 2
    assert [(s.id, list(s.errors)) for s in final.policy_statuses] == [
        ("bad-regex", ['log: match[0]: invalid regex "([bad": missing ]: [bad'])]


def test_eval_warns_when_the_input_is_another_signal(files, tmp_path):
    """An OTLP traces body evaluated with --signal logs: a warning on stderr, the body passes unchanged."""
    traces = tmp_path / "traces.json"
    traces.write_bytes(orjson.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [{"name": "GET /"}]}]}]}))
    proc = run_eval(files["valid"], traces, files["output"], signal="logs")
    assert proc.returncode == 0
    assert proc.stderr.decode().splitlines() == [
        "edge-policy: warning: the input is an OTLP trace batch but --signal is log; no log policy applies to it"]
    assert files["output"].read_bytes() == traces.read_bytes()


def test_eval_without_output_writes_stdout(files):
    """--output omitted: the filtered batch goes to stdout."""
    proc = run("eval", "--policies", str(files["valid"]), "--input", str(files["input"]), "--signal", "logs")
    assert proc.returncode == 0, proc.stderr
    doc = orjson.loads(proc.stdout)
    assert [r["body"]["stringValue"] for r in doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]] == ["b", "d"]


def _protobuf_input(tmp_path: Path) -> Path:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    path = tmp_path / "input.pb"
    path.write_bytes(json_format.ParseDict(INPUT, ExportLogsServiceRequest()).SerializeToString())
    return path


def _run_on_terminal(*args: str) -> tuple[int, str, bytes]:
    """Run edge-policy with stdout on a real pseudo-terminal: (exit status, stderr, bytes the terminal got)."""
    import os
    import pty
    import tty

    master, slave = pty.openpty()
    tty.setraw(slave)  # the bytes arrive as written, no newline translation
    try:
        proc = subprocess.Popen([*COMMAND, *args], stdout=slave, stderr=subprocess.PIPE)
        os.close(slave)
        received = bytearray()
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            received += chunk
        stderr = proc.stderr.read().decode()
        return proc.wait(timeout=60), stderr, bytes(received)
    finally:
        os.close(master)


def test_eval_refuses_guessed_protobuf_to_a_terminal(files, tmp_path):
    """Protobuf bound for a terminal needs an explicit --format: clear message, exit 2."""
    pb_input = _protobuf_input(tmp_path)
    code, stderr, received = _run_on_terminal("eval", "--policies", str(files["valid"]), "--input", str(pb_input),
                                              "--signal", "logs")
    assert code == 2
    assert stderr.splitlines() == ["edge-policy: refusing to write protobuf to a terminal; use --output FILE, "
                                   "redirect stdout, or pass --format protobuf"]
    assert received == b""


def test_eval_explicit_protobuf_format_writes_to_a_terminal(files, tmp_path):
    """With --format protobuf the user asked for it: the filtered protobuf batch is written to the terminal."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    pb_input = _protobuf_input(tmp_path)
    code, stderr, received = _run_on_terminal("eval", "--policies", str(files["valid"]), "--input", str(pb_input),
                                              "--signal", "logs", "--format", "protobuf")
    assert (code, stderr) == (0, "")
    request = ExportLogsServiceRequest.FromString(received)
    assert [r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records] == ["b", "d"]


def test_eval_guesses_protobuf_input_when_redirected(files, tmp_path):
    """--format omitted and stdout not a terminal: a protobuf input is evaluated as protobuf."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

    proc = run("eval", "--policies", str(files["valid"]), "--input", str(_protobuf_input(tmp_path)),
               "--signal", "logs")
    assert proc.returncode == 0, proc.stderr
    request = ExportLogsServiceRequest.FromString(proc.stdout)
    assert [r.body.string_value for r in request.resource_logs[0].scope_logs[0].log_records] == ["b", "d"]


def test_version_and_help():
    """--version names the release; --help is for users: what it does and examples, no internals."""
    from edge import __version__

    version = run("--version")
    assert (version.returncode, version.stdout.decode()) == (0, f"edge-policy {__version__}\n")
    for args in (["--help"], ["eval", "--help"]):
        proc = run(*args)
        text = proc.stdout.decode()
        assert proc.returncode == 0
        assert "examples:\n  edge-policy validate policies.yaml\n" in text
        assert "conformance" not in text and "`" not in text
    assert "--allow-invalid" in run("eval", "--help").stdout.decode()
