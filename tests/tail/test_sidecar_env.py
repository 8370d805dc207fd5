"""The sidecar collector's manifests keep working: its environment variables configure edge-tail; flags win."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from edge.tail.settings import from_command_line
from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import Tailer, clean_env, run_cli, wait_until, write_lines
from tests.tail.test_parsed_records import attributes, records

TRACE = "0af7651916cd43dd8448eb211c80319c"


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def test_collector_variables_drive_a_real_tailer(tmp_path: Path, upstream: RecordingUpstream) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    write_lines(one, [json.dumps({"level": "error", "msg": "a", "trace_id": TRACE}), "ERROR: b"])
    write_lines(two, ["level=info msg=c"])
    env = clean_env(GATEWAY_URL=upstream.url, LOG_PATHS=f"{one}, {two}", BATCH_SIZE="2",
                    FLUSH_INTERVAL_SECONDS="0.05", PARSE_STRUCTURED_LOGS="true", ENABLE_TRACE_CORRELATION="false",
                    POD_NAME="web-1")
    with Tailer(tmp_path, ["--read-from", "head"], env=env) as tailer:
        assert wait_until(lambda: len(records(upstream)) == 3), tailer.stderr()
        tailer.stop()
    assert {r.path for r in upstream.received()} == {"/v1/logs"}
    got = sorted(records(upstream), key=lambda r: r.body.string_value)
    assert [(r.body.string_value, r.severity_number) for r in got] == [("a", 17), ("b", 17), ("c", 9)]
    assert got[0].trace_id == b"" and attributes(got[0])["trace_id"] == TRACE  # correlation turned off
    requests = [ExportLogsServiceRequest.FromString(gzip.decompress(r.body)) for r in upstream.received()]
    assert max(len(m.resource_logs[0].scope_logs[0].log_records) for m in requests) <= 2  # BATCH_SIZE
    resource = {kv.key: kv.value.string_value for kv in requests[0].resource_logs[0].resource.attributes}
    assert resource == {"service.name": "unknown-service", "k8s.pod.name": "web-1", "k8s.namespace.name": "default"}


def test_flags_win_over_tero_variables_over_collector_variables() -> None:
    env = {"GATEWAY_URL": "http://gateway:4318/custom/path", "BATCH_SIZE": "7", "HTTP_TIMEOUT_SECONDS": "9",
           "MAX_RETRIES": "0", "RETRY_BACKOFF_MS": "250", "MAX_BUFFER_SIZE": "100", "LOG_PATHS": "/a.log,/b.log",
           "FLUSH_INTERVAL_SECONDS": "2", "TERO_HTTP_TIMEOUT_S": "5"}
    settings = from_command_line(["--batch-lines", "3"], env)
    assert (settings.forward_url, settings.batch_lines, settings.http_timeout_s) == (
        "http://gateway:4318/custom/path", 3, 5)
    assert (settings.max_retries, settings.retry_backoff_ms, settings.max_buffer_records) == (0, 250, 100)
    assert (settings.paths, settings.batch_interval_ms, settings.format) == (("/a.log", "/b.log"), 2000, "raw")
    assert from_command_line(["/c.log"], env).paths == ("/c.log",)


def test_bad_collector_variable_is_named(tmp_path: Path) -> None:
    result = run_cli([], stdin=b"", env=clean_env(BATCH_SIZE="many"))
    assert result.returncode == 2
    assert result.stderr.decode() == "edge-tail: BATCH_SIZE: expected a positive integer, got 'many'\n"


def test_unknown_config_file_keys_are_warned_about(tmp_path: Path) -> None:
    config = tmp_path / "tail.json"
    config.write_text(json.dumps({"pol_ms": 5, "format": "json"}))
    result = run_cli(["-c", str(config)], stdin=b"{}\n")
    assert result.returncode == 0, result.stderr.decode()
    warnings = [json.loads(line)["msg"] for line in result.stderr.decode().splitlines() if '"warn"' in line]
    assert warnings == ["config key pol_ms: unknown, ignored"]
