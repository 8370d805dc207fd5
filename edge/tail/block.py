"""What the reader hands on: complete lines (or joined multi-line records) and where they end.

Its own module because both the reader and the multi-line joiner make and take blocks, and
the reader holds a joiner: neither needs to import the other for it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Block:
    """Complete lines read from a file (possibly none: skipped bytes still move the position)."""

    data: bytes
    end_offset: int  # file offset just after `data`: where the next undelivered byte starts
    records: list[bytes] | None = None  # multi-line records (`data` joined), None: one record per line
