"""Forwarded json/logfmt lines are OTLP records with their parsed time, severity, body, trace context and attributes."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from tests.proxy_fixtures import EdgeStack, RecordingUpstream
from tests.tail.tail_helpers import Tailer, clean_env, drop_policy, run_cli, wait_until, write_lines, write_policy

TRACE = "0af7651916cd43dd8448eb211c80319c"
SPAN = "b7ad6b7169203331"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def records(server: RecordingUpstream) -> list[LogRecord]:
    out = []
    for request in server.received("/v1/logs"):
        message = ExportLogsServiceRequest.FromString(gzip.decompress(request.body)
                                                      if request.header("Content-Encoding") == "gzip"
                                                      else request.body)
        out.extend(r for rl in message.resource_logs for sl in rl.scope_logs for r in sl.log_records)
    return out


def attributes(record: LogRecord) -> dict[str, object]:
    out: dict[str, object] = {}
    for kv in record.attributes:
        kind = kv.value.WhichOneof("value")
        if kind == "kvlist_value":
            out[kv.key] = {i.key: i.value.int_value for i in kv.value.kvlist_value.values}
        elif kind == "array_value":
            out[kv.key] = [i.string_value for i in kv.value.array_value.values]
        else:
            out[kv.key] = getattr(kv.value, kind)
    return out


def test_json_line_becomes_a_full_record(upstream: RecordingUpstream) -> None:
    line = {"timestamp": "2023-12-01T10:30:45.123Z", "level": "ERROR", "msg": "payment failed", "user": "bob",
            "retries": 3, "cart": {"items": 2}, "tags": ["a", "b"], "trace_id": TRACE, "span_id": SPAN}
    result = run_cli(["-f", "json", "--forward-url", f"{upstream.url}/v1/logs"],
                     stdin=json.dumps(line).encode() + b"\n")
    assert result.returncode == 0, result.stderr.decode()
    [record] = records(upstream)
    assert record.time_unix_nano == 1701426645123000000
    assert record.observed_time_unix_nano > 0
    assert (record.severity_text, record.severity_number) == ("ERROR", 17)
    assert record.body.string_value == "payment failed"
    assert (record.trace_id.hex(), record.span_id.hex()) == (TRACE, SPAN)
    assert attributes(record) == {"user": "bob", "retries": 3, "cart": {"items": 2}, "tags": ["a", "b"],
                                  "log.file.path": ""}


def test_logfmt_and_key_overrides(upstream: RecordingUpstream) -> None:
    lines = b'when=1701426645 sev=warning text="disk at 91%" trace=not-hex-at-all host=db1\n'
    result = run_cli(["-f", "logfmt", "--time-key", "when", "--level-key", "sev", "--message-key", "text",
                      "--trace-id-key", "trace", "--forward-url", f"{upstream.url}/v1/logs"], stdin=lines)
    assert result.returncode == 0, result.stderr.decode()
    [record] = records(upstream)
    assert record.time_unix_nano == 1701426645 * 10**9
    assert (record.severity_text, record.severity_number) == ("warning", 13)
    assert record.body.string_value == "disk at 91%"
    assert record.trace_id == b""  # not valid hex: stays an attribute as written
    assert attributes(record) == {"trace": "not-hex-at-all", "host": "db1", "log.file.path": ""}


def test_lines_that_do_not_parse_are_forwarded_whole(upstream: RecordingUpstream) -> None:
    result = run_cli(["-f", "json", "--forward-url", f"{upstream.url}/v1/logs"],
                     stdin=b'plain text\n[1, 2]\n{"level": "info"}\n')
    assert result.returncode == 0, result.stderr.decode()
    got = records(upstream)
    assert [r.body.string_value for r in got] == ["plain text", "[1, 2]", '{"level": "info"}']
    assert [r.severity_number for r in got] == [0, 0, 9]


def test_tail_policies_see_severity_and_trace_id(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.json", [
        drop_policy("debug", {"log_field": "severity_text", "exact": "DEBUG"}),
        drop_policy("traced", {"log_field": "trace_id", "exact": TRACE}),
    ])
    lines = [json.dumps({"lvl": "DEBUG", "message": "noise"}), json.dumps({"level": "INFO", "traceId": TRACE}),
             json.dumps({"severity": "INFO", "message": "kept"})]
    result = run_cli(["-f", "json", "-p", str(policy)], stdin="\n".join(lines).encode() + b"\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == [lines[2]]


def test_proxy_policies_apply_to_tailed_records(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """edge-tail → edge (drops DEBUG, redacts `password`) → upstream: the issue's case end to end."""
    policies = [
        drop_policy("drop-debug", {"log_field": "severity_text", "exact": "DEBUG"}),
        {"id": "redact-password", "name": "redact-password",
         "log": {"match": [{"log_attribute": ["password"], "exists": True}],
                 "transform": {"redact": [{"log_attribute": ["password"]}]}}},
    ]
    stack = EdgeStack(upstream.url, policies, workers=1).start()
    try:
        src = tmp_path / "app.log"
        write_lines(src, [json.dumps({"level": "DEBUG", "message": "cache miss"}),
                          json.dumps({"level": "INFO", "message": "login", "password": "hunter2"})])
        args = [str(src), "-f", "json", "--read-from", "head", "--forward-url",
                f"http://127.0.0.1:{stack.port}/v1/logs", "--batch-interval-ms", "50"]
        with Tailer(tmp_path, args, env=clean_env()) as tailer:
            assert wait_until(lambda: records(upstream)), tailer.stderr() + stack.log()
            tailer.stop()
    finally:
        stack.close()
    [record] = records(upstream)
    assert record.body.string_value == "login"
    assert record.severity_text == "INFO"
    assert attributes(record)["password"] == "[REDACTED]"
