"""Compile decoded policies into a `Snapshot`: validation (docs/policies.md §8) plus match tables.

Validation collects every error of a policy (`log: match[0]: invalid regex "(["`) and
leaves that policy inert. Valid string conditions are grouped per field into that field's
match tables (`edge.policy.databases`: exact-value dicts, a literal database, regex
databases), so one lookup and a few scans of a field's values serve every policy.
Patterns Hyperscan cannot run with RE2's meaning are routed to RE2 instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import hyperscan
import re2

from edge.policy import model
from edge.policy.databases import build_tables
from edge.policy.fields import LOG_READ_ONLY
from edge.policy.hsregex import to_hyperscan
from edge.policy.model import (
    LOG,
    METRIC,
    TRACE,
    Add,
    CompiledPolicy,
    Condition,
    ExtensionSpec,
    FieldKey,
    FieldPlan,
    LogKeep,
    Op,
    Redact,
    Rename,
    SignalPlan,
    TraceKeep,
    Transform,
)
from edge.policy.snapshot import Snapshot
from edge.proto.tero.policy.v1 import policy_pb2 as pb

_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False

HS_BASE_FLAGS = hyperscan.HS_FLAG_UTF8 | hyperscan.HS_FLAG_MULTILINE

_KEEP_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")
_KEEP_RATE = re.compile(r"^(\d+)/(\d*)([sm])$")

_ENUM_SELECTORS = {"metric_type", "aggregation_temporality", "span_kind", "span_status"}
_PATH_SELECTORS = {
    "log_attribute", "resource_attribute", "scope_attribute", "datapoint_attribute",
    "span_attribute", "event_attribute",
}
_FIELD_ENUM_SELECTORS = {"log_field", "metric_field", "trace_field"}
_STRING_CONDITIONS = {"exact", "regex", "starts_with", "ends_with", "contains"}
_COMPARE_CONDITIONS = {"gt", "gte", "lt", "lte"}


class PolicyError(Exception):
    """A validation failure; the message is the part after `signal: location: `."""


def compile_re2(pattern: str) -> re2._Regexp:
    """Compile with RE2 or raise PolicyError naming the pattern (the documented format)."""
    try:
        return re2.compile(pattern, _RE2_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PolicyError(f'invalid regex "{pattern}": {reason}') from None


def _hs_literal(text: str) -> str:
    """A literal as a Hyperscan expression: alphanumerics as is, everything else escaped."""
    return "".join(c if c.isascii() and c.isalnum() else f"\\x{{{ord(c):x}}}" for c in text)


# ── field selectors ─────────────────────────────────────────────────────────


def field_key(message, oneof: str = "field", prefix: str = "") -> FieldKey:
    """The normalised FieldKey of a matcher / transform selector, or PolicyError."""
    which = message.WhichOneof(oneof)
    if which is None:
        raise PolicyError("no field selector")
    name = which[len(prefix):] if prefix and which.startswith(prefix) else which
    value = getattr(message, which)
    enum = message.DESCRIPTOR.fields_by_name[which].enum_type
    if enum is not None and value not in enum.values_by_number:
        raise PolicyError(f"{name} has unknown value {value}")
    if name in _FIELD_ENUM_SELECTORS:
        if value == 0:
            raise PolicyError(f"{name} is unspecified")
        return (name, value)
    if name in _PATH_SELECTORS:
        path = tuple(value.path)
        if not path:
            raise PolicyError("attribute has empty path")
        return (name, path)
    if name in _ENUM_SELECTORS:
        if value == 0 and name != "span_status":  # span_status 0 is OTLP's unset status, a real value
            raise PolicyError(f"{name} is unspecified")
        return (name,)
    if name in ("event_name", "link_trace_id"):
        if not value:
            raise PolicyError(f"{name} is empty")
        return (name, value.lower() if name == "link_trace_id" else value)
    raise PolicyError(f"unsupported field selector {name}")


# ── conditions ──────────────────────────────────────────────────────────────


def _string_condition(kind: str, text: str, case_insensitive: bool) -> tuple[Op, str | None, int, str | None]:
    """(op, hyperscan expression, hyperscan flags, RE2 program) for a string condition."""
    flags = HS_BASE_FLAGS | (hyperscan.HS_FLAG_CASELESS if case_insensitive else 0)
    ci = "(?i)" if case_insensitive else ""
    if kind == "regex":
        compile_re2(ci + text)
        return Op.STRING, to_hyperscan(text, case_insensitive), flags | hyperscan.HS_FLAG_SOM_LEFTMOST, ci + text
    if text == "":
        return (Op.NEVER if kind == "exact" else Op.NON_EMPTY), None, 0, None
    literal = _hs_literal(text)
    escaped = re2.escape(text)
    anchored = {
        "exact": (f"^{literal}$", f"^{escaped}$"),
        "starts_with": (f"^{literal}", f"^{escaped}"),
        "ends_with": (f"{literal}$", f"{escaped}$"),
        "contains": (literal, escaped),
    }[kind]
    hs_ok = "\n" not in text and not (case_insensitive and not text.isascii())
    return Op.STRING, (anchored[0] if hs_ok else None), flags, ci + anchored[1]


def _typed_equals(value: pb.Value, case_insensitive: bool, key: FieldKey, index: int, negate: bool) -> Condition:
    which = value.WhichOneof("value")
    if which is None:
        raise PolicyError("equals has no value")
    if which == "string_value":
        op, hs_pattern, flags, re2_pattern = _string_condition("exact", value.string_value, case_insensitive)
        return Condition(index, key, op, negate, hs_pattern, flags, re2_pattern, ("exact", value.string_value))
    if which == "hex_value":
        try:
            operand: object = bytes.fromhex(value.hex_value)
        except ValueError:
            raise PolicyError(f'invalid hex "{value.hex_value}"') from None
    else:
        operand = getattr(value, which)
    return Condition(index, key, Op.EQUALS, negate, operand=operand)


def build_condition(matcher, index: int) -> Condition:
    """One matcher message -> Condition, or PolicyError with the reason."""
    key = field_key(matcher)
    negate = matcher.negate
    if key[0] in _ENUM_SELECTORS:
        return Condition(index, key, Op.ENUM, negate, operand=getattr(matcher, key[0]))
    which = matcher.WhichOneof("match")
    if key[0] in ("event_name", "link_trace_id"):
        # The selector names what must be present; `exists: false` asks for its absence.
        absent = which == "exists" and not matcher.exists
        return Condition(index, key, Op.PRESENT, negate != absent)
    if which is None:
        raise PolicyError("no match condition")
    if which in _STRING_CONDITIONS:
        text = getattr(matcher, which)
        op, hs_pattern, flags, re2_pattern = _string_condition(which, text, matcher.case_insensitive)
        return Condition(index, key, op, negate, hs_pattern, flags, re2_pattern, (which, text))
    if which == "exists":
        return Condition(index, key, Op.EXISTS, negate, operand=matcher.exists)
    if which == "equals":
        return _typed_equals(matcher.equals, matcher.case_insensitive, key, index, negate)
    number = getattr(matcher, which)
    kind = number.WhichOneof("value")
    if kind is None:
        raise PolicyError(f"{which} has no value")
    return Condition(index, key, Op.COMPARE, negate, operand=(which, getattr(number, kind)))


# ── keep specs ──────────────────────────────────────────────────────────────


def parse_log_keep(text: str) -> LogKeep:
    """`all` | `none` | `N%` | `N/s` `N/m` `N/Ds` `N/Dm`; PolicyError otherwise."""
    spec = text.strip().lower()
    if spec in ("", "all"):
        return LogKeep("all")
    if spec == "none":
        return LogKeep("none")
    if m := _KEEP_PERCENT.match(spec):
        percent = float(m.group(1))
        if percent > 100:
            raise PolicyError(f'invalid keep "{text}": percentage over 100')
        return LogKeep("percent", percent=percent)
    if m := _KEEP_RATE.match(spec):
        count, windows, unit = int(m.group(1)), m.group(2), m.group(3)
        multiple = int(windows) if windows else 1
        if count <= 0 or multiple <= 0:
            raise PolicyError(f'invalid keep "{text}": rate and window must be positive integers')
        return LogKeep("rate", rate=count, window_s=multiple * (60.0 if unit == "m" else 1.0))
    raise PolicyError(f'invalid keep "{text}": expected all, none, N%, N/s, N/m, N/Ds or N/Dm')


def parse_trace_keep(config: pb.TraceSamplingConfig) -> TraceKeep:
    """Validate percentage, mode and precision of a trace sampling config."""
    if not 0.0 <= config.percentage <= 100.0:
        raise PolicyError(f"percentage {config.percentage:g} out of range 0..100")
    mode = config.mode if config.HasField("mode") else pb.SAMPLING_MODE_HASH_SEED
    if mode == pb.SAMPLING_MODE_UNSPECIFIED:
        mode = pb.SAMPLING_MODE_HASH_SEED
    if mode not in (pb.SAMPLING_MODE_HASH_SEED, pb.SAMPLING_MODE_PROPORTIONAL, pb.SAMPLING_MODE_EQUALIZING):
        raise PolicyError(f"unknown sampling mode {mode}")
    precision = config.sampling_precision if config.HasField("sampling_precision") else 4
    if not 1 <= precision <= 14:
        raise PolicyError(f"sampling_precision {precision} out of range 1..14")
    return TraceKeep(
        percentage=config.percentage,
        mode=mode,
        precision=precision,
        hash_seed=config.hash_seed if config.HasField("hash_seed") else 0,
        fail_closed=config.fail_closed if config.HasField("fail_closed") else True,
    )


# ── policies ────────────────────────────────────────────────────────────────


class _Errors:
    """Collects `signal: where: what` messages while a policy compiles."""

    def __init__(self, signal: str) -> None:
        self.signal = signal
        self.messages: list[str] = []

    def run(self, where: str, step, *args):
        try:
            return step(*args)
        except PolicyError as exc:
            self.messages.append(f"{self.signal}: {where}: {exc}")
            return None


def _transform_key(message, oneof: str = "field", prefix: str = "") -> FieldKey:
    """field_key for a transform entry: the fields matchers may only read are refused here."""
    key = field_key(message, oneof, prefix)
    if key in LOG_READ_ONLY:
        name = pb.LogField.Name(key[1])[len("LOG_FIELD_"):].lower()
        raise PolicyError(f"log_field {name} can be matched but not transformed")
    return key


def _compile_transform(transform: pb.LogTransform, errors: _Errors) -> Transform:
    out = Transform()
    for i, item in enumerate(transform.remove):
        key = errors.run(f"transform: remove[{i}]", _transform_key, item)
        if key is not None:
            out.remove.append(key)
    for i, item in enumerate(transform.redact):
        key = errors.run(f"transform: redact[{i}]", _transform_key, item)
        regex = item.regex if item.HasField("regex") else None
        if regex is not None and errors.run(f"transform: redact[{i}]", compile_re2, regex) is None:
            continue
        if key is not None:
            out.redact.append(Redact(key, item.replacement or "[REDACTED]", regex))
    for i, item in enumerate(transform.rename):
        key = errors.run(f"transform: rename[{i}]", _transform_key, item, "from", "from_")
        if not item.to:
            errors.messages.append(f"{errors.signal}: transform: rename[{i}]: empty 'to'")
        elif key is not None:
            out.rename.append(Rename(key, item.to, item.upsert))
    for i, item in enumerate(transform.add):
        key = errors.run(f"transform: add[{i}]", _transform_key, item)
        if key is not None:
            out.add.append(Add(key, item.value, item.upsert))
    return out


class _Builder:
    """Accumulates the per-signal condition tables while policies compile."""

    def __init__(self) -> None:
        self.plans = {signal: SignalPlan(signal) for signal in model.SIGNALS}

    def compile_policy(self, policy: pb.Policy) -> CompiledPolicy:
        signal = policy.WhichOneof("target")
        compiled = CompiledPolicy(policy.id, policy.name, signal, policy.enabled)
        if signal is None:
            compiled.errors.append("policy has no log, metric or trace target")
            return compiled
        errors = _Errors(signal)
        target = getattr(policy, signal)
        plan = self.plans[signal]
        conditions: list[Condition] = []
        if not target.match:
            errors.messages.append(f"{signal}: match: at least one matcher is required")
        for i, matcher in enumerate(target.match):
            condition = errors.run(f"match[{i}]", build_condition, matcher, len(plan.conditions) + len(conditions))
            if condition is not None:
                conditions.append(condition)
        if signal == LOG:
            compiled.log_keep = errors.run("keep", parse_log_keep, target.keep)
            if target.HasField("sample_key"):
                compiled.sample_key = errors.run("sample_key", field_key, target.sample_key)
            if target.HasField("transform"):
                compiled.transform = _compile_transform(target.transform, errors) or None
        elif signal == METRIC:
            compiled.metric_keep = target.keep
        elif signal == TRACE:
            if target.HasField("keep"):
                compiled.trace_keep = errors.run("keep", parse_trace_keep, target.keep)
            else:
                errors.messages.append(f"{signal}: keep: a sampling config is required")
        compiled.extensions = [
            ExtensionSpec(ext.type, ext.version, ext.config, ext.mode or pb.EXTENSION_MODE_MATCHED)
            for ext in policy.extensions
        ]
        compiled.errors = errors.messages
        if compiled.valid:
            compiled.conditions = [c.index for c in conditions]
            plan.conditions.extend(conditions)
        return compiled

    def finish(self, compiled: list[CompiledPolicy]) -> dict[str, SignalPlan]:
        for policy in compiled:
            if policy.valid:
                self.plans[policy.signal].policies.append(policy)
        for plan in self.plans.values():
            _plan_fields(plan)
        return self.plans


def _plan_fields(plan: SignalPlan) -> None:
    """Group conditions per field and build each field's match tables."""
    strings: dict[FieldKey, list[Condition]] = {}
    for condition in plan.conditions:
        fp = plan.fields.setdefault(condition.field, FieldPlan(condition.field))
        if condition.op is Op.STRING:
            strings.setdefault(condition.field, []).append(condition)
        else:
            fp.typed.append(condition.index)
    for key, conditions in strings.items():
        build_tables(plan.fields[key], conditions)


def compile_policies(policies: Iterable[pb.Policy], *, version: str = "", load_errors: Iterable[str] = ()
                     ) -> Snapshot:
    """Compile a policy set. Duplicate ids: the last definition wins (providers merge by id)."""
    by_id: dict[str, pb.Policy] = {}
    for policy in policies:
        by_id[policy.id] = policy
    builder = _Builder()
    compiled = [builder.compile_policy(by_id[pid]) for pid in sorted(by_id, key=lambda s: s.encode())]
    plans = builder.finish(compiled)
    return Snapshot(version=version, policies=compiled, plans=plans, load_errors=list(load_errors))
