"""Match keys of Tero Edge policy files that the schema lacked: log severity number, log scope
name and version, and the OpenTelemetry name of an unset span status.

They are read from JSON and YAML files, the file provider and the http sync loader, evaluated
on OTLP/JSON and OTLP/protobuf batches, and applied by the real proxy.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from edge.config import ProviderConfig
from edge.control.file_provider import FileProvider
from edge.control.http_provider import HttpProvider
from edge.formats.otlp.body import evaluate_body
from edge.policy.compiler import compile_policies
from edge.policy.fields import LOG_SCOPE_NAME, LOG_SCOPE_VERSION, LOG_SEVERITY_NUMBER
from edge.policy.loader import load_document, parse_document
from edge.proto.tero.policy.v1 import policy_pb2 as pb
from tests.engine_helpers import clean_engine
from tests.proxy_fixtures import RecordingUpstream, free_port
from tests.reliability.harness import EdgeProcess, PolicyServer, records_of
from tests.waiting import wait_for

POLICIES: list[dict[str, Any]] = [
    {"id": "drop-quiet-db", "log": {"keep": "none", "match": [
        {"log_field": "log_severity_number", "lt": 13},  # below WARN
        {"log_field": "scope_name", "starts_with": "com.acme."},
        {"log_field": "scope_version", "exact": "1.2"}]}},
    {"id": "drop-unset-spans", "trace": {"keep": {"percentage": 0}, "match": [{"span_status": "STATUS_CODE_UNSET"}]}},
]

YAML_POLICIES = """\
policies:
  - id: drop-quiet-db
    log:
      keep: none
      match:
        - log_field: LOG_FIELD_SEVERITY_NUMBER
          lt: 13
        - log_field: SCOPE_NAME
          starts_with: com.acme.
        - logField: scope_version
          exact: "1.2"
  - id: drop-unset-spans
    trace:
      keep: {percentage: 0}
      match:
        - span_status: unset
"""

LOGS = {"resourceLogs": [{"scopeLogs": [
    {"scope": {"name": "com.acme.db", "version": "1.2"}, "logRecords": [
        {"severityNumber": 9, "body": {"stringValue": "info"}},
        {"severityNumber": "SEVERITY_NUMBER_DEBUG", "body": {"stringValue": "debug"}},
        {"severityNumber": "SEVERITY_NUMBER_ERROR", "body": {"stringValue": "error"}},
        {"body": {"stringValue": "no severity"}}]},
    {"scope": {"name": "com.acme.db", "version": "1.3"}, "logRecords": [
        {"severityNumber": 9, "body": {"stringValue": "other version"}}]},
    {"scope": {"name": "org.other", "version": "1.2"}, "logRecords": [
        {"severityNumber": 9, "body": {"stringValue": "other scope"}}]}]}]}
LOGS_KEPT = ["error", "no severity", "other version", "other scope"]

TRACES = {"resourceSpans": [{"scopeSpans": [{"spans": [
    {"name": "no status", "traceId": "4bf92f3577b34da6a3ce929d0e0e4736"},
    {"name": "unset", "traceId": "4bf92f3577b34da6a3ce929d0e0e4737", "status": {"code": "STATUS_CODE_UNSET"}},
    {"name": "ok", "traceId": "4bf92f3577b34da6a3ce929d0e0e4738", "status": {"code": "STATUS_CODE_OK"}},
    {"name": "error", "traceId": "4bf92f3577b34da6a3ce929d0e0e4739", "status": {"code": 2}}]}]}]}
TRACES_KEPT = ["ok", "error"]


def _compiled_keys(policies: list[pb.Policy]) -> dict[str, list[Any]]:
    snapshot = compile_policies(policies)
    assert snapshot.errors() == {}
    return {plan.signal: [(c.field, c.operand) for c in plan.conditions]
            for plan in snapshot.plans.values() if plan.conditions}


EXPECTED_KEYS = {
    "log": [(LOG_SEVERITY_NUMBER, ("lt", 13)), (LOG_SCOPE_NAME, ("starts_with", "com.acme.")),
            (LOG_SCOPE_VERSION, ("exact", "1.2"))],
    "trace": [(("span_status",), 0)],
}


@pytest.mark.parametrize("text", [orjson.dumps({"policies": POLICIES}), YAML_POLICIES.encode()], ids=["json", "yaml"])
def test_policy_files_accept_the_keys(text: bytes):
    """JSON and YAML spellings (short, prefixed, full enum names, OTLP's UNSET) compile to the same keys."""
    loaded = load_document(parse_document(text))
    assert loaded.errors == []
    assert _compiled_keys(loaded.policies) == EXPECTED_KEYS


def test_unknown_span_status_lists_unset_among_the_choices():
    loaded = load_document(yaml.safe_load("policies: [{id: x, trace: {match: [{span_status: unsure}], "
                                          "keep: {percentage: 1}}}]"))
    assert loaded.errors == ["policy x: 'trace.match[0].span_status' has unknown value 'unsure'; "
                             "expected one of: ok, error, unset"]


@pytest.mark.parametrize("field", ["severity_number", "scope_name", "scope_version"])
def test_read_only_fields_cannot_be_transformed(field: str):
    """Matchers read them; a transform naming one is a compile error, not a silent no-op."""
    loaded = load_document({"policies": [{"id": "t", "log": {
        "match": [{"log_field": "body", "exists": True}],
        "transform": {"remove": [{"log_field": field}]}}}]})
    assert compile_policies(loaded.policies).errors() == {
        "t": [f"log: transform: remove[0]: log_field {field} can be matched but not transformed"]}


def _log_bodies(doc: dict) -> list[str]:
    return [r["body"]["stringValue"] for rl in doc["resourceLogs"] for sl in rl["scopeLogs"] for r in sl["logRecords"]]


def _span_names(doc: dict) -> list[str]:
    return [s["name"] for rs in doc["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]


@pytest.mark.parametrize("encoding", ["json", "protobuf"])
def test_batches_are_filtered_by_the_keys(encoding: str):
    """The OTLP/JSON and OTLP/protobuf views read severity number, scope name/version and unset status alike."""
    engine = clean_engine(POLICIES)
    for signal, doc, message, names, kept in (("log", LOGS, ExportLogsServiceRequest, _log_bodies, LOGS_KEPT),
                                             ("trace", TRACES, ExportTraceServiceRequest, _span_names, TRACES_KEPT)):
        if encoding == "json":
            out = evaluate_body(engine, signal, orjson.dumps(doc), "application/json")
            assert names(orjson.loads(out)) == kept
        else:
            body = json_format.ParseDict(doc, message()).SerializeToString()
            out = message.FromString(evaluate_body(engine, signal, body, "application/x-protobuf"))
            assert names(json_format.MessageToDict(out)) == kept


class Delivered:
    """The on_update callback of a provider: the last policy list it delivered."""

    def __init__(self) -> None:
        self.policies: list[pb.Policy] | None = None
        self.errors: list[str] | None = None
        self._lock = threading.Lock()

    def __call__(self, provider_id: str, policies: list[pb.Policy]) -> None:
        with self._lock:
            self.policies = list(policies)

    def on_errors(self, provider_id: str, errors: list[str], deliver: bool = True) -> None:
        self.errors = errors


def test_file_provider_and_http_sync_loader_accept_the_keys(tmp_path: Path):
    """A YAML file through the file provider and a JSON sync answer through the http provider."""
    path = tmp_path / "policies.yaml"
    path.write_text(YAML_POLICIES)
    server = PolicyServer(free_port(), POLICIES, interval=60).start()
    from_file, from_server = Delivered(), Delivered()
    providers = [FileProvider(ProviderConfig("f", "file", path=str(path)), from_file, from_file.on_errors),
                 HttpProvider(ProviderConfig("h", "http", url=server.url), from_server,
                              on_errors=from_server.on_errors)]
    try:
        for provider in providers:
            provider.start()
        assert wait_for(lambda: from_file.policies is not None and from_server.policies is not None, 10, 0.05)
        assert (from_file.errors, from_server.errors) == ([], [])
        assert _compiled_keys(from_file.policies) == _compiled_keys(from_server.policies) == EXPECTED_KEYS
    finally:
        for provider in providers:
            provider.stop()
        server.stop()


def test_proxy_applies_the_keys_end_to_end(tmp_path: Path):
    """Through the real proxy: OTLP/JSON logs and OTLP/protobuf traces reach the upstream filtered."""
    upstream = RecordingUpstream().start()
    edge = EdgeProcess(tmp_path, upstream.url, POLICIES)
    try:
        edge.start()
        logs = edge.request("POST", "/v1/logs", orjson.dumps(LOGS), {"Content-Type": "application/json"})
        traces_body = json_format.ParseDict(TRACES, ExportTraceServiceRequest()).SerializeToString()
        traces = edge.request("POST", "/v1/traces", traces_body, {"Content-Type": "application/x-protobuf"})
        assert (logs.status, traces.status) == (200, 200)
        [sent_logs] = upstream.received("/v1/logs")
        [sent_traces] = upstream.received("/v1/traces")
        assert [r["body"]["stringValue"] for r in records_of("log", sent_logs.body, False)] \
            == LOGS_KEPT
        assert [s["name"] for s in records_of("trace", sent_traces.body, True)] \
            == TRACES_KEPT
    finally:
        edge.stop()
        upstream.stop()
