"""edge-tail --forward-url: OTLP/HTTP log batches to a real server on loopback, through outages, losing nothing."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from tests.proxy_fixtures import Recorded, RecordingUpstream
from tests.tail.tail_helpers import Tailer, clean_env, drop_policy, run_cli, wait_until, write_lines, write_policy


@pytest.fixture
def upstream():
    server = RecordingUpstream().start()
    yield server
    server.stop()


def decode(request: Recorded) -> list[tuple[str, dict[str, str], dict[str, str]]]:
    """(body, record attributes, resource attributes) of every record of one OTLP request."""
    assert request.header("Content-Encoding") == "gzip"
    raw = gzip.decompress(request.body)
    out = []
    if request.header("Content-Type") == "application/json":
        for rl in json.loads(raw)["resourceLogs"]:
            resource = {kv["key"]: kv["value"]["stringValue"] for kv in rl["resource"]["attributes"]}
            for sl in rl["scopeLogs"]:
                for rec in sl["logRecords"]:
                    attrs = {kv["key"]: kv["value"]["stringValue"] for kv in rec["attributes"]}
                    out.append((rec["body"]["stringValue"], attrs, resource))
        return out
    assert request.header("Content-Type") == "application/x-protobuf"
    message = ExportLogsServiceRequest.FromString(raw)
    for rl in message.resource_logs:
        resource = {kv.key: kv.value.string_value for kv in rl.resource.attributes}
        for sl in rl.scope_logs:
            assert sl.scope.name == "edge-tail"
            for rec in sl.log_records:
                assert rec.observed_time_unix_nano > 0
                attrs = {kv.key: kv.value.string_value for kv in rec.attributes}
                out.append((rec.body.string_value, attrs, resource))
    return out


def bodies(server: RecordingUpstream) -> list[str]:
    return [body for request in server.received("/v1/logs") for body, _, _ in decode(request)]


def test_forward_protobuf_batches_with_resource_and_file_path(tmp_path: Path, upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    lines = [f"line {i} {'DEBUG' if i % 4 == 0 else 'INFO'}" for i in range(230)]
    write_lines(src, lines)
    policy = write_policy(tmp_path / "p.json", [drop_policy("debug", {"log_field": "body", "contains": "DEBUG"})])
    env = clean_env(POD_NAME="web-1", NAMESPACE="shop", SERVICE_NAME="checkout")
    args = [str(src), "--read-from", "head", "-p", str(policy), "--forward-url", f"{upstream.url}/v1/logs",
            "--batch-lines", "50", "--batch-interval-ms", "50", "--resource", "deployment.environment=test",
            "--resource", "service.name=override"]
    kept = [line for line in lines if "DEBUG" not in line]
    with Tailer(tmp_path, args, env=env) as tailer:
        assert wait_until(lambda: len(bodies(upstream)) == len(kept)), tailer.stderr()
        tailer.stop()
    records = [r for request in upstream.received("/v1/logs") for r in decode(request)]
    assert [body for body, _, _ in records] == kept
    assert {attrs[FILE_PATH] for _, attrs, _ in records} == {str(src)}
    assert records[0][2] == {"k8s.pod.name": "web-1", "k8s.namespace.name": "shop", "service.name": "override",
                             "deployment.environment": "test"}
    assert max(len(decode(r)) for r in upstream.received()) <= 50


FILE_PATH = "log.file.path"


def test_forward_json_from_stdin(upstream: RecordingUpstream) -> None:
    lines = [f'{{"message": "m{i}", "level": "{"debug" if i % 2 else "info"}"}}' for i in range(40)]
    result = run_cli(["-f", "json", "--forward-url", f"{upstream.url}/v1/logs", "--forward-format", "json",
                      "--batch-lines", "7"], stdin="\n".join(lines).encode() + b"\n")
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout == b""  # forwarding replaces the output
    assert bodies(upstream) == [f"m{i}" for i in range(40)]  # body = the message field
    assert len(upstream.received()) == 6


def test_outage_with_retry_after_then_down_then_back_loses_nothing(tmp_path: Path,
                                                                   upstream: RecordingUpstream) -> None:
    src = tmp_path / "app.log"
    first = [f"first {i}" for i in range(200)]
    write_lines(src, first)
    upstream.reset(status=503, headers={"Retry-After": "1"})
    port = upstream.port
    args = [str(src), "--read-from", "checkpoint", "--forward-url", f"{upstream.url}/v1/logs",
            "--batch-lines", "64", "--batch-interval-ms", "50"]
    tailer = Tailer(tmp_path, args).start()
    try:
        assert wait_until(lambda: len(upstream.received()) >= 2)  # refused, then retried after Retry-After
        assert "HTTP 503" in tailer.stderr() and "retrying in 1.00 s" in tailer.stderr()
        upstream.stop()  # now the target is down altogether
        during = [f"during {i}" for i in range(100)]
        write_lines(src, during)
        assert wait_until(lambda: "ClientConnectorError" in tailer.stderr() or "Connect" in tailer.stderr())
        back = RecordingUpstream()
        back.port, back.url = port, f"http://127.0.0.1:{port}"
        back.start()
        try:
            assert wait_until(lambda: set(bodies(back)) == set(first + during), 30), tailer.stderr()
            # a new outage; the tailer dies before the target recovers: nothing acknowledged is lost...
            back.reset(status=503, headers={"Retry-After": "1"})
            later = [f"later {i}" for i in range(50)]
            write_lines(src, later)
            assert wait_until(lambda: any("later 0" in b for r in back.received() for b, _, _ in decode(r)))
            tailer.kill()
            back.reset()  # healthy again
            restarted = Tailer(tmp_path, args).start()
            try:
                assert wait_until(lambda: set(later) <= set(bodies(back)), 30), restarted.stderr()
                restarted.stop()
            finally:
                restarted.kill()
            # ...and the unacknowledged lines are sent again, not the acknowledged ones
            assert set(bodies(back)) == set(later)
        finally:
            back.stop()
    finally:
        tailer.kill()
