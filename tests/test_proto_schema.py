"""Tests for the ``tero.policy.v1`` protobuf schema and its generated Python bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from opentelemetry.proto.common.v1 import common_pb2

from edge.proto import generate as gen
from edge.proto.tero.policy.v1 import policy_pb2 as pb

REGENERATE_HINT = (
    "generated protobuf code is stale: run `python -m edge.proto.generate` and commit the result"
)


# ---------------------------------------------------------------------------
# (a) committed bindings are up to date
# ---------------------------------------------------------------------------


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    fresh = gen.generate(tmp_path)
    committed = gen.expected_outputs(gen.PROTO_ROOT)
    assert [p.name for p in fresh] == ["policy_pb2.py", "policy_pb2.pyi",
                                       "agent_payload_pb2.py", "agent_payload_pb2.pyi"]
    for fresh_path, committed_path in zip(fresh, committed, strict=True):
        assert committed_path.is_file(), f"{committed_path} is missing; {REGENERATE_HINT}"
        assert fresh_path.read_bytes() == committed_path.read_bytes(), (
            f"{committed_path.name}: {REGENERATE_HINT}"
        )


def test_registered_file_name_and_package() -> None:
    assert pb.DESCRIPTOR.name == "tero/policy/v1/policy.proto"
    assert pb.DESCRIPTOR.package == "tero.policy.v1"
    assert [d.name for d in pb.DESCRIPTOR.dependencies] == ["opentelemetry/proto/common/v1/common.proto"]


# ---------------------------------------------------------------------------
# (b) wire contract: field numbers, oneofs, optional markers, enum values
# ---------------------------------------------------------------------------


def _field(message: type, name: str) -> FieldDescriptor:
    descriptor: Descriptor = message.DESCRIPTOR
    assert name in descriptor.fields_by_name, f"{descriptor.full_name} has no field {name!r}"
    return descriptor.fields_by_name[name]


def _real_oneof(field: FieldDescriptor) -> str | None:
    """Name of the (non-synthetic) oneof containing ``field``, if any."""
    oneof = field.containing_oneof
    if oneof is None or _is_proto3_optional(field):
        return None
    return oneof.name


def _is_proto3_optional(field: FieldDescriptor) -> bool:
    oneof = field.containing_oneof
    return oneof is not None and oneof.name == f"_{field.name}" and len(oneof.fields) == 1


FIELD_NUMBERS: list[tuple[type, str, int, str | None]] = [
    # message, field, number, real oneof
    (pb.AttributePath, "path", 1, None),
    (pb.Value, "bool_value", 1, "value"),
    (pb.Value, "string_value", 6, "value"),
    (pb.NumericValue, "double_value", 2, "value"),
    (pb.Policy, "id", 1, None),
    (pb.Policy, "created_at_unix_nano", 5, None),
    (pb.Policy, "labels", 7, None),
    (pb.Policy, "log", 10, "target"),
    (pb.Policy, "metric", 11, "target"),
    (pb.Policy, "trace", 12, "target"),
    (pb.Policy, "extensions", 20, None),
    (pb.LogTarget, "match", 1, None),
    (pb.LogTarget, "keep", 2, None),
    (pb.LogTarget, "sample_key", 4, None),
    (pb.LogSampleKey, "scope_attribute", 4, "field"),
    (pb.LogMatcher, "log_field", 1, "field"),
    (pb.LogMatcher, "resource_attribute", 3, "field"),
    (pb.LogMatcher, "exact", 10, "match"),
    (pb.LogMatcher, "regex", 11, "match"),
    (pb.LogMatcher, "contains", 15, "match"),
    (pb.LogMatcher, "equals", 22, "match"),
    (pb.LogMatcher, "lte", 26, "match"),
    (pb.LogMatcher, "negate", 20, None),
    (pb.LogMatcher, "case_insensitive", 21, None),
    (pb.LogTransform, "add", 4, None),
    (pb.LogRemove, "log_attribute", 2, "field"),
    (pb.LogRedact, "replacement", 10, None),
    (pb.LogRedact, "regex", 11, None),
    (pb.LogRename, "from_log_field", 1, "from"),
    (pb.LogRename, "from_scope_attribute", 4, "from"),
    (pb.LogRename, "to", 10, None),
    (pb.LogRename, "upsert", 11, None),
    (pb.LogAdd, "value", 10, None),
    (pb.MetricTarget, "keep", 2, None),
    (pb.MetricMatcher, "datapoint_attribute", 2, "field"),
    (pb.MetricMatcher, "metric_type", 5, "field"),
    (pb.MetricMatcher, "aggregation_temporality", 6, "field"),
    (pb.MetricMatcher, "gt", 23, "match"),
    (pb.MetricMatcher, "case_insensitive", 21, None),
    (pb.TraceTarget, "keep", 2, None),
    (pb.TraceMatcher, "span_kind", 5, "field"),
    (pb.TraceMatcher, "span_status", 6, "field"),
    (pb.TraceMatcher, "event_name", 7, "field"),
    (pb.TraceMatcher, "event_attribute", 8, "field"),
    (pb.TraceMatcher, "link_trace_id", 9, "field"),
    (pb.TraceMatcher, "starts_with", 13, "match"),
    (pb.TraceSamplingConfig, "percentage", 1, None),
    (pb.TraceSamplingConfig, "mode", 2, None),
    (pb.TraceSamplingConfig, "sampling_precision", 3, None),
    (pb.TraceSamplingConfig, "hash_seed", 4, None),
    (pb.TraceSamplingConfig, "fail_closed", 5, None),
    (pb.Extension, "mode", 4, None),
    (pb.ExtensionCapability, "min_version", 2, None),
    (pb.ExtensionConfig, "config", 2, None),
    (pb.ExtensionTarget, "config", 3, None),
    (pb.ExtensionTargetRef, "name", 2, None),
    (pb.ClientMetadata, "supported_extensions", 4, None),
    (pb.TransformStageStatus, "misses", 2, None),
    (pb.PolicySyncStatus, "errors", 4, None),
    (pb.PolicySyncStatus, "remove", 10, None),
    (pb.PolicySyncStatus, "redact", 11, None),
    (pb.PolicySyncStatus, "rename", 12, None),
    (pb.PolicySyncStatus, "add", 13, None),
    (pb.SyncRequest, "last_sync_timestamp_unix_nano", 3, None),
    (pb.SyncRequest, "policy_statuses", 5, None),
    (pb.SyncResponse, "recommended_sync_interval_seconds", 4, None),
    (pb.SyncResponse, "sync_type", 5, None),
    (pb.SyncResponse, "extension_configs", 7, None),
]


@pytest.mark.parametrize(
    ("message", "name", "number", "oneof"),
    FIELD_NUMBERS,
    ids=[f"{m.__name__}.{n}" for m, n, _, _ in FIELD_NUMBERS],
)
def test_field_numbers(message: type, name: str, number: int, oneof: str | None) -> None:
    field = _field(message, name)
    assert field.number == number
    assert _real_oneof(field) == oneof


def test_field_types() -> None:
    assert _field(pb.Policy, "created_at_unix_nano").type == FieldDescriptor.TYPE_FIXED64
    assert _field(pb.SyncResponse, "sync_timestamp_unix_nano").type == FieldDescriptor.TYPE_FIXED64
    assert _field(pb.SyncResponse, "recommended_sync_interval_seconds").type == FieldDescriptor.TYPE_UINT32
    assert _field(pb.TraceSamplingConfig, "percentage").type == FieldDescriptor.TYPE_FLOAT
    assert _field(pb.LogTarget, "keep").type == FieldDescriptor.TYPE_STRING
    assert _field(pb.MetricTarget, "keep").type == FieldDescriptor.TYPE_BOOL
    assert _field(pb.Policy, "labels").message_type is common_pb2.KeyValue.DESCRIPTOR
    assert _field(pb.ClientMetadata, "resource_attributes").message_type is common_pb2.KeyValue.DESCRIPTOR
    assert _field(pb.LogMatcher, "equals").message_type is pb.Value.DESCRIPTOR
    assert _field(pb.LogMatcher, "gte").message_type is pb.NumericValue.DESCRIPTOR
    assert _field(pb.LogMatcher, "exact").GetOptions().deprecated


def test_proto3_optional_markers() -> None:
    optional = {
        (pb.LogRedact, "regex"),
        (pb.TraceSamplingConfig, "mode"),
        (pb.TraceSamplingConfig, "sampling_precision"),
        (pb.TraceSamplingConfig, "hash_seed"),
        (pb.TraceSamplingConfig, "fail_closed"),
    }
    for message, name in optional:
        assert _is_proto3_optional(_field(message, name)), f"{message.__name__}.{name} must be optional"
    assert not _field(pb.TraceSamplingConfig, "percentage").has_presence
    assert not _field(pb.LogRedact, "replacement").has_presence
    config = pb.TraceSamplingConfig(percentage=50.0)
    assert not config.HasField("hash_seed")
    config.hash_seed = 0
    assert config.HasField("hash_seed")


def test_oneof_members() -> None:
    def members(message: type, oneof: str) -> list[str]:
        return [f.name for f in message.DESCRIPTOR.oneofs_by_name[oneof].fields]

    assert members(pb.Policy, "target") == ["log", "metric", "trace"]
    assert members(pb.LogRename, "from") == [
        "from_log_field",
        "from_log_attribute",
        "from_resource_attribute",
        "from_scope_attribute",
    ]
    log_fields = ["log_field", "log_attribute", "resource_attribute", "scope_attribute"]
    for message in (pb.LogSampleKey, pb.LogMatcher, pb.LogRemove, pb.LogRedact, pb.LogAdd):
        assert members(message, "field") == log_fields
    match = [
        *("exact", "regex", "exists", "starts_with", "ends_with", "contains"),
        *("equals", "gt", "gte", "lt", "lte"),
    ]
    for message in (pb.LogMatcher, pb.MetricMatcher, pb.TraceMatcher):
        assert members(message, "match") == match


@pytest.mark.parametrize(
    ("enum", "values"),
    [
        (
            pb.LogField,
            {
                "LOG_FIELD_UNSPECIFIED": 0,
                "LOG_FIELD_BODY": 1,
                "LOG_FIELD_SEVERITY_TEXT": 2,
                "LOG_FIELD_TRACE_ID": 3,
                "LOG_FIELD_SPAN_ID": 4,
                "LOG_FIELD_EVENT_NAME": 5,
                "LOG_FIELD_RESOURCE_SCHEMA_URL": 10,
                "LOG_FIELD_SCOPE_SCHEMA_URL": 11,
                # additions for Tero Edge match keys: new numbers only, none above changed
                "LOG_FIELD_SEVERITY_NUMBER": 6,
                "LOG_FIELD_SCOPE_NAME": 12,
                "LOG_FIELD_SCOPE_VERSION": 13,
            },
        ),
        (
            pb.PolicyStage,
            {
                "POLICY_STAGE_UNSPECIFIED": 0,
                "POLICY_STAGE_LOG_FILTER": 1,
                "POLICY_STAGE_LOG_TRANSFORM": 2,
                "POLICY_STAGE_METRIC_FILTER": 3,
                "POLICY_STAGE_TRACE_SAMPLING": 4,
            },
        ),
        (
            pb.SamplingMode,
            {
                "SAMPLING_MODE_UNSPECIFIED": 0,
                "SAMPLING_MODE_HASH_SEED": 1,
                "SAMPLING_MODE_PROPORTIONAL": 2,
                "SAMPLING_MODE_EQUALIZING": 3,
            },
        ),
        (
            pb.ExtensionMode,
            {
                "EXTENSION_MODE_UNSPECIFIED": 0,
                "EXTENSION_MODE_KEPT": 1,
                "EXTENSION_MODE_DROPPED": 2,
                "EXTENSION_MODE_UNMATCHED": 3,
                "EXTENSION_MODE_MATCHED": 4,
                "EXTENSION_MODE_ALL": 5,
            },
        ),
        (pb.SyncType, {"SYNC_TYPE_UNSPECIFIED": 0, "SYNC_TYPE_FULL": 1}),
        (
            pb.SpanStatusCode,
            {"SPAN_STATUS_CODE_UNSPECIFIED": 0, "SPAN_STATUS_CODE_OK": 1, "SPAN_STATUS_CODE_ERROR": 2},
        ),
        (
            pb.AggregationTemporality,
            {
                "AGGREGATION_TEMPORALITY_UNSPECIFIED": 0,
                "AGGREGATION_TEMPORALITY_DELTA": 1,
                "AGGREGATION_TEMPORALITY_CUMULATIVE": 2,
            },
        ),
    ],
    ids=lambda v: v.DESCRIPTOR.name if hasattr(v, "DESCRIPTOR") else "",
)
def test_enum_values(enum: object, values: dict[str, int]) -> None:
    assert dict(enum.items()) == values  # type: ignore[attr-defined]


def test_enum_spot_checks() -> None:
    assert pb.MetricField.Value("METRIC_FIELD_SCOPE_VERSION") == 13
    assert pb.MetricType.Value("METRIC_TYPE_EXPONENTIAL_HISTOGRAM") == 4
    assert pb.TraceField.Value("TRACE_FIELD_TRACE_STATE") == 5
    assert pb.TraceField.Value("TRACE_FIELD_RESOURCE_SCHEMA_URL") == 10
    assert pb.SpanKind.Value("SPAN_KIND_CONSUMER") == 5


def test_service() -> None:
    service = pb.DESCRIPTOR.services_by_name["PolicyService"]
    sync = service.methods_by_name["Sync"]
    assert sync.input_type is pb.SyncRequest.DESCRIPTOR
    assert sync.output_type is pb.SyncResponse.DESCRIPTOR


# ---------------------------------------------------------------------------
# (c) binary round trip
# ---------------------------------------------------------------------------


def _sample_response() -> pb.SyncResponse:
    policy = pb.Policy(
        id="drop-debug",
        name="Drop debug logs",
        enabled=True,
        created_at_unix_nano=1_700_000_000_000_000_000,
        labels=[common_pb2.KeyValue(key="team", value=common_pb2.AnyValue(string_value="platform"))],
        log=pb.LogTarget(
            match=[
                pb.LogMatcher(log_field=pb.LOG_FIELD_SEVERITY_TEXT, regex="^DEBUG$", case_insensitive=True),
                pb.LogMatcher(
                    log_attribute=pb.AttributePath(path=["http", "status"]),
                    gte=pb.NumericValue(int_value=500),
                    negate=True,
                ),
            ],
            keep="50%",
            transform=pb.LogTransform(
                redact=[pb.LogRedact(log_field=pb.LOG_FIELD_BODY, replacement="***", regex=r"\d{16}")],
                rename=[pb.LogRename(from_log_attribute=pb.AttributePath(path=["usr"]), to="user")],
            ),
            sample_key=pb.LogSampleKey(log_field=pb.LOG_FIELD_TRACE_ID),
        ),
        extensions=[
            pb.Extension(type="lua", version="1.0", config=b"\x00\x01", mode=pb.EXTENSION_MODE_KEPT),
        ],
    )
    return pb.SyncResponse(
        policies=[policy],
        hash="abc123",
        sync_timestamp_unix_nano=2**63 + 1,
        recommended_sync_interval_seconds=30,
        sync_type=pb.SYNC_TYPE_FULL,
        extension_configs=[pb.ExtensionConfig(type="lua", config=[b"cfg"])],
    )


def test_binary_round_trip() -> None:
    original = _sample_response()
    decoded = pb.SyncResponse.FromString(original.SerializeToString())
    assert decoded == original
    policy = decoded.policies[0]
    assert policy.WhichOneof("target") == "log"
    assert policy.labels[0].key == "team"
    assert policy.labels[0].value.string_value == "platform"
    assert policy.extensions[0].mode == pb.EXTENSION_MODE_KEPT
    assert policy.extensions[0].config == b"\x00\x01"
    matchers = policy.log.match
    assert matchers[0].WhichOneof("field") == "log_field"
    assert matchers[0].WhichOneof("match") == "regex"
    assert matchers[1].WhichOneof("match") == "gte"
    assert matchers[1].gte.int_value == 500
    redact = policy.log.transform.redact[0]
    assert redact.HasField("regex")
    assert policy.log.transform.rename[0].WhichOneof("from") == "from_log_attribute"
    assert decoded.sync_timestamp_unix_nano == 2**63 + 1


# ---------------------------------------------------------------------------
# (d) JSON mapping
# ---------------------------------------------------------------------------


def test_json_parse_camel_case_and_enum_names() -> None:
    document = {
        "id": "sample-traces",
        "name": "Sample checkout traces",
        "enabled": True,
        "createdAtUnixNano": "1700000000000000000",
        "labels": [{"key": "env", "value": {"stringValue": "prod"}}],
        "trace": {
            "match": [
                {"spanKind": "SPAN_KIND_SERVER", "exists": True},
                {
                    "spanAttribute": {"path": ["http.route"]},
                    "startsWith": "/checkout",
                    "caseInsensitive": True,
                },
                {"traceField": "TRACE_FIELD_NAME", "equals": {"stringValue": "GET"}},
            ],
            "keep": {
                "percentage": 12.5,
                "mode": "SAMPLING_MODE_HASH_SEED",
                "samplingPrecision": 4,
                "hashSeed": 0,
                "failClosed": False,
            },
        },
        "extensions": [{"type": "lua", "version": "1", "config": "AAE=", "mode": "EXTENSION_MODE_MATCHED"}],
    }
    policy = json_format.ParseDict(document, pb.Policy())
    assert policy.WhichOneof("target") == "trace"
    matchers = policy.trace.match
    assert matchers[0].span_kind == pb.SPAN_KIND_SERVER
    assert matchers[1].span_attribute.path == ["http.route"]
    assert matchers[1].starts_with == "/checkout"
    assert matchers[1].case_insensitive
    assert matchers[2].equals.string_value == "GET"
    keep = policy.trace.keep
    assert keep.mode == pb.SAMPLING_MODE_HASH_SEED
    assert keep.HasField("hash_seed") and keep.hash_seed == 0
    assert keep.HasField("fail_closed") and not keep.fail_closed
    assert policy.extensions[0].config == b"\x00\x01"
    assert policy.labels[0].value.string_value == "prod"

    request = json_format.ParseDict(
        {
            "clientMetadata": {
                "supportedPolicyStages": ["POLICY_STAGE_LOG_FILTER", "POLICY_STAGE_TRACE_SAMPLING"]
            },
            "fullSync": True,
            "policyStatuses": [{"id": "p1", "matchHits": "3", "remove": {"hits": "1"}}],
        },
        pb.SyncRequest(),
    )
    assert list(request.client_metadata.supported_policy_stages) == [1, 4]
    assert request.policy_statuses[0].remove.hits == 1

    # And back: MessageToDict emits lowerCamelCase keys and full enum names.
    emitted = json_format.MessageToDict(policy)
    assert emitted["trace"]["keep"]["mode"] == "SAMPLING_MODE_HASH_SEED"
    assert json_format.ParseDict(emitted, pb.Policy()) == policy
