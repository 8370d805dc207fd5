"""The com.usetero/s3-dump extension: records a policy selects reach an S3-compatible bucket as NDJSON.

A real S3-compatible server (moto's, as a subprocess on loopback) receives the objects;
the real `edge` command runs with an s3_dump config and a policy whose extension dumps
the records it drops. An unreachable store (closed port, and a blackhole that accepts
connections and never answers) must neither slow nor fail requests, and the bounded
backlog must count what it gives up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from edge import config as cfg
from edge.engine.extensions import ExtensionRegistry
from edge.extensions.batching import Batch, Batcher
from edge.extensions.s3_dump import register_s3_dump
from edge.protocols.self_metrics import get_metrics
from tests.proxy_fixtures import RecordingUpstream, free_port, request
from tests.s3_fixtures import BIN, CREDENTIALS, MotoServer, create_bucket, ndjson, objects, wait_objects
from tests.waiting import wait_for

DUMP = "com.usetero/s3-dump"


# ── the S3-compatible server ──


@pytest.fixture(scope="module")
def s3_url() -> Iterator[str]:
    server = MotoServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def bucket(s3_url: str) -> str:
    return create_bucket(s3_url)


# ── the proxy ──


class Edge:
    """The real `edge` command with one worker, a policy file and an s3_dump section."""

    def __init__(self, tmp: Path, upstream: str, policies: list[dict], s3_dump: dict, log_level: str = "info") -> None:
        self.port = free_port()
        (tmp / "policies.json").write_text(json.dumps({"policies": policies}))
        config = {"listen_port": self.port, "grpc": {"enabled": False}, "workers": 1, "upstream_url": upstream,
                  "log_level": log_level,
                  "policy_providers": [{"id": "file", "type": "file", "path": str(tmp / "policies.json")}],
                  "s3_dump": s3_dump}
        (tmp / "config.json").write_text(json.dumps(config))
        self.log_path = tmp / "edge.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen([str(BIN / "edge"), str(tmp / "config.json")], stdout=log,
                                         stderr=subprocess.STDOUT, env={**os.environ, **CREDENTIALS})
        assert wait_for(lambda: self._loaded(len(policies)), 30, 0.1), "edge did not load its policies:\n" + self.log()

    def _loaded(self, count: int) -> bool:
        assert self.proc.poll() is None, self.log()
        try:
            return len(json.loads(request(self.port, "GET", "/_edge/policies", timeout=1).body)["policies"]) == count
        except OSError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def post_logs(self, body: bytes, content_type: str = "application/json") -> int:
        return request(self.port, "POST", "/v1/logs", body=body, headers={"Content-Type": content_type}).status

    def metric(self, name: str, **labels: str) -> float:
        text = request(self.port, "GET", "/_edge/metrics").body.decode()
        return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def dump_policy(pid: str, severity: str, target: str | None = None, mode: str = "dropped") -> dict:
    extension: dict[str, Any] = {"type": DUMP, "mode": mode}
    if target is not None:
        extension["config"] = {"target": {"kind": "s3", "name": target}}
    return {"id": pid, "log": {"match": [{"log_field": "severity_text", "exact": severity}], "keep": "none"},
            "extensions": [extension]}


def log_record(severity: str, body: str, **attributes: str) -> dict[str, Any]:
    return {"timeUnixNano": "1700000000000000000", "severityText": severity, "body": {"stringValue": body},
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attributes.items()]}


def logs_doc(records: list[dict[str, Any]], service: str = "checkout") -> dict[str, Any]:
    return {"resourceLogs": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                              "scopeLogs": [{"scope": {"name": "app"}, "logRecords": records}]}]}


def forwarded_bodies(upstream: RecordingUpstream) -> list[str]:
    return [r["body"]["stringValue"] for req in upstream.received("/v1/logs")
            if req.header("content-type") == "application/json"
            for rl in json.loads(req.body).get("resourceLogs", []) for sl in rl["scopeLogs"]
            for r in sl["logRecords"]]


# ── end to end ──


def test_dropped_records_reach_the_bucket_as_ndjson(tmp_path: Path, s3_url: str, bucket: str,
                                                    upstream: RecordingUpstream) -> None:
    """Exactly the dropped records, with signal, policy id, resource and scope, one JSON object per line."""
    edge = Edge(tmp_path, upstream.url, [dump_policy("archive-debug", "DEBUG")],
                {"enabled": True, "flush_interval_ms": 200,
                 "targets": [{"name": "archive", "endpoint": s3_url, "region": "us-east-1", "bucket": bucket,
                              "prefix": "/edge/dumps/"}]}, log_level="debug")
    try:
        dropped = [log_record("DEBUG", f"debug-{i}", request_id=str(i)) for i in range(5)]
        kept = [log_record("INFO", f"info-{i}") for i in range(3)]
        status = edge.post_logs(json.dumps(logs_doc([dropped[0], kept[0], dropped[1], dropped[2], kept[1]])).encode())
        assert status == 200
        proto = ExportLogsServiceRequest()
        json_format.ParseDict(logs_doc([kept[2], dropped[3], dropped[4]], service="billing"), proto)
        status = edge.post_logs(proto.SerializeToString(), "application/x-protobuf")
        assert status == 200

        wait_for(lambda: len(ndjson(objects(s3_url, bucket))) >= 5, 20, 0.1)
        lines = ndjson(found := objects(s3_url, bucket))
        assert sorted(line["record"]["body"]["stringValue"] for line in lines) == [f"debug-{i}" for i in range(5)]
        assert {(line["signal"], line["policy_id"]) for line in lines} == {("log", "archive-debug")}
        by_body = {line["record"]["body"]["stringValue"]: line for line in lines}
        for i in range(3):  # JSON in: the record is exactly what was posted
            assert by_body[f"debug-{i}"]["record"] == dropped[i]
            assert by_body[f"debug-{i}"]["resource"]["attributes"][0]["value"]["stringValue"] == "checkout"
            assert by_body[f"debug-{i}"]["scope"] == {"name": "app"}
        for i in (3, 4):  # protobuf in: same fields, OTLP/JSON spelling
            assert by_body[f"debug-{i}"]["record"]["attributes"] == dropped[i]["attributes"]
            assert by_body[f"debug-{i}"]["resource"]["attributes"][0]["value"]["stringValue"] == "billing"
        assert sorted(forwarded_bodies(upstream)) == ["info-0", "info-1"]
        forwarded = ExportLogsServiceRequest.FromString(upstream.received("/v1/logs")[-1].body)
        assert [r.body.string_value for r in forwarded.resource_logs[0].scope_logs[0].log_records] == ["info-2"]

        today = time.strftime("%Y/%m/%d/", time.gmtime())
        for key in found:
            assert key.startswith(f"edge/dumps/log/{today}") and key.endswith(".ndjson"), key
            assert key.rsplit("/", 1)[1].startswith(f"{_worker_pid(edge)}-")
        assert edge.metric("edge_s3_dump_uploaded_records_total") == 5
    finally:
        assert edge.stop() == 0
    log = edge.log()
    assert "s3-dump: uploaded" in log  # debug logging was on, yet no credential appears
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in log and CREDENTIALS["AWS_ACCESS_KEY_ID"] not in log


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _worker_pid(edge: Edge) -> int:
    """The gunicorn worker's pid: the only grandchild of the edge process."""
    grandchildren = [g for child in _children(edge.proc.pid) for g in _children(child)]
    assert len(grandchildren) == 1, grandchildren
    return grandchildren[0]


def test_batches_split_by_record_count_and_the_rest_is_flushed_at_shutdown(
        tmp_path: Path, s3_url: str, bucket: str, upstream: RecordingUpstream) -> None:
    """max_batch_records seals full batches at once; SIGTERM uploads the open one before the worker exits."""
    edge = Edge(tmp_path, upstream.url, [dump_policy("archive-debug", "DEBUG", target="second")],
                {"enabled": True, "flush_interval_ms": 600_000, "max_batch_records": 10,
                 "targets": [{"name": "first", "endpoint": "http://127.0.0.1:9", "bucket": "never-used"},
                             {"name": "second", "endpoint": s3_url, "bucket": bucket}]})
    try:
        records = [log_record("DEBUG", f"d{i:02d}") for i in range(25)]
        assert edge.post_logs(json.dumps(logs_doc(records[:12])).encode()) == 200
        assert edge.post_logs(json.dumps(logs_doc(records[12:])).encode()) == 200
        wait_objects(s3_url, bucket, 2, timeout=20)
        # the last 5 wait for the 10-minute interval: a bounded look for an early third object
        assert not wait_for(lambda: len(objects(s3_url, bucket)) > 2, 0.3, 0.1), "the open batch was sent early"
        found = objects(s3_url, bucket)
        assert sorted(len(ndjson({k: v})) for k, v in found.items()) == [10, 10]
    finally:
        assert edge.stop() == 0
    found = objects(s3_url, bucket)
    assert sorted(len(ndjson({k: v})) for k, v in found.items()) == [5, 10, 10]
    assert sorted(line["record"]["body"]["stringValue"] for line in ndjson(found)) == [f"d{i:02d}" for i in range(25)]
    assert all(key.startswith("log/") for key in found)  # no prefix configured: none in the key


class Blackhole:
    """Accepts TCP connections and never answers (an S3 endpoint that hangs)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        self.accepted = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            self.accepted.set()

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


@pytest.mark.parametrize("store", ["blackhole", "closed-port"])
def test_unreachable_store_neither_slows_nor_fails_requests(tmp_path: Path, upstream: RecordingUpstream,
                                                           store: str) -> None:
    """Every request answers 200 while uploads hang or fail; the bounded backlog counts what it drops.

    That the requests did not wait for the store shows in the backlog: had each waited for its
    upload, the queue would never fill and nothing would be dropped. How fast they answer is
    measured by benchmarks/latency.py."""
    hole = Blackhole()
    endpoint = f"http://127.0.0.1:{hole.port if store == 'blackhole' else free_port()}"
    edge = Edge(tmp_path, upstream.url, [dump_policy("archive-debug", "DEBUG")],
                {"enabled": True, "flush_interval_ms": 50, "max_batch_records": 1, "max_queued_batches": 2,
                 "targets": [{"name": "t", "endpoint": endpoint, "bucket": "b"}]})
    try:
        requests = 60
        for i in range(requests):
            status = edge.post_logs(json.dumps(logs_doc([log_record("DEBUG", f"d{i}"),
                                                         log_record("INFO", f"i{i}")])).encode())
            assert status == 200
            if i == 0 and store == "blackhole":  # from now on one upload hangs for the 5 s read timeout
                assert hole.accepted.wait(20)
        assert sorted(forwarded_bodies(upstream)) == sorted(f"i{i}" for i in range(requests))
        dropped = edge.metric("edge_s3_dump_dropped_records_total", reason="backlog_full")
        # one batch per record; two wait in the queue, one may be in an upload (hanging in the blackhole, or
        # between refused attempts): every other one was dropped, the oldest first
        assert requests - 3 <= dropped <= requests - 2
        if store == "closed-port":  # the upload thread imports boto3 first: its first attempt may still come
            assert wait_for(lambda: edge.metric("edge_s3_dump_upload_failures_total") >= 1, 20, 0.1), (
                "no upload was attempted")
        assert edge.metric("edge_s3_dump_uploaded_records_total") == 0
    finally:
        assert edge.stop() == 0
        hole.close()
    assert "s3-dump: dropped " in edge.log()
    if store == "blackhole":  # the worker gave up on the hanging store at shutdown (it was not killed waiting)
        assert "the last one because of shutdown" in edge.log(), edge.log()


# ── the pieces ──


def test_handler_in_process_names_targets_counts_and_flushes(s3_url: str, bucket: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler with the real uploader and metrics: named, default and unknown targets; flush; after stop."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    other = create_bucket(s3_url)
    config = cfg.S3DumpConfig(enabled=True, flush_interval_ms=600_000, targets=(
        cfg.S3Target("first", bucket, endpoint=s3_url), cfg.S3Target("second", other, endpoint=s3_url)))
    registry = ExtensionRegistry()
    dump = register_s3_dump(config, registry, get_metrics())
    assert dump is not None and registry.handler(DUMP) is dump
    assert register_s3_dump(cfg.S3DumpConfig(), ExtensionRegistry(), get_metrics()) is None

    def dropped(reason: str) -> float:
        return REGISTRY.get_sample_value("edge_s3_dump_dropped_records_total", {"reason": reason}) or 0.0

    unknown, shutdown = dropped("unknown_target"), dropped("shutdown")
    dump.start()
    dump.submit("p1", "log", b"", [{"record": {"n": 0}}])  # no target named: the first one
    dump.submit("p2", "metric", b'{"target": {"kind": "s3", "name": "second"}}', [{"record": {"n": 1}}])
    dump.submit("p3", "trace", b'{"target": "second"}', [{"record": {"n": 2}}, {"record": {"n": 3}}])
    dump.submit("p4", "log", b'{"target": "third"}', [{"record": {"n": 4}}] * 3)
    dump.submit("p5", "log", b"\x0a\x03not json", [{"record": {"n": 5}}])  # unreadable config: the first target
    assert dump.flush(10)
    first, second = ndjson(objects(s3_url, bucket)), ndjson(objects(s3_url, other))
    assert [(line["policy_id"], line["signal"], line["record"]["n"]) for line in first] == [("p1", "log", 0),
                                                                                            ("p5", "log", 5)]
    assert sorted((line["policy_id"], line["signal"], line["record"]["n"]) for line in second) == [
        ("p2", "metric", 1), ("p3", "trace", 2), ("p3", "trace", 3)]
    assert dropped("unknown_target") - unknown == 3
    dump.stop(1.0)
    dump.submit("p1", "log", b"", [{"record": {"n": 6}}])
    assert dropped("shutdown") - shutdown == 1


def test_batcher_seals_by_bytes_and_records_and_bounds_the_queue() -> None:
    dropped: list[tuple[int, str]] = []
    batcher = Batcher(max_bytes=100, max_records=4, max_queued=3, on_drop=lambda b, r: dropped.append((b.records, r)))
    line = b"x" * 29 + b"\n"  # 30 bytes: three fit in 100 bytes, a fourth does not
    batcher.add("t", "log", [line] * 7, now=0.0)
    assert [b.records for b in batcher.ready] == [3, 3]
    assert batcher.open[("t", "log")].records == 1
    batcher.add("t", "log", [b"y\n"] * 5, now=1.0)  # 30 + 3*2 fills the count of 4 first
    assert [b.records for b in batcher.ready] == [3, 3, 4]
    assert batcher.next_deadline(5.0) == 1.0 + 5.0  # the open batch was opened at 1.0
    batcher.seal_expired(now=5.0, interval=5.0)
    assert batcher.open.get(("t", "log")) is not None
    batcher.seal_expired(now=6.0, interval=5.0)
    assert [b.records for b in batcher.ready] == [3, 4, 2] and dropped == [(3, "backlog_full")]
    assert batcher.next_deadline(5.0) is None


def test_batcher_keeps_signals_apart_and_sends_an_oversized_record_alone() -> None:
    batcher = Batcher(max_bytes=10, max_records=100, max_queued=10, on_drop=lambda b, r: None)
    batcher.add("t", "log", [b"a\n", b"b" * 50 + b"\n", b"c\n"], now=0.0)
    batcher.add("t", "metric", [b"m\n"], now=0.0)
    assert [(b.signal, b.records) for b in batcher.ready] == [("log", 1), ("log", 1)]
    assert sorted(batcher.open) == [("t", "log"), ("t", "metric")]
    left = batcher.take_all()
    assert [(b.signal, b.body()) for b in left] == [("log", b"a\n"), ("log", b"b" * 50 + b"\n"), ("log", b"c\n"),
                                                   ("metric", b"m\n")]


def test_requeued_batch_is_first_and_first_dropped() -> None:
    dropped: list[Batch] = []
    batcher = Batcher(max_bytes=1000, max_records=1, max_queued=2, on_drop=lambda b, r: dropped.append(b))
    batcher.add("t", "log", [b"1\n", b"2\n"], now=0.0)
    failed = batcher.pop()
    assert failed is not None and failed.body() == b"1\n"
    batcher.add("t", "log", [b"3\n"], now=0.0)
    batcher.requeue(failed)
    assert [b.body() for b in dropped] == [b"1\n"] and [b.body() for b in batcher.ready] == [b"2\n", b"3\n"]


def test_config_defaults_env_overrides_and_round_trip() -> None:
    c = cfg.build({"s3_dump": {"enabled": True, "targets": [{"bucket": "b", "prefix": "/a/b/"}]}},
                  env={"TERO_S3_DUMP_FLUSH_INTERVAL_MS": "250", "TERO_S3_DUMP_MAX_QUEUED_BATCHES": "4"})
    assert c.s3_dump == cfg.S3DumpConfig(enabled=True, targets=(cfg.S3Target(name="b", bucket="b", prefix="a/b"),),
                                         flush_interval_ms=250, max_queued_batches=4)
    assert cfg.from_json(c.to_json()) == c
    assert cfg.build({}, env={}).s3_dump.enabled is False
    assert cfg.build({"s3_dump": {"colour": 1}}, env={}).warnings == ("config key s3_dump.colour: unknown, ignored",)


@pytest.mark.parametrize(("section", "fragment"), [
    ([], "s3_dump: expected an object"),
    ({"enabled": "sometimes"}, "s3_dump.enabled"),
    ({"enabled": True}, "s3_dump.targets: s3_dump is enabled but names no target"),
    ({"targets": {}}, "s3_dump.targets: expected a list"),
    ({"targets": ["b"]}, "s3_dump.targets[0]: expected an object"),
    ({"targets": [{"name": "x"}]}, "s3_dump.targets[0].bucket"),
    ({"targets": [{"bucket": "b", "endpoint": "s3.example.com"}]}, "s3_dump.targets[0].endpoint"),
    ({"targets": [{"bucket": "b"}, {"bucket": "b"}]}, "target names must be unique"),
    ({"flush_interval_ms": 0}, "s3_dump.flush_interval_ms"),
    ({"max_batch_bytes": -1}, "s3_dump.max_batch_bytes"),
    ({"max_batch_records": "many"}, "s3_dump.max_batch_records"),
])
def test_bad_s3_dump_config_is_one_line_naming_the_key(section: Any, fragment: str) -> None:
    with pytest.raises(cfg.ConfigError) as err:
        cfg.build({"s3_dump": section}, env={})
    assert fragment in str(err.value) and "\n" not in str(err.value)
