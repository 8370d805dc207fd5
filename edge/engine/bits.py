"""Record sets as Python ints: bit i is record i of the batch.

A batch of 3,000 records is a 3,000-bit int, and AND/OR/XOR on it run in C, so
policy logic costs a few operations per policy per batch instead of per record.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import compress

_TO_SELECTORS = bytes.maketrans(b"01", b"\x00\x01")
_TO_DIGITS = bytes.maketrans(b"\x00\x01", b"01")


def full_mask(n: int) -> int:
    return (1 << n) - 1


def range_mask(start: int, end: int) -> int:
    return ((1 << (end - start)) - 1) << start


def indices(mask: int) -> list[int]:
    """Set bit positions in ascending order."""
    if not mask:
        return []
    selectors = bin(mask)[:1:-1].encode().translate(_TO_SELECTORS)
    return list(compress(range(len(selectors)), selectors))


def from_indices(positions: Iterable[int], n: int) -> int:
    """The mask with the given positions set (positions < n)."""
    row = bytearray(b"0") * n
    for i in positions:
        row[i] = 49  # "1"
    row.reverse()
    return int(row, 2) if n else 0


def from_bools(selectors: list[bool]) -> int:
    """The mask with bit i set where selectors[i] is true (built in C, no loop per record)."""
    if not selectors:
        return 0
    row = bytearray(selectors).translate(_TO_DIGITS)
    row.reverse()
    return int(row, 2)


def flags(mask: int, n: int) -> str:
    """A '0'/'1' string where flags[i] tells whether record i is set."""
    return bin(mask)[2:].zfill(n)[::-1] if n else ""
