"""Named `FieldKey`s for the fixed fields of logs, metrics and traces.

The compiler turns a `log_field` / `metric_field` / `trace_field` selector into the key
(selector name, enum number), so batch views and the engine look fixed fields up by
those tuples. Naming them once here, with the numbers taken from the policy schema's
enums, keeps `("log_field", 3)` from being spelled (and misspelled) across the tree.
Each name is the schema's enum value name without `_FIELD`: `LOG_FIELD_TRACE_ID` is
`LOG_TRACE_ID`, `TRACE_FIELD_TRACE_STATE` is `TRACE_TRACE_STATE`.
"""

from __future__ import annotations

from edge.policy.model import FieldKey
from edge.proto.tero.policy.v1 import policy_pb2 as pb

# ── logs (LogField) ──

LOG_BODY: FieldKey = ("log_field", pb.LOG_FIELD_BODY)
LOG_SEVERITY_TEXT: FieldKey = ("log_field", pb.LOG_FIELD_SEVERITY_TEXT)
LOG_TRACE_ID: FieldKey = ("log_field", pb.LOG_FIELD_TRACE_ID)
LOG_SPAN_ID: FieldKey = ("log_field", pb.LOG_FIELD_SPAN_ID)
LOG_EVENT_NAME: FieldKey = ("log_field", pb.LOG_FIELD_EVENT_NAME)
LOG_RESOURCE_SCHEMA_URL: FieldKey = ("log_field", pb.LOG_FIELD_RESOURCE_SCHEMA_URL)
LOG_SCOPE_SCHEMA_URL: FieldKey = ("log_field", pb.LOG_FIELD_SCOPE_SCHEMA_URL)
LOG_SEVERITY_NUMBER: FieldKey = ("log_field", pb.LOG_FIELD_SEVERITY_NUMBER)
LOG_SCOPE_NAME: FieldKey = ("log_field", pb.LOG_FIELD_SCOPE_NAME)
LOG_SCOPE_VERSION: FieldKey = ("log_field", pb.LOG_FIELD_SCOPE_VERSION)
# Fields matchers can read but transforms cannot change (a number, and the scope's identity).
LOG_READ_ONLY: frozenset[FieldKey] = frozenset({LOG_SEVERITY_NUMBER, LOG_SCOPE_NAME, LOG_SCOPE_VERSION})

# ── metrics (MetricField, and the enum selectors that have no value in the key) ──

METRIC_NAME: FieldKey = ("metric_field", pb.METRIC_FIELD_NAME)
METRIC_DESCRIPTION: FieldKey = ("metric_field", pb.METRIC_FIELD_DESCRIPTION)
METRIC_UNIT: FieldKey = ("metric_field", pb.METRIC_FIELD_UNIT)
METRIC_RESOURCE_SCHEMA_URL: FieldKey = ("metric_field", pb.METRIC_FIELD_RESOURCE_SCHEMA_URL)
METRIC_SCOPE_SCHEMA_URL: FieldKey = ("metric_field", pb.METRIC_FIELD_SCOPE_SCHEMA_URL)
METRIC_SCOPE_NAME: FieldKey = ("metric_field", pb.METRIC_FIELD_SCOPE_NAME)
METRIC_SCOPE_VERSION: FieldKey = ("metric_field", pb.METRIC_FIELD_SCOPE_VERSION)
METRIC_TYPE: FieldKey = ("metric_type",)
AGGREGATION_TEMPORALITY: FieldKey = ("aggregation_temporality",)

# ── traces (TraceField) ──

TRACE_NAME: FieldKey = ("trace_field", pb.TRACE_FIELD_NAME)
TRACE_TRACE_ID: FieldKey = ("trace_field", pb.TRACE_FIELD_TRACE_ID)
TRACE_SPAN_ID: FieldKey = ("trace_field", pb.TRACE_FIELD_SPAN_ID)
TRACE_PARENT_SPAN_ID: FieldKey = ("trace_field", pb.TRACE_FIELD_PARENT_SPAN_ID)
TRACE_TRACE_STATE: FieldKey = ("trace_field", pb.TRACE_FIELD_TRACE_STATE)
TRACE_RESOURCE_SCHEMA_URL: FieldKey = ("trace_field", pb.TRACE_FIELD_RESOURCE_SCHEMA_URL)
TRACE_SCOPE_SCHEMA_URL: FieldKey = ("trace_field", pb.TRACE_FIELD_SCOPE_SCHEMA_URL)
TRACE_SCOPE_NAME: FieldKey = ("trace_field", pb.TRACE_FIELD_SCOPE_NAME)
TRACE_SCOPE_VERSION: FieldKey = ("trace_field", pb.TRACE_FIELD_SCOPE_VERSION)
