"""What evaluating one request body gives back, whatever its wire format."""

from __future__ import annotations

from dataclasses import dataclass

from edge.engine.engine import Outcome


@dataclass(slots=True)
class Evaluated:
    """The bytes to forward (the original ones when nothing changed) and what happened to the batch."""

    body: bytes
    outcome: Outcome
    failed: bool = False  # evaluation raised: `body` is the original, unfiltered (fail-open)
