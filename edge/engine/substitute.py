"""RE2 global substitution with the policy template syntax (`$0`, `$1`, `${1}`, `${name}`, `$$`).

google-re2's own `sub` walks matches in Python, decoding offsets and building a match
object per hit (~10-20 µs per call). Redaction runs per record on the request path,
so this module drives the compiled RE2 program directly on UTF-8 bytes with the same
iteration rules (an empty match advances by one character) and builds the output once.
"""

from __future__ import annotations

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


class Substitution:
    """A redaction's RE2 program with its template resolved against the program's groups.

    Built once per (pattern, template) and snapshot: google-re2 rebuilds `groupindex`
    as a dict on every access, which per record cost more than the match itself.
    """

    __slots__ = ("program", "match", "parts")

    def __init__(self, program: Any, template: str) -> None:
        self.program = program
        self.match = program._regexp.Match
        names, groups = program.groupindex, program.groups
        parts: list[bytes | int] = []
        for part in compile_template(template):
            if part.__class__ is bytes:
                if parts and parts[-1].__class__ is bytes:
                    parts[-1] += part  # literals around a dropped reference join up
                else:
                    parts.append(part)
                continue
            index = names.get(part, -1) if part.__class__ is str else part
            if 0 <= index <= groups:
                parts.append(index)  # a reference to a group the program lacks expands to nothing
        self.parts = tuple(parts)


def _char_end(data: bytes, pos: int) -> int:
    """The byte offset just after the UTF-8 character starting at pos."""
    pos += 1
    while pos < len(data) and data[pos] & 0xC0 == 0x80:
        pos += 1
    return pos


def substitute(substitution: Substitution, text: str) -> str:
    """Replace every non-overlapping match in `text`; groups that did not take part expand to ""."""
    data = text.encode()
    end = len(data)
    match = substitution.match
    spans = match(_UNANCHORED, data, 0, end)
    if spans[0] == _NULL_SPAN:
        return text  # the common case for most records: one call, nothing built
    parts = substitution.parts
    out: list[bytes] = []
    pos = last = 0
    while True:
        start, stop = spans[0]
        out.append(data[last:start])
        for part in parts:
            if part.__class__ is bytes:
                out.append(part)
            elif spans[part] != _NULL_SPAN:
                out.append(data[spans[part][0]:spans[part][1]])
        last = stop
        if pos == end:
            break
        pos = _char_end(data, pos) if stop == pos else stop
        spans = match(_UNANCHORED, data, pos, end)
        if spans[0] == _NULL_SPAN:
            break
    out.append(data[last:])
    try:
        return b"".join(out).decode()
    except UnicodeDecodeError:
        # RE2 reported an empty match inside a multi-byte character (patterns like `x*`);
        # google-re2's own sub works in characters and gets it right, slowly.
        return substitution.program.sub(lambda m: _expand_match(parts, m), text)


def _expand_match(parts: tuple[bytes | int, ...], match: Any) -> str:
    return "".join(part.decode() if part.__class__ is bytes else (match.group(part) or "") for part in parts)


def check_available() -> None:
    """Fail fast at import if google-re2 changed the internals this module relies on."""
    program = re2.compile("(b)")
    assert substitute(Substitution(program, "[$1]"), "abc") == "a[b]c"


check_available()
