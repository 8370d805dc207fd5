"""Which of a submission's fragments the sampler keeps: the owner routing in front of its log.

A fragment whose trace another instance owns goes to that owner, except when it came from
a peer (it is never routed twice: members may briefly disagree on who owns what) or when
its trace is already buffered here (after a membership change a buffered trace stays where
its first spans are, and its late spans join it). Fragments whose owner stayed unreachable
are kept here; `Peers` counts them.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Protocol

from edge.tailsampling.interfaces import TraceFragment, TraceId


class Router(Protocol):
    """What the sampler needs of `edge.tailsampling.peers.Peers`."""

    async def route(self, fragments: Sequence[TraceFragment]) -> list[TraceFragment]:
        """Forward what others own; the fragments to keep here."""
        ...

    def received(self, fragments: Sequence[TraceFragment]) -> None:
        """Count fragments a peer forwarded here."""
        ...


class Routing:
    """The owner routing of one sampler."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def keep_here(self, fragments: list[TraceFragment], forwarded: bool,
                        buffered: Container[TraceId]) -> list[TraceFragment]:
        if forwarded:
            self.router.received(fragments)
            return fragments
        staying = [f for f in fragments if f.trace_id in buffered]
        if len(staying) == len(fragments):
            return fragments
        moving = [f for f in fragments if f.trace_id not in buffered] if staying else fragments
        return staying + await self.router.route(moving)
