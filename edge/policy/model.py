"""The compiled form of a policy set: plain, picklable data that the request path reads.

Everything here is decided once per snapshot by `edge.policy.compiler` so that the
request path only does table lookups and batch scans. Field selectors become
`FieldKey` tuples, matchers become `Condition`s grouped per field, and keep/transform
specs are pre-parsed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

# A field selector, normalised: ("log_field", 1), ("log_attribute", ("http", "method")),
# ("resource_attribute", ("service.name",)), ("span_kind",), ("event_name", "retry"), ...
# The fixed fields have named keys in `edge.policy.fields` (LOG_BODY is ("log_field", 1)).
FieldKey = tuple[Any, ...]

LOG, METRIC, TRACE = "log", "metric", "trace"
SIGNALS = (LOG, METRIC, TRACE)


class Op(IntEnum):
    """What a condition does with the field value."""

    STRING = 1  # exact / regex / starts_with / ends_with / contains (Hyperscan or RE2)
    EXISTS = 2
    EQUALS = 3  # typed equality other than strings (bool, int, double, bytes)
    COMPARE = 4  # gt / gte / lt / lte
    ENUM = 5  # implicit equality on an enum selector (span kind, metric type, ...)
    NEVER = 6  # a string condition that can never match (exact "")
    NON_EMPTY = 7  # a string condition that every non-empty string satisfies (contains "")
    PRESENT = 8  # implicit-presence selectors (event_name, link_trace_id): the selector decides


@dataclass(slots=True)
class Condition:
    """One matcher of one policy; `index` is its id in the signal's condition table."""

    index: int
    field: FieldKey
    op: Op
    negate: bool = False
    # Op.STRING: the Hyperscan expression (None -> RE2 only) and the RE2 program text.
    hs_pattern: str | None = None
    hs_flags: int = 0
    re2_pattern: str | None = None
    # Op.STRING: (kind, text) of the matcher, e.g. ("starts_with", "GET "); Op.EXISTS: expected presence;
    # Op.EQUALS: typed value; Op.COMPARE: (op, number); Op.ENUM: number.
    operand: Any = None


@dataclass(slots=True)
class LogKeep:
    """A parsed log `keep`: all, none, N% sampling or an N-per-window rate limit."""

    kind: str  # "all" | "none" | "percent" | "rate"
    percent: float = 100.0
    rate: int = 0
    window_s: float = 1.0

    def restrictiveness(self) -> tuple[int, float]:
        """Sort key: none < lower % < higher % < rate limits (lowest rate first) < all.

        Rate limits come after sampling so the limit caps what actually leaves: a record
        that sampling drops never spends a rate-limit slot.
        """
        if self.kind == "none":
            return (0, 0.0)
        if self.kind == "percent":
            return (1, self.percent)
        if self.kind == "rate":
            return (2, self.rate / self.window_s)
        return (3, 0.0)


@dataclass(slots=True)
class TraceKeep:
    """A parsed trace sampling config (docs/policies.md §6)."""

    percentage: float
    mode: int  # SamplingMode number; HASH_SEED when unspecified
    precision: int = 4
    hash_seed: int = 0
    fail_closed: bool = True


@dataclass(slots=True)
class Redact:
    field: FieldKey
    replacement: str
    regex: str | None  # RE2 program text; None -> replace the whole value


@dataclass(slots=True)
class Rename:
    source: FieldKey
    to: str
    upsert: bool


@dataclass(slots=True)
class Add:
    field: FieldKey
    value: str
    upsert: bool


@dataclass(slots=True)
class Transform:
    """The four transform stages of one policy, applied in normative order."""

    remove: list[FieldKey] = field(default_factory=list)
    redact: list[Redact] = field(default_factory=list)
    rename: list[Rename] = field(default_factory=list)
    add: list[Add] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.remove or self.redact or self.rename or self.add)


@dataclass(slots=True)
class ExtensionSpec:
    type: str
    version: str
    config: bytes
    mode: int  # ExtensionMode number, UNSPECIFIED already mapped to MATCHED


@dataclass(slots=True)
class CompiledPolicy:
    """One policy after compilation. Invalid policies keep their errors and never match."""

    id: str
    name: str
    signal: str | None
    enabled: bool
    errors: list[str] = field(default_factory=list)
    conditions: list[int] = field(default_factory=list)
    log_keep: LogKeep | None = None
    sample_key: FieldKey | None = None
    transform: Transform | None = None
    metric_keep: bool = True
    trace_keep: TraceKeep | None = None
    extensions: list[ExtensionSpec] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.enabled and self.signal is not None and not self.errors


@dataclass(slots=True)
class FieldPlan:
    """All conditions that read one field, so one extraction and one scan serve every policy."""

    key: FieldKey
    scanned: list[int] = field(default_factory=list)  # Op.STRING conditions in a Hyperscan database
    re2_only: list[int] = field(default_factory=list)  # Op.STRING conditions Hyperscan cannot run exactly
    typed: list[int] = field(default_factory=list)  # every other op, evaluated on typed values
    exact: dict[str, list[int]] = field(default_factory=dict)  # `exact` conditions by the value they equal
    exact_caseless: dict[str, list[int]] = field(default_factory=dict)  # ASCII ones, case-insensitive: by lowercase
    # hyperscan.dumpb of each database of the scanned conditions (ids = condition index)
    hs_databases: list[bytes] = field(default_factory=list)
    aliases: dict[int, list[int]] = field(default_factory=dict)  # scanned id -> conditions with the same expression


@dataclass(slots=True)
class SignalPlan:
    """Everything the evaluator needs for one signal."""

    signal: str
    policies: list[CompiledPolicy] = field(default_factory=list)  # valid policies, id order
    conditions: list[Condition] = field(default_factory=list)
    fields: dict[FieldKey, FieldPlan] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.policies)
