"""`tail_sampling.policies` as users write them for the OpenTelemetry Collector, checked at load.

Each policy is `{name, type, <type>: {...}}`; the type's own sub-key holds its fields. A
policy is returned as a plain dict of the same shape with every optional field filled in,
so the decider compiles it without re-checking and the resolved config (a JSON document the
supervisor hands to its children) carries it unchanged. Every problem is one line naming
the policy by index and name, because a sampler that silently ignores a policy keeps or
drops the wrong traces for as long as nobody looks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from copy import copy
from dataclasses import dataclass
from typing import Any

import re2

Policy = dict[str, Any]  # {"name": str, "type": str, <type>: {field: value}}
Checker = Callable[[str, Any], Any]

STATUS_CODES = ("OK", "ERROR", "UNSET")
MAX_INT64 = (1 << 63) - 1  # the Collector's int64 fields; and orjson writes no larger integer
DEFAULT_REGEX_CACHE = 128  # the Collector's string_attribute cache size when `cache_max_size` is 0
OTTL_MESSAGE = ("ottl_condition is not supported; express the condition with the other policy types "
                "(string_attribute, numeric_attribute, status_code, ...) or as an edge trace policy")


_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # a bad pattern is our one-line error, not RE2's own line on stderr


class PolicyConfigError(ValueError):
    """One policy problem, worded as one line starting with the key's path."""


def compile_regex(pattern: str) -> re2._Regexp:
    """RE2, as the Collector's Go regexp (same syntax, unanchored search); raises re2.error."""
    return re2.compile(pattern, _RE2_OPTIONS)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a policy type: how its value is checked, whether it must be given, its default."""

    check: Checker
    required: bool = False
    default: Any = None


# ── value checks (each gets the field's path for its message) ──


def _int(where: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyConfigError(f"{where}: expected an integer, got {value!r}")
    if not 0 <= value <= MAX_INT64:
        raise PolicyConfigError(f"{where}: expected 0..{MAX_INT64}, got {value}")
    return value


def _number(where: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -MAX_INT64 <= value <= MAX_INT64:
        raise PolicyConfigError(f"{where}: expected a number, got {value!r}")
    return value  # NaN fails the range check; the bound keeps the value JSON-serialisable for the workers


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PolicyConfigError(f"{where}: expected true or false, got {value!r}")
    return value


def _str(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise PolicyConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _key(where: str, value: Any) -> str:
    if not _str(where, value):
        raise PolicyConfigError(f"{where}: must not be empty")
    return value


def _strings(where: str, value: Any) -> list[str]:
    if not isinstance(value, list):
        raise PolicyConfigError(f"{where}: expected a list of strings, got {value!r}")
    return [_str(f"{where}[{i}]", item) for i, item in enumerate(value)]


def _some_strings(where: str, value: Any) -> list[str]:
    values = _strings(where, value)
    if not values:
        raise PolicyConfigError(f"{where}: must name at least one value")
    return values


def _status_codes(where: str, value: Any) -> list[str]:
    codes = _some_strings(where, value)
    for i, code in enumerate(codes):
        if code not in STATUS_CODES:
            raise PolicyConfigError(f"{where}[{i}]: expected OK, ERROR or UNSET, got {code!r}")
    return codes


def _percentage(where: str, value: Any) -> float:
    number = float(_number(where, value))
    if not 0 <= number <= 100:
        raise PolicyConfigError(f"{where}: expected 0..100, got {value!r}")
    return number


def _positive_int(where: str, value: Any) -> int:
    if _int(where, value) == 0:
        raise PolicyConfigError(f"{where}: must be positive")
    return value


def _allocations(where: str, value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        raise PolicyConfigError(f"{where}: expected a list of {{policy, percent}}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise PolicyConfigError(f"{where}[{i}]: expected an object {{policy, percent}}")
        percent = _int(f"{where}[{i}].percent", item.get("percent", 0))
        if percent > 100:
            raise PolicyConfigError(f"{where}[{i}].percent: expected 0..100, got {percent}")
        out.append({"policy": _key(f"{where}[{i}].policy", item.get("policy")), "percent": percent})
    return out


def _sub_policies(allowed: frozenset[str]) -> Checker:
    """A list of sub-policies, each limited to the types `allowed` at that depth (as in the Collector)."""
    def check(where: str, value: Any) -> list[Policy]:
        if not isinstance(value, list) or not value:
            raise PolicyConfigError(f"{where}: expected a non-empty list of policies")
        policies = [_policy(f"{where}[{i}]", item, allowed) for i, item in enumerate(value)]
        _unique_names(where, policies)
        return policies
    return check


# ── the types: each reads the sub-key named after it ──

SHARED_TYPES = frozenset({"always_sample", "latency", "status_code", "numeric_attribute", "string_attribute",
                          "boolean_attribute", "probabilistic", "rate_limiting", "bytes_limiting", "span_count",
                          "trace_state"})
COMPOSITE_SUB_TYPES = SHARED_TYPES | {"and"}
TOP_LEVEL_TYPES = SHARED_TYPES | {"and", "drop", "composite"}

FIELDS: Mapping[str, Mapping[str, Field]] = {
    "always_sample": {},
    "latency": {"threshold_ms": Field(_int, required=True), "upper_threshold_ms": Field(_int, default=0)},
    "status_code": {"status_codes": Field(_status_codes, required=True)},
    "numeric_attribute": {"key": Field(_key, required=True), "min_value": Field(_number),
                          "max_value": Field(_number), "invert_match": Field(_bool, default=False)},
    "string_attribute": {"key": Field(_key, required=True), "values": Field(_some_strings, required=True),
                         "enabled_regex_matching": Field(_bool, default=False),
                         "cache_max_size": Field(_int, default=0), "invert_match": Field(_bool, default=False)},
    "boolean_attribute": {"key": Field(_key, required=True), "value": Field(_bool, required=True),
                          "invert_match": Field(_bool, default=False)},
    "probabilistic": {"hash_salt": Field(_str, default=""),
                      "sampling_percentage": Field(_percentage, required=True)},
    "rate_limiting": {"spans_per_second": Field(_positive_int, required=True)},
    "bytes_limiting": {"bytes_per_second": Field(_positive_int, required=True),
                       "burst_capacity": Field(_int, default=0)},
    "span_count": {"min_spans": Field(_int, required=True), "max_spans": Field(_int, default=0)},
    "trace_state": {"key": Field(_key, required=True), "values": Field(_some_strings, required=True)},
    "and": {"and_sub_policy": Field(_sub_policies(SHARED_TYPES), required=True)},
    "drop": {"drop_sub_policy": Field(_sub_policies(SHARED_TYPES), required=True)},
    "composite": {"max_total_spans_per_second": Field(_positive_int, required=True),
                  "policy_order": Field(_strings, default=[]),
                  "composite_sub_policy": Field(_sub_policies(COMPOSITE_SUB_TYPES), required=True),
                  "rate_allocation": Field(_allocations, default=[])},
}


# ── cross-field rules of one type ──


def _latency(where: str, spec: dict[str, Any]) -> None:
    if spec["upper_threshold_ms"] and spec["upper_threshold_ms"] <= spec["threshold_ms"]:
        raise PolicyConfigError(f"{where}.upper_threshold_ms: must be above threshold_ms (or 0: no upper bound)")


def _numeric(where: str, spec: dict[str, Any]) -> None:
    low, high = spec["min_value"], spec["max_value"]
    if low is None and high is None:
        raise PolicyConfigError(f"{where}: needs min_value, max_value or both")
    if low is not None and high is not None and low > high:
        raise PolicyConfigError(f"{where}: min_value {low} is above max_value {high}")


def _string(where: str, spec: dict[str, Any]) -> None:
    if not spec["enabled_regex_matching"]:
        return
    for i, pattern in enumerate(spec["values"]):
        try:
            compile_regex(pattern)
        except re2.error as exc:
            reason = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
            raise PolicyConfigError(f"{where}.values[{i}]: invalid regex {pattern!r}: {reason}") from None


def _span_count(where: str, spec: dict[str, Any]) -> None:
    if spec["max_spans"] and spec["max_spans"] < spec["min_spans"]:
        raise PolicyConfigError(f"{where}.max_spans: must be at least min_spans (or 0: no maximum)")


def _composite(where: str, spec: dict[str, Any]) -> None:
    names = {sub["name"] for sub in spec["composite_sub_policy"]}
    for i, name in enumerate(spec["policy_order"]):
        if name not in names:
            raise PolicyConfigError(f"{where}.policy_order[{i}]: no composite_sub_policy is named {name!r}")
    for i, allocation in enumerate(spec["rate_allocation"]):
        if allocation["policy"] not in names:
            raise PolicyConfigError(f"{where}.rate_allocation[{i}].policy: no composite_sub_policy is named "
                                    f"{allocation['policy']!r}")
    if sum(a["percent"] for a in spec["rate_allocation"]) > 100:
        raise PolicyConfigError(f"{where}.rate_allocation: the percents add up to more than 100")


RULES: Mapping[str, Callable[[str, dict[str, Any]], None]] = {
    "latency": _latency, "numeric_attribute": _numeric, "string_attribute": _string, "span_count": _span_count,
    "composite": _composite,
}


# ── policies ──


def validate_policies(path: str, raw: Any) -> tuple[tuple[Policy, ...], list[str]]:
    """The top-level list at `path`: validated policies with defaults filled in, and warnings for unknown keys."""
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise PolicyConfigError(f"config key {path}: expected a list of policies")
    policies = [_policy(f"config key {path}[{i}]", item, TOP_LEVEL_TYPES) for i, item in enumerate(raw)]
    _unique_names(f"config key {path}", policies)
    return tuple(policies), [w for i, item in enumerate(raw) for w in _unknown_keys(f"{path}[{i}]", item)]


def _policy(where: str, item: Any, allowed: frozenset[str]) -> Policy:
    if not isinstance(item, dict):
        raise PolicyConfigError(f"{where}: expected an object {{name, type, <type>: {{...}}}}")
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise PolicyConfigError(f"{where}: every policy needs a name")
    where = f"{where} ({name})"
    kind = item.get("type")
    if kind == "ottl_condition":
        raise PolicyConfigError(f"{where}: {OTTL_MESSAGE}")
    if kind not in allowed:
        raise PolicyConfigError(f"{where}: {_type_problem(kind, allowed)}")
    spec = item.get(kind)
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        raise PolicyConfigError(f"{where}: {kind}: expected an object")
    values = _fields(f"{where}: {kind}", FIELDS[kind], spec)
    if kind in RULES:
        RULES[kind](f"{where}: {kind}", values)
    return {"name": name, "type": kind, kind: values}


def _type_problem(kind: Any, allowed: frozenset[str]) -> str:
    expected = ", ".join(sorted(allowed))
    if kind is None:
        return f"type is missing; expected one of {expected}"
    if kind in TOP_LEVEL_TYPES:
        return f"a {kind} policy cannot be nested here; expected one of {expected}"
    return f"unknown policy type {kind!r}; expected one of {expected}"


def _fields(where: str, fields: Mapping[str, Field], spec: Mapping[str, Any]) -> dict[str, Any]:
    values = {}
    for name, field in fields.items():
        if spec.get(name) is not None:
            values[name] = field.check(f"{where}.{name}", spec[name])
        elif field.required:
            raise PolicyConfigError(f"{where}.{name}: required")
        else:
            values[name] = copy(field.default)  # a default list is never shared between policies
    return values


def _unique_names(where: str, policies: list[Policy]) -> None:
    seen: set[str] = set()
    for policy in policies:
        if policy["name"] in seen:
            raise PolicyConfigError(f"{where}: two policies are named {policy['name']!r}; names must be unique")
        seen.add(policy["name"])


def _unknown_keys(path: str, item: Mapping[str, Any]) -> list[str]:
    """Keys no policy reads, warned about like unknown config keys elsewhere (sub-policies included)."""
    kind = item["type"]
    out = [f"config key {path}.{k}: unknown, ignored" for k in item if k not in ("name", "type", kind)]
    spec = item.get(kind) or {}
    out += [f"config key {path}.{kind}.{k}: unknown, ignored" for k in spec if k not in FIELDS[kind]]
    for field in ("and_sub_policy", "drop_sub_policy", "composite_sub_policy"):
        if field not in FIELDS[kind]:
            continue  # a stray key of another type: warned above, never read, so never validated
        for i, sub in enumerate(spec.get(field) or []):
            out += _unknown_keys(f"{path}.{kind}.{field}[{i}]", sub)
    return out
