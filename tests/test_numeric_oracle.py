"""Numeric comparisons against a plain-Python oracle: every operator, every column shape, both wire formats.

Matching compares an all-number column in one C-level pass and anything else value by value,
so an operator wrong in one path only shows on the columns that take it. Hypothesis draws
all-int, all-float, mixed int/float and mixed-with-other-types columns around the threshold
(equal values included), and the records dropped by `drop where n OP threshold` must be
exactly those the oracle names, for OTLP/JSON and OTLP/protobuf alike.
"""

from __future__ import annotations

import operator

import orjson
import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from edge.formats.otlp import body as otlp_body
from tests.engine_helpers import clean_engine

ORACLE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le, "equals": operator.eq}

_ints = st.integers(-4, 4)
_floats = st.sampled_from([-4.0, -2.5, -1.0, 0.0, 0.5, 1.0, 2.0, 2.5, 4.0])
_others = st.sampled_from([{"stringValue": "2"}, {"boolValue": True}, {"boolValue": False}, None])


def _any_value(value: object) -> dict | None:
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        return value if isinstance(value, dict) or value is None else {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    return {"doubleValue": value}


COLUMNS = {
    "int": st.lists(_ints, min_size=1, max_size=40),
    "float": st.lists(_floats, min_size=1, max_size=40),
    "mixed numbers": st.lists(st.one_of(_ints, _floats), min_size=1, max_size=40),
    "mixed types": st.lists(st.one_of(_ints, _floats, _others), min_size=1, max_size=40),
}


def _document(values: list) -> dict:
    records = []
    for i, value in enumerate(values):
        any_value = _any_value(value)
        attributes = [{"key": "n", "value": any_value}] if any_value is not None else []
        records.append({"timeUnixNano": str(i + 1), "attributes": attributes})
    return {"resourceLogs": [{"resource": {}, "scopeLogs": [{"scope": {}, "logRecords": records}]}]}


def _expected(values: list, op: str, threshold: float) -> set[int]:
    numbers = [(i, v) for i, v in enumerate(values) if isinstance(v, int | float) and not isinstance(v, bool)]
    return {i + 1 for i, v in numbers if ORACLE[op](v, threshold)}


def _dropped(op: str, threshold: float, doc: dict, protobuf: bool) -> set[int]:
    engine = clean_engine([{"id": "p", "name": "p", "log": {"match": [{"log_attribute": "n", op: threshold}],
                                                            "keep": "none"}}])
    sent = {int(r["timeUnixNano"]) for r in doc["resourceLogs"][0]["scopeLogs"][0]["logRecords"]}
    if protobuf:
        body = json_format.ParseDict(doc, ExportLogsServiceRequest()).SerializeToString()
        out = ExportLogsServiceRequest.FromString(
            otlp_body.evaluate(engine, "log", body, "application/x-protobuf").body)
        kept = {r.time_unix_nano for rl in out.resource_logs for sl in rl.scope_logs for r in sl.log_records}
    else:
        out = orjson.loads(otlp_body.evaluate(engine, "log", orjson.dumps(doc), "application/json").body)
        kept = {int(r["timeUnixNano"]) for rl in out.get("resourceLogs", []) for sl in rl.get("scopeLogs", [])
                for r in sl.get("logRecords", [])}
    return sent - kept


@pytest.mark.parametrize("shape", sorted(COLUMNS))
@pytest.mark.parametrize("op", sorted(ORACLE))
@settings(max_examples=40, deadline=None)
@given(data=st.data(), protobuf=st.booleans())
def test_comparisons_match_the_oracle(data, op: str, shape: str, protobuf: bool) -> None:
    values = data.draw(COLUMNS[shape], label="column")
    numbers = [v for v in values if isinstance(v, int | float) and not isinstance(v, bool)]
    # Half the time the threshold is one of the column's own numbers: where gt and gte differ.
    own = numbers and data.draw(st.booleans())
    threshold = data.draw(st.sampled_from(numbers) if own else st.one_of(_ints, _floats), label="threshold")
    assert _dropped(op, threshold, _document(values), protobuf) == _expected(values, op, threshold)
