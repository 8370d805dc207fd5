"""RE2 global substitution with the policy template syntax (`$0`, `$1`, `${1}`, `${name}`, `$$`).

google-re2's own `sub` walks matches in Python, decoding offsets and building a match
object per hit (~10-20 µs per call). Redaction runs per record on the request path,
so this module drives the compiled RE2 program directly on UTF-8 bytes with the same
iteration rules (an empty match advances by one character) and builds the output once.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from typing import Any

import re2

_TEMPLATE = re.compile(r"\$(?:\$|(\d{1,2})|\{(\w+)\})")
_UNANCHORED = re2._re2.RE2.Anchor.UNANCHORED
_NULL_SPAN = (-1, -1)

Template = tuple[Any, ...]  # literal bytes and group references (int index or str name)


@lru_cache(maxsize=1024)
def compile_template(template: str) -> Template:
    """`a$1b${name}$$` -> (b"a", 1, b"b", "name", b"$"); adjacent literals merged."""
    parts: list[Any] = []
    pos = 0
    for m in _TEMPLATE.finditer(template):
        parts.append(template[pos:m.start()].encode())
        if m.group(0) == "$$":
            parts.append(b"$")
        else:
            ref = m.group(1) or m.group(2)
            parts.append(int(ref) if ref.isdigit() else ref)
        pos = m.end()
    parts.append(template[pos:].encode())
    merged: list[Any] = []
    for part in parts:
        if isinstance(part, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += part
        elif part != b"":
            merged.append(part)
    return tuple(merged)


def _char_end(data: bytes, pos: int) -> int:
    """The byte offset just after the UTF-8 character starting at pos."""
    pos += 1
    while pos < len(data) and data[pos] & 0xC0 == 0x80:
        pos += 1
    return pos


def substitute(program: Any, template: Template, text: str) -> str:
    """Replace every non-overlapping match of `program` in `text`; missing groups expand to ""."""
    data = text.encode()
    regexp = program._regexp
    names = program.groupindex
    groups = program.groups
    out: list[bytes] = []
    pos, last, end = 0, 0, len(data)
    while True:
        spans = regexp.Match(_UNANCHORED, data, pos, end)
        start, stop = spans[0]
        if (start, stop) == _NULL_SPAN:
            break
        out.append(data[last:start])
        for part in template:
            if part.__class__ is bytes:
                out.append(part)
                continue
            index = part if part.__class__ is int else names.get(part, -1)
            if 0 <= index <= groups and spans[index] != _NULL_SPAN:
                out.append(data[spans[index][0]:spans[index][1]])
        last = stop
        if pos == end:
            break
        pos = _char_end(data, pos) if stop == pos else stop
    if not out:
        return text
    out.append(data[last:])
    try:
        return b"".join(out).decode()
    except UnicodeDecodeError:
        # RE2 reported an empty match inside a multi-byte character (patterns like `x*`);
        # google-re2's own sub works in characters and gets it right, slowly.
        return program.sub(lambda match: _expand_match(template, match), text)


def _expand_match(template: Template, match: Any) -> str:
    out = []
    for part in template:
        if part.__class__ is bytes:
            out.append(part.decode())
            continue
        with contextlib.suppress(IndexError, KeyError):
            out.append(match.group(part) or "")
    return "".join(out)


def check_available() -> None:
    """Fail fast at import if google-re2 changed the internals this module relies on."""
    program = re2.compile("(b)")
    assert substitute(program, compile_template("[$1]"), "abc") == "a[b]c"


check_available()
