"""The words a user sees when a policy document is wrong.

The reader is lenient about *how* a key or value is spelled (docs/policies.md §1), but a
key that means nothing, or a value of the wrong kind, used to be dropped silently: a
redaction policy with `redcat:` loaded and never redacted. Every such problem is now an
error, phrased in the user's terms: the policy id (or its position), the key path as it
appears in the file, and what was expected. Protobuf's own messages (message type names,
"oneof", "Failed to parse ... field") never reach the user; this module is where they are
translated.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

_INT_TYPES = frozenset({
    FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64,
    FieldDescriptor.TYPE_SFIXED32, FieldDescriptor.TYPE_SFIXED64, FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
})
_FLOAT_TYPES = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


def key_path(parent: str, key: Any) -> str:
    """`log` + `match` -> `log.match`; list positions are appended by the caller as `[i]`."""
    return f"{parent}.{key}" if parent else str(key)


def accepted_keys(descriptor: Descriptor) -> list[str]:
    """Every key the reader accepts at this level, in both spellings (`log_field`, `logField`)."""
    keys: list[str] = []
    for fd in descriptor.fields:
        keys.append(fd.name)
        if fd.json_name != fd.name:
            keys.append(fd.json_name)
    return keys


def unknown_key(parent: str, key: Any, descriptor: Descriptor) -> str:
    """`unknown key 'log.kep' (did you mean 'keep'?)`, or the list of keys that are allowed."""
    where = key_path(parent, key)
    close = difflib.get_close_matches(str(key), accepted_keys(descriptor), n=1)
    if close:
        return f"unknown key '{where}' (did you mean '{close[0]}'?)"
    names = ", ".join(fd.name for fd in descriptor.fields)
    return f"unknown key '{where}'; expected one of: {names}"


def enum_choices(enum: EnumDescriptor, prefix: str) -> list[str]:
    """The short lowercase spellings of an enum's values (`body`, `severity_text`, ...)."""
    return [v.name[len(prefix):].lower() for v in enum.values if v.number != 0]


def unknown_enum_value(path: str, raw: Any, choices: list[str]) -> str:
    return f"'{path}' has unknown value {raw!r}; expected one of: {', '.join(choices)}"


def both_set(path: str, first: str, second: str) -> str:
    """Two keys of the same either/or group (a oneof): only one of them may be given."""
    return f"'{key_path(path, first)}' and '{key_path(path, second)}' cannot both be set; choose one"


def describe(raw: Any) -> str:
    """The kind of a value in the words of a JSON/YAML author, not Python type names."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true/false"
    if isinstance(raw, (int, float)):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__


def wrong_kind(path: str, expected: str, raw: Any) -> str:
    return f"'{path}' must be {expected}, got {describe(raw)}"


def _is_number(raw: Any, integral: bool) -> bool:
    if isinstance(raw, bool):
        return False
    if isinstance(raw, int) or (isinstance(raw, float) and not integral):
        return True
    if isinstance(raw, str):
        try:
            int(raw) if integral else float(raw)
        except ValueError:
            return False
        return True
    return False


def scalar_problem(fd: FieldDescriptor, path: str, raw: Any) -> str | None:
    """The value of a string, bool or number field has the wrong kind (bytes and enums are checked elsewhere)."""
    if fd.type == FieldDescriptor.TYPE_STRING and not isinstance(raw, str):
        return wrong_kind(path, "a string", raw)
    if fd.type == FieldDescriptor.TYPE_BOOL and not isinstance(raw, bool):
        return wrong_kind(path, "true or false", raw)
    if fd.type in _INT_TYPES and not _is_number(raw, integral=True):
        return wrong_kind(path, "a whole number", raw)
    if fd.type in _FLOAT_TYPES and not _is_number(raw, integral=False):
        return wrong_kind(path, "a number", raw)
    return None


def missing_id() -> str:
    return "missing 'id' (every policy needs a unique id)"


def duplicate_ids(ids: Iterable[Any]) -> str | None:
    """`duplicate policy id 'a' (policies #0 and #2)` for the first id given twice, else None."""
    first_seen: dict[Any, int] = {}
    for position, ident in enumerate(ids):
        if not isinstance(ident, str) or not ident:
            continue
        if ident in first_seen:
            return f"duplicate policy id '{ident}' (policies #{first_seen[ident]} and #{position}); ids must be unique"
        first_seen[ident] = position
    return None


_PARSE_PREFIX = re.compile(r"^(?:Failed to parse \w+ field: )+")
_PROTO_DETAIL = re.compile(r"\s*(?:at \"?[\w.\[\]]+\"?\.?|Message type \"[\w.]+\"\s*)")


def translate_parse_error(text: str) -> str:
    """Last resort for a decoder message the checks above did not pre-empt: keep its gist, drop
    the protobuf vocabulary (field-parse prefixes, message type names, internal paths)."""
    first = text.splitlines()[0] if text else ""
    fields = re.findall(r"Failed to parse (\w+) field", first)
    gist = _PROTO_DETAIL.sub(" ", _PARSE_PREFIX.sub("", first)).strip().rstrip(".")
    gist = gist.replace("oneof", "either/or").strip()
    if fields:
        return f"invalid value for '{'.'.join(fields)}': {gist}"
    return f"invalid policy: {gist}"


def document_problem(doc: Any, source: str) -> str | None:
    """Why a parsed document holds no `policies` list, in words a user can act on; None if it does."""
    expected = "expected an object with a 'policies' list"
    if doc is None:
        return f"{source}: the document is empty; {expected}"
    if isinstance(doc, list):
        return f"{source}: the document is an empty list; {expected}" if not doc else None
    if not isinstance(doc, dict):
        return f"{source}: {expected}, got {describe(doc)}"
    if "policies" not in doc:
        close = difflib.get_close_matches("policies", [str(k) for k in doc], n=1)
        if close:
            return f"{source}: no 'policies' key (found '{close[0]}': did you mean 'policies'?)"
        found = ", ".join(repr(str(k)) for k in list(doc)[:5]) or "none"
        return f"{source}: no 'policies' key (found keys: {found}); {expected}"
    if not isinstance(doc["policies"], list):
        return f"{source}: 'policies' must be a list, got {describe(doc['policies'])}"
    return None
