"""Read policy documents (JSON or YAML) into `tero.policy.v1.Policy` messages.

Policy files in the wild are written by hand, by three generations of tooling and by
policy servers, so the reader is lenient in exactly the ways docs/policies.md §1 lists:
snake_case and lowerCamelCase keys, enum values as full names, short lowercase names
or numbers, attribute paths as a string / list / `{path: [...]}`, typed values as bare
literals, and extension configs as inline objects. The leniency lives in one
descriptor-driven normaliser, so every message type gets it without a hand-kept table.

A policy that cannot be decoded is skipped with a message; the others still load.
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

from edge.proto.tero.policy.v1 import policy_pb2

Policy = policy_pb2.Policy

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])([A-Z])")


@dataclass
class LoadResult:
    """Policies that decoded, and one message per policy (or document) that did not."""

    policies: list[Policy] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class PolicyFileError(ValueError):
    """The document as a whole is unreadable (not JSON/YAML, or no `policies` list)."""


def snake_case(key: str) -> str:
    """`logField` -> `log_field`; snake_case keys pass through unchanged."""
    return _CAMEL_BOUNDARY.sub(r"_\1", key).lower()


def _enum_prefix(enum: EnumDescriptor) -> str:
    """The shared prefix of an enum's value names (`LOG_FIELD_` for LogField)."""
    zero = enum.values_by_number[0].name
    return zero[: -len("UNSPECIFIED")] if zero.endswith("UNSPECIFIED") else ""


def _enum_value(raw: Any, enum: EnumDescriptor) -> Any:
    """Accept `LOG_FIELD_BODY`, `body`, `BODY` or `1`; leave anything else for the decoder to reject."""
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        return raw
    if isinstance(raw, int):
        return raw
    name = raw.strip().upper()
    if name.isdigit():
        return int(name)
    if name in enum.values_by_name:
        return name
    prefixed = _enum_prefix(enum) + name
    if prefixed in enum.values_by_name:
        return prefixed
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


def _normalise_field(fd: FieldDescriptor, raw: Any) -> Any:
    if fd.type == FieldDescriptor.TYPE_ENUM:
        return _enum_value(raw, fd.enum_type)
    if fd.type == FieldDescriptor.TYPE_BYTES:
        return _opaque_bytes(raw)
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        shorthand = _SHORTHAND_MESSAGES.get(fd.message_type.full_name)
        if shorthand is not None:
            raw = shorthand(raw)
        if isinstance(raw, dict) and fd.message_type.full_name.startswith("tero."):
            return normalise(raw, fd.message_type)
    return raw


def normalise(doc: dict[str, Any], descriptor: Descriptor) -> dict[str, Any]:
    """Rewrite a hand-written message dict into canonical proto-JSON (snake_case keys).

    Unknown keys are kept so the decoder can ignore them; nested OTLP messages
    (KeyValue labels) are left to the decoder, which reads both key styles itself.
    """
    out: dict[str, Any] = {}
    for key, raw in doc.items():
        name = snake_case(key) if isinstance(key, str) else key
        fd = descriptor.fields_by_name.get(name)
        if fd is None:
            out[name] = raw
        elif fd.is_repeated and isinstance(raw, list):
            out[name] = [_normalise_field(fd, item) for item in raw]
        elif fd.is_repeated and fd.message_type is None:
            out[name] = [_normalise_field(fd, raw)]
        else:
            out[name] = _normalise_field(fd, raw)
    return out


def decode_policy(doc: Any) -> Policy:
    """One policy object -> Policy message; raises ValueError with a readable reason."""
    if not isinstance(doc, dict):
        raise ValueError(f"a policy must be an object, got {type(doc).__name__}")
    message = Policy()
    canonical = normalise(doc, Policy.DESCRIPTOR)
    canonical.setdefault("enabled", True)  # docs/policies.md §1: enabled defaults to true (proto3 says false)
    try:
        json_format.ParseDict(canonical, message, ignore_unknown_fields=True)
    except (json_format.ParseError, TypeError, ValueError) as exc:
        raise ValueError(str(exc).splitlines()[0]) from None
    return message


def decode_policies(items: Iterable[Any]) -> LoadResult:
    """Decode each policy independently: one broken policy never takes the others down."""
    result = LoadResult()
    for position, item in enumerate(items):
        try:
            result.policies.append(decode_policy(item))
        except ValueError as exc:
            ident = item.get("id") if isinstance(item, dict) else None
            result.errors.append(f"policy {ident or f'#{position}'}: cannot decode: {exc}")
    return result


def parse_document(text: bytes | str, source: str = "<policies>") -> Any:
    """JSON first (the common case, and faster), YAML as the fallback."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        pass
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{source}: neither JSON nor YAML: {str(exc).splitlines()[0]}") from None


def load_document(doc: Any, source: str = "<policies>") -> LoadResult:
    """`{"policies": [...]}` (a bare list is accepted too) -> LoadResult."""
    if isinstance(doc, dict):
        items = doc.get("policies", [])
    elif isinstance(doc, list):
        items = doc
    elif doc is None:
        items = []
    else:
        raise PolicyFileError(f"{source}: expected an object with a 'policies' list")
    if not isinstance(items, list):
        raise PolicyFileError(f"{source}: 'policies' must be a list")
    return decode_policies(items)


def load_file(path: str | Path) -> LoadResult:
    """Read and decode a policy file; raises PolicyFileError when the file itself is bad."""
    path = Path(path)
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise PolicyFileError(f"{path}: {exc.strerror or exc}") from None
    return load_document(parse_document(text, str(path)), str(path))
