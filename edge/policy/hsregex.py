"""Rewrite an RE2 pattern into a Hyperscan expression with the same meaning, or say it can't be.

Hyperscan and RE2 share most syntax but not all of its meaning. The batch scanner runs
every expression MULTILINE over records joined by newlines, so anything that changes
anchoring or differs in character classes must be translated or left to RE2:

- `\\s` is [\\t\\n\\f\\r ] in RE2 but also matches \\v in Hyperscan; `\\S` the complement;
  `\\v` is one character (U+000B) in RE2 but a class in Hyperscan. They are spelled out.
- `\\A`, `\\z`, `\\Z` anchor to the whole buffer (many records): RE2 only.
- inline flag groups other than `(?i)` (`(?-m)`, `(?s)`, `(?U)`, ...) change anchoring or
  repetition semantics: RE2 only.
- case-insensitive patterns with non-ASCII letters or Unicode classes: RE2 only
  (Hyperscan folds ASCII only without UCP).
"""

from __future__ import annotations

import re

_SPACE = r"\t\n\f\r "
_INLINE_FLAGS = re.compile(r"\(\?([A-Za-z-]*)[:)]")
_UNICODE = re.compile(r"[^\x00-\x7f]|\\[pPx]\{?")


def to_hyperscan(pattern: str, case_insensitive: bool) -> str | None:
    """The Hyperscan spelling of an RE2 pattern, or None when only RE2 can run it exactly."""
    for flags in _INLINE_FLAGS.findall(pattern):
        if set(flags) - {"i"}:
            return None
    if (case_insensitive or "(?i" in pattern) and _UNICODE.search(pattern):
        return None
    if "\\Q" in pattern:
        return None
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            escaped = pattern[i + 1]
            if escaped in "AzZ":
                return None
            if escaped == "s":
                out.append(_SPACE if in_class else f"[{_SPACE}]")
            elif escaped == "S":
                if in_class:
                    return None
                out.append(f"[^{_SPACE}]")
            elif escaped == "v":
                out.append(r"\x0b")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if c == "[" and not in_class:
            in_class = True
            out.append(c)
            # a leading ']' or '^]' is a literal inside the class
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                out.append("^")
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                out.append("]")
                j += 1
            i = j
            continue
        if c == "[" and in_class and pattern.startswith("[:", i):
            end = pattern.find(":]", i + 2)
            if end != -1:
                out.append(pattern[i:end + 2])
                i = end + 2
                continue
        if c == "]" and in_class:
            in_class = False
        out.append(c)
        i += 1
    return "".join(out)
