"""Read policy documents (JSON or YAML) into `tero.policy.v1.Policy` messages.

Policy files in the wild are written by hand, by three generations of tooling and by
policy servers, so the reader is lenient in exactly the ways docs/policies.md §1 lists:
snake_case and lowerCamelCase keys, enum values as full names, short lowercase names
or numbers, attribute paths as a string / list / `{path: [...]}`, typed values as bare
literals, and extension configs as inline objects. The leniency lives in one
descriptor-driven normaliser, so every message type gets it without a hand-kept table.

A policy that cannot be decoded, has no id or holds a key that means nothing is skipped
with a message naming its id and the key path; the others still load. A document without
a `policies` list, or with two policies of one id, is refused whole (PolicyFileError).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from edge.policy import validation
from edge.proto.tero.policy.v1 import policy_pb2

Policy = policy_pb2.Policy

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])([A-Z])")


@dataclass
class LoadResult:
    """Policies that decoded, and one message per policy (or document) that did not."""

    policies: list[Policy] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PolicyFileError(ValueError):
    """The document as a whole is refused (not JSON/YAML, no `policies` list, duplicate ids)."""


def snake_case(key: str) -> str:
    """`logField` -> `log_field`; snake_case keys pass through unchanged."""
    return _CAMEL_BOUNDARY.sub(r"_\1", key).lower()


def _enum_prefix(enum: EnumDescriptor) -> str:
    """The shared prefix of an enum's value names (`LOG_FIELD_` for LogField)."""
    zero = enum.values_by_number[0].name
    return zero[: -len("UNSPECIFIED")] if zero.endswith("UNSPECIFIED") else ""


# OpenTelemetry names of values the policy enums spell otherwise: an unset span status is the
# enum's 0, as STATUS_CODE_UNSET is 0 in OTLP (the compiler reads span_status 0 as "unset").
_ENUM_ALIASES: dict[str, dict[str, str]] = {
    "SpanStatusCode": {name: "SPAN_STATUS_CODE_UNSPECIFIED"
                       for name in ("UNSET", "STATUS_CODE_UNSET", "SPAN_STATUS_CODE_UNSET")},
}


def enum_aliases(enum: EnumDescriptor) -> list[str]:
    """The short lowercase alias names of an enum (`unset`), for error messages listing the choices."""
    return [name.lower() for name in _ENUM_ALIASES.get(enum.name, {}) if "_" not in name]


def _enum_value(raw: Any, enum: EnumDescriptor) -> Any:
    """Accept `LOG_FIELD_BODY`, `body`, `BODY`, `log_body` or `1`; leave anything else for the decoder to reject."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return raw
    if isinstance(raw, int):
        return raw
    name = raw.strip().upper()
    if name.isdigit():
        return int(name)
    if name in enum.values_by_name:
        return name
    prefix = _enum_prefix(enum)
    prefixed = prefix + name
    if prefixed in enum.values_by_name:
        return prefixed
    alias = _ENUM_ALIASES.get(enum.name, {}).get(name)
    if alias is not None:
        return alias
    # `log_severity_number`, `metric_name`: the signal's name before the field's (Tero Edge's match keys)
    signal = prefix.split("_", 1)[0] + "_"
    if prefix.endswith("_FIELD_") and name.startswith(signal) and prefix + name[len(signal):] in enum.values_by_name:
        return prefix + name[len(signal):]
    # OTLP spells span status values STATUS_CODE_OK; the policy enum says SPAN_STATUS_CODE_OK.
    if ("SPAN_" + name) in enum.values_by_name:
        return "SPAN_" + name
    raise ValueError(f"unknown {enum.name} value {raw!r}")


def _literal_value(raw: Any) -> Any:
    """A bare literal for a typed `Value` (`200`, `0.5`, `true`, `"checkout"`)."""
    if isinstance(raw, bool):
        return {"bool_value": raw}
    if isinstance(raw, int):
        return {"int_value": str(raw)}
    if isinstance(raw, float):
        return {"double_value": raw}
    if isinstance(raw, str):
        return {"string_value": raw}
    return raw


def _literal_numeric(raw: Any) -> Any:
    """A bare number for a `NumericValue`; numeric strings are accepted too."""
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, int):
        return {"int_value": str(raw)}
    if isinstance(raw, float):
        return {"double_value": raw}
    if isinstance(raw, str):
        try:
            return {"int_value": str(int(raw))}
        except ValueError:
            try:
                return {"double_value": float(raw)}
            except ValueError:
                return raw
    return raw


def _opaque_bytes(raw: Any) -> Any:
    """Extension configs may be inline objects: carry them as their JSON bytes."""
    if isinstance(raw, (dict, list)):
        return base64.b64encode(orjson.dumps(raw)).decode()
    return raw


_SHORTHAND_MESSAGES = {
    "tero.policy.v1.AttributePath": lambda raw: {"path": [raw]} if isinstance(raw, str)
    else {"path": list(raw)} if isinstance(raw, list) else raw,
    "tero.policy.v1.Value": _literal_value,
    "tero.policy.v1.NumericValue": _literal_numeric,
}


class PolicyProblems(ValueError):
    """Everything wrong with one policy, each a user-facing message without the policy prefix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def _normalise_enum(fd: FieldDescriptor, raw: Any, path: str, problems: list[str]) -> Any:
    try:
        value = _enum_value(raw, fd.enum_type)
    except ValueError:
        choices = validation.enum_choices(fd.enum_type, _enum_prefix(fd.enum_type)) + enum_aliases(fd.enum_type)
        problems.append(validation.unknown_enum_value(path, raw, choices))
        return raw
    if not isinstance(value, (str, int)):
        problems.append(validation.wrong_kind(path, "a name", raw))
    return value


def _normalise_message(fd: FieldDescriptor, raw: Any, path: str, problems: list[str]) -> Any:
    shorthand = _SHORTHAND_MESSAGES.get(fd.message_type.full_name)
    if shorthand is not None:
        raw = shorthand(raw)
    if not fd.message_type.full_name.startswith("tero."):
        return raw  # OTLP messages (KeyValue labels): the decoder reads both key styles itself
    if not isinstance(raw, dict):
        problems.append(validation.wrong_kind(path, "an object", raw))
        return raw
    return normalise(raw, fd.message_type, problems, path)


def _normalise_field(fd: FieldDescriptor, raw: Any, path: str, problems: list[str]) -> Any:
    if raw is None:
        return raw  # an empty YAML value: the field stays unset, as proto-JSON says for null
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _normalise_enum(fd, raw, path, problems)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        raw = _opaque_bytes(raw)
        if not isinstance(raw, str):
            problems.append(validation.wrong_kind(path, "an object or a base64 string", raw))
        return raw
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        return _normalise_message(fd, raw, path, problems)
    problem = validation.scalar_problem(fd, path, raw)
    if problem:
        problems.append(problem)
    return raw


def _normalise_repeated(fd: FieldDescriptor, raw: Any, path: str, problems: list[str]) -> Any:
    if isinstance(raw, list):
        return [_normalise_field(fd, item, f"{path}[{i}]", problems) for i, item in enumerate(raw)]
    if fd.message_type is None and raw is not None:
        return [_normalise_field(fd, raw, path, problems)]
    if raw is not None:
        problems.append(validation.wrong_kind(path, "a list", raw))
    return raw


def _claim_oneof(fd: FieldDescriptor, key: str, claimed: dict[str, str], path: str, problems: list[str]) -> None:
    """Two keys of one either/or group would make the decoder pick neither: say which two."""
    group = fd.containing_oneof
    if group is None or group.name.startswith("_"):  # `optional` fields sit in synthetic groups
        return
    if group.name in claimed:
        problems.append(validation.both_set(path, claimed[group.name], key))
    else:
        claimed[group.name] = key


def normalise(doc: dict[str, Any], descriptor: Descriptor, problems: list[str] | None = None,
              path: str = "") -> dict[str, Any]:
    """Rewrite a hand-written message dict into canonical proto-JSON (snake_case keys).

    Spelling variants are accepted; anything that still means nothing (an unknown key, a
    value of the wrong kind, two keys of one either/or group) is added to `problems` with
    its key path, because dropping it silently loads a policy that does not do what its
    author wrote.
    """
    problems = [] if problems is None else problems
    out: dict[str, Any] = {}
    claimed: dict[str, str] = {}
    for key, raw in doc.items():
        name = snake_case(key) if isinstance(key, str) else key
        fd = descriptor.fields_by_name.get(name)
        where = validation.key_path(path, key)
        if fd is None:
            problems.append(validation.unknown_key(path, key, descriptor))
            continue
        if raw is not None:
            _claim_oneof(fd, str(key), claimed, path, problems)
        if fd.is_repeated:
            out[name] = _normalise_repeated(fd, raw, where, problems)
        else:
            out[name] = _normalise_field(fd, raw, where, problems)
    return out


def decode_policy(doc: Any) -> Policy:
    """One policy object -> Policy message; raises PolicyProblems with readable reasons."""
    if not isinstance(doc, dict):
        raise PolicyProblems([f"cannot decode: a policy must be an object, got {validation.describe(doc)}"])
    problems: list[str] = []
    canonical = normalise(doc, Policy.DESCRIPTOR, problems)
    if canonical.get("id") in (None, ""):
        problems.insert(0, validation.missing_id())
    if problems:
        raise PolicyProblems(problems)
    canonical.setdefault("enabled", True)  # docs/policies.md §1: enabled defaults to true (proto3 says false)
    message = Policy()
    try:
        json_format.ParseDict(canonical, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise PolicyProblems([f"cannot decode: {validation.translate_parse_error(str(exc))}"]) from None
    return message


def decode_policies(items: Iterable[Any], source: str = "policy document") -> LoadResult:
    """Decode each policy independently: one broken policy never takes the others down.

    Duplicate ids are the exception: which of the two the user meant cannot be guessed, so
    the whole document is refused (PolicyFileError) and the caller keeps what it had.
    """
    items = list(items)
    duplicate = validation.duplicate_ids(item.get("id") if isinstance(item, dict) else None for item in items)
    if duplicate:
        raise PolicyFileError(f"{source}: {duplicate}")
    result = LoadResult()
    for position, item in enumerate(items):
        try:
            result.policies.append(decode_policy(item))
        except PolicyProblems as exc:
            ident = item.get("id") if isinstance(item, dict) else None
            label = ident if isinstance(ident, str) and ident else f"#{position}"
            result.errors.append(f"policy {label}: {'; '.join(exc.problems)}")  # one line per policy
    return result


def _json_error(exc: orjson.JSONDecodeError, source: str) -> str:
    return f"{source}: neither JSON nor YAML (JSON error at line {exc.lineno}, column {exc.colno}: {exc.msg})"


def _yaml_error(exc: yaml.YAMLError, source: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    if mark is None:
        return f"{source}: neither JSON nor YAML (YAML error: {problem})"
    return f"{source}: neither JSON nor YAML (YAML error at line {mark.line + 1}, column {mark.column + 1}: {problem})"


def parse_document(text: bytes | str, source: str = "<policies>") -> Any:
    """JSON first (the common case, and faster), YAML as the fallback.

    When both fail, the error of the format the text looks like is the one reported (a
    leading `{` or `[` means JSON), with its line and column, so the user can find it.
    """
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        json_error = exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        head = text.lstrip()[:1]
        if head in (b"{", b"[", "{", "["):
            raise PolicyFileError(_json_error(json_error, source)) from None
        raise PolicyFileError(_yaml_error(exc, source)) from None


def load_document(doc: Any, source: str = "<policies>") -> LoadResult:
    """`{"policies": [...]}` (a non-empty bare list is accepted too) -> LoadResult.

    A document with no `policies` list is refused rather than read as "no policies": an
    empty file, a typo'd `polices:` or a proxy config given by mistake would otherwise
    validate as "0 policies OK" and, in a provider, drop every policy.
    """
    problem = validation.document_problem(doc, source)
    if problem:
        raise PolicyFileError(problem)
    items = doc if isinstance(doc, list) else doc["policies"]
    return decode_policies(items, source)


def load_file(path: str | Path) -> LoadResult:
    """Read and decode a policy file; raises PolicyFileError when the file itself is bad."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PolicyFileError(f"{path}: {exc.strerror or exc}") from None
    return load_document(parse_document(text, str(path)), str(path))
