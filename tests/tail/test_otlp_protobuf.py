"""The hand-written OTLP/protobuf encoder decodes to the message the generated classes build."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from edge import __version__
from edge.formats.lines.records import FILE_PATH_ATTRIBUTE, Record
from edge.tail.otlp_protobuf import SCOPE_NAME, ProtobufEncoder, varint

OBSERVED = 1_714_564_800_000_000_123


def set_any(target: AnyValue, value: Any) -> None:
    """The reference: what the generated classes make of a parsed value."""
    kind = value.__class__
    if kind is str:
        target.string_value = value
    elif kind is bool:
        target.bool_value = value
    elif kind is int:
        if -(2**63) <= value < 2**63:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif kind is float:
        target.double_value = value
    elif kind is bytes:
        target.bytes_value = value
    elif kind is dict:
        target.kvlist_value.SetInParent()
        for key, item in value.items():
            kv = target.kvlist_value.values.add()
            kv.key = key
            set_any(kv.value, item)
    elif kind is list:
        target.array_value.SetInParent()
        for item in value:
            set_any(target.array_value.values.add(), item)


def reference(groups: list[tuple[str, list[Record]]], resource: dict[str, str]) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    resource_logs = request.resource_logs.add()
    for key, value in resource.items():
        kv = resource_logs.resource.attributes.add()
        kv.key, kv.value.string_value = key, value
    scope_logs = resource_logs.scope_logs.add()
    scope_logs.scope.name, scope_logs.scope.version = SCOPE_NAME, __version__
    for source, parsed in groups:
        for r in parsed:
            record = scope_logs.log_records.add()
            record.observed_time_unix_nano = OBSERVED
            record.time_unix_nano = r.time_ns
            if r.severity_text:
                record.severity_text = r.severity_text
            record.severity_number = r.severity_number  # type: ignore[assignment]
            record.trace_id, record.span_id = r.trace_id, r.span_id
            set_any(record.body, r.body)
            for key, value in r.attributes.items():
                kv = record.attributes.add()
                kv.key = key
                set_any(kv.value, value)
            if FILE_PATH_ATTRIBUTE not in r.attributes:
                kv = record.attributes.add()
                kv.key, kv.value.string_value = FILE_PATH_ATTRIBUTE, source
    return request


text = st.text(max_size=300)
scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | text | st.binary(max_size=40) | st.floats(
    allow_nan=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
records = st.builds(
    Record, body=values, time_ns=st.integers(0, 2**64 - 1), severity_text=st.sampled_from(["", "ERROR", "info", "é"]),
    severity_number=st.integers(0, 24), trace_id=st.sampled_from([b"", bytes(range(16))]),
    span_id=st.sampled_from([b"", bytes(range(8))]),
    attributes=st.dictionaries(st.sampled_from(["service", "status", "k" * 200, FILE_PATH_ATTRIBUTE, "n"]), values,
                               max_size=4))
groups = st.lists(st.tuples(st.sampled_from(["/var/log/a.log", "/var/log/é.log"]), st.lists(records, max_size=5)),
                  max_size=3)


@settings(max_examples=300, deadline=None)
@given(groups=groups, resource=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_the_request_decodes_to_what_the_generated_classes_build(groups: list[tuple[str, list[Record]]],
                                                                 resource: dict[str, str]) -> None:
    encode = ProtobufEncoder()
    for _ in range(2):  # the second time from the field cache
        got = ExportLogsServiceRequest.FromString(encode(groups, resource, OBSERVED))
        assert got == reference(groups, resource)


def test_varints_past_the_table_and_long_fields() -> None:
    for number in (0, 127, 128, 16383, 16384, 2**35, 2**64 - 1):
        decoded, shift = 0, 0
        for byte in varint(number):
            decoded |= (byte & 0x7F) << shift
            shift += 7
        assert decoded == number
    big = Record(body="x" * 100_000, attributes={"blob": "y" * 20_000})
    got = ExportLogsServiceRequest.FromString(ProtobufEncoder()([("/f", [big])], {}, OBSERVED))
    assert got == reference([("/f", [big])], {})
