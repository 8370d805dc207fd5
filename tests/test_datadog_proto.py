"""Datadog protobuf series (the agent's MetricPayload) through the real engine and the codec.

The protobuf view must see exactly what the JSON series view sees (same mapping, same
policies, same outcome), keep every field edge does not declare when it re-encodes, and
refuse bytes that are not a MetricPayload so the route forwards them raw. The schema's
field numbers are the Datadog agent's wire contract (DataDog/agent-payload,
proto/metrics/agent_payload.proto).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from edge.formats.datadog.batch import DatadogSeries
from edge.formats.datadog.body import evaluate
from edge.formats.datadog.proto_series import DatadogProtoSeries, delete_dropped
from edge.formats.errors import UndecodableBody
from edge.proto.datadog.agentpayload.agent_payload_pb2 import MetricPayload
from tests.engine_helpers import clean_engine
from tests.test_datadog import SERIES

Series = MetricPayload.MetricSeries
METADATA = b"\x4a\x04\x0a\x02\x20\x0a"  # MetricSeries.metadata (field 9), not declared by edge
FUTURE = b"\xa2\x06\x03abc"  # a length-delimited field 100 the agent may add one day


def as_proto(doc: dict[str, Any]) -> Series:
    """The JSON series as the agent would write it in protobuf (what only JSON can hold is left out)."""
    tags = doc.get("tags")
    resources = doc.get("resources")
    return Series(
        metric=doc.get("metric", ""), unit=doc.get("unit", ""), source_type_name=doc.get("source_type_name", ""),
        type=doc["type"] if type(doc.get("type")) is int else 0,
        tags=[t for t in tags if type(t) is str] if type(tags) is list else [],
        resources=[MetricPayload.Resource(type=r["type"], name=r["name"]) for r in resources or ()
                   if type(r) is dict and type(r.get("type")) is str and type(r.get("name")) is str],
        points=[MetricPayload.MetricPoint(value=p["value"], timestamp=p["timestamp"]) for p in doc.get("points", ())])


def matched(matchers: list[dict], view: Any) -> list[int]:
    engine = clean_engine([{"id": "p", "metric": {"match": matchers, "keep": False}}])
    kept_before = [s.metric if hasattr(s, "metric") else s["metric"] for s in view.records]
    engine.evaluate("metric", view)
    if isinstance(view, DatadogProtoSeries):
        kept = {s.metric for s in view.message.series}
        return [i for i, name in enumerate(kept_before) if name not in kept]
    return [i for i in range(view.n) if not view.alive >> i & 1]


MATCHERS = [
    [{"metric_field": "name", "starts_with": "app."}],
    [{"metric_field": "name", "exists": False}],
    [{"metric_field": "unit", "exact": "request"}],
    [{"metric_field": "unit", "exists": True}],
    [{"metric_field": "description", "exists": False}],
    [{"metric_type": "METRIC_TYPE_GAUGE"}],
    [{"metric_type": "METRIC_TYPE_SUM"}],
    [{"aggregation_temporality": "AGGREGATION_TEMPORALITY_DELTA"}],
    [{"datapoint_attribute": "env", "exact": "prod"}],
    [{"datapoint_attribute": "env", "exact": "other"}],
    [{"resource_attribute": "env", "exact": "staging"}],
    [{"datapoint_attribute": "canary", "exists": True}],
    [{"datapoint_attribute": "host", "exact": "web-1"}],
    [{"datapoint_attribute": "host", "exact": "from-tag"}],
    [{"resource_attribute": "host", "exact": "web-3"}],
    [{"datapoint_attribute": "source_type_name", "exact": "kubernetes"}],
    [{"datapoint_attribute": "env", "exists": False}],
    [{"datapoint_attribute": "env", "regex": "^(prod|odd)$"}],
    [{"datapoint_attribute": "host", "exists": False}],
    [{"scope_attribute": "env", "exists": True}],
]


@pytest.mark.parametrize("matchers", MATCHERS)
def test_the_protobuf_view_matches_what_the_json_view_matches(matchers: list[dict]) -> None:
    names = [s["metric"] for s in SERIES]
    assert len(set(names)) == len(names)  # `matched` tells protobuf series apart by name
    json_view = DatadogSeries({"series": copy.deepcopy(SERIES)})
    proto_view = DatadogProtoSeries(MetricPayload(series=[as_proto(s) for s in SERIES]))
    assert matched(matchers, proto_view) == matched(matchers, json_view)


ENGINE_POLICIES = [
    {"id": "internal", "metric": {"match": [{"metric_field": "name", "starts_with": "internal."}], "keep": False}},
    {"id": "dev-gauges", "metric": {"match": [{"datapoint_attribute": "env", "exact": "dev"},
                                              {"metric_type": "METRIC_TYPE_GAUGE"}], "keep": False}},
]


def series(metric: str, kind: int, *tags: str, unknown: bytes = b"") -> Series:
    out = Series(metric=metric, type=kind, tags=tags, interval=10,
                 points=[MetricPayload.MetricPoint(value=1.5, timestamp=1_700_000_000)])
    out.MergeFromString(unknown)
    return out


def test_dropped_series_go_and_kept_ones_keep_their_unknown_fields_byte_for_byte() -> None:
    kept = [series("app.a", MetricPayload.COUNT, "env:dev", unknown=METADATA),
            series("app.b", MetricPayload.GAUGE, "env:prod", unknown=METADATA + FUTURE)]
    gone = [series("internal.x", MetricPayload.RATE, unknown=FUTURE), series("app.c", MetricPayload.GAUGE, "env:dev")]
    body = MetricPayload(series=[gone[0], kept[0], gone[1], kept[1]]).SerializeToString()
    result = evaluate(clean_engine(ENGINE_POLICIES), "metric", body, protobuf=True)
    assert (result.outcome.total, result.outcome.kept) == (4, 2)
    assert result.body == MetricPayload(series=kept).SerializeToString()
    assert result.body.count(METADATA) == 2 and result.body.count(FUTURE) == 1


def test_nothing_dropped_returns_the_original_body_object() -> None:
    body = MetricPayload(series=[series("app.a", MetricPayload.COUNT, unknown=FUTURE)]).SerializeToString()
    assert evaluate(clean_engine(ENGINE_POLICIES), "metric", body, protobuf=True).body is body


@pytest.mark.parametrize("body", [b"\x0a\x0binternal.a", b"\x0a\x03\x12\x01", b"\xff\xff\xff\xff", b"\x0b"])
def test_bytes_that_are_not_a_metric_payload_are_undecodable(body: bytes) -> None:
    with pytest.raises(UndecodableBody, match="^not a Datadog metric payload: not a protobuf MetricPayload"):
        evaluate(clean_engine(ENGINE_POLICIES), "metric", body, protobuf=True)


@pytest.mark.parametrize("flags", ["", "1", "0", "0110", "1001", "0" * 7 + "1", "10" * 50])
def test_delete_dropped_keeps_exactly_the_flagged_entries_in_order(flags: str) -> None:
    payload = MetricPayload(series=[Series(metric=str(i)) for i in range(len(flags))])
    delete_dropped(payload.series, flags)
    assert [s.metric for s in payload.series] == [str(i) for i, f in enumerate(flags) if f == "1"]


def test_extensions_get_a_copy_of_the_series_as_a_dict() -> None:
    view = DatadogProtoSeries(MetricPayload(series=[series("app.a", MetricPayload.GAUGE, "env:prod")]))
    assert view.export(0) == {"resource": {}, "scope": {}, "record": {
        "metric": "app.a", "type": 3, "tags": ["env:prod"], "interval": "10",
        "points": [{"value": 1.5, "timestamp": "1700000000"}]}}


# The Datadog agent's wire contract: DataDog/agent-payload, proto/metrics/agent_payload.proto.
FIELD_NUMBERS = [
    (MetricPayload, "series", 1),
    (Series, "resources", 1), (Series, "metric", 2), (Series, "tags", 3), (Series, "points", 4),
    (Series, "type", 5), (Series, "unit", 6), (Series, "source_type_name", 7), (Series, "interval", 8),
    (MetricPayload.MetricPoint, "value", 1), (MetricPayload.MetricPoint, "timestamp", 2),
    (MetricPayload.Resource, "type", 1), (MetricPayload.Resource, "name", 2),
]


@pytest.mark.parametrize(("message", "name", "number"), FIELD_NUMBERS)
def test_field_numbers_are_the_agents(message: Any, name: str, number: int) -> None:
    assert message.DESCRIPTOR.fields_by_name[name].number == number


def test_metric_types_and_package_are_the_agents() -> None:
    assert dict(MetricPayload.MetricType.items()) == {"UNSPECIFIED": 0, "COUNT": 1, "RATE": 2, "GAUGE": 3}
    assert MetricPayload.DESCRIPTOR.full_name == "datadog.agentpayload.MetricPayload"
    assert Series.DESCRIPTOR.fields_by_name["points"].message_type.full_name == (
        "datadog.agentpayload.MetricPayload.MetricPoint")
