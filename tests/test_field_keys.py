"""The named field keys of `edge.policy.fields` are the keys the compiler produces.

Batch views index their field tables by these names, so a constant that drifted from the
schema (or a schema field without a name) would make a selector silently match nothing.
"""

from __future__ import annotations

import pytest

from edge.policy import fields
from edge.policy.compiler import field_key
from edge.proto.tero.policy.v1 import policy_pb2 as pb

# (schema enum, selector name, matcher message that selects with it)
ENUMS = [(pb.LogField, "log_field", pb.LogMatcher), (pb.MetricField, "metric_field", pb.MetricMatcher),
         (pb.TraceField, "trace_field", pb.TraceMatcher)]
CASES = [(selector, matcher, value_name, number) for enum, selector, matcher in ENUMS
         for value_name, number in enum.items() if number]


@pytest.mark.parametrize(("selector", "matcher", "value_name", "number"), CASES, ids=[c[2] for c in CASES])
def test_every_schema_field_has_its_named_key(selector, matcher, value_name, number):
    name = value_name.replace("_FIELD", "", 1)  # LOG_FIELD_TRACE_ID -> LOG_TRACE_ID
    key = getattr(fields, name)
    assert key == (selector, number)
    assert field_key(matcher(**{selector: number})) == key


@pytest.mark.parametrize(("selector", "matcher"), [("metric_type", pb.MetricMatcher),
                                                   ("aggregation_temporality", pb.MetricMatcher)])
def test_enum_selector_keys(selector, matcher):
    """Enum selectors carry no value in their key: the condition holds the enum number."""
    assert field_key(matcher(**{selector: 1})) == getattr(fields, selector.upper())


def test_no_stray_names():
    """Every key in the module is one of the above (no hand-made numbers beside them)."""
    named = {value_name.replace("_FIELD", "", 1) for _, _, value_name, _ in CASES}
    keys = {name for name, value in vars(fields).items() if name.isupper() and value.__class__ is tuple}
    assert keys == named | {"METRIC_TYPE", "AGGREGATION_TEMPORALITY"}
