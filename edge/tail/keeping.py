"""What a line filter returns, and the filter used when there are no policies.

Kept apart from `edge.tail.filtering` so that edge-tail without `-p` never imports the
policy engine, Hyperscan or the policy loader: start-up then only pays for reading
files (inputs are open and positioned sooner, so `--read-from tail` misses nothing
written just after exec).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(slots=True)
class Kept:
    """What survives a block: the bytes to deliver, how many records they hold, and those records
    when they are multi-line (None: each line of `data` is one record)."""

    data: bytes
    lines: int
    records: list[bytes] | None = None


class Filter(Protocol):
    def apply(self, block: bytes, file_path: str = "", records: list[bytes] | None = None) -> Kept: ...


class KeepAll:
    """No policies: every block is delivered as it is."""

    def apply(self, block: bytes, file_path: str = "", records: list[bytes] | None = None) -> Kept:
        return Kept(block, block.count(b"\n") if records is None else len(records), records)
