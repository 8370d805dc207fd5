"""Which of a submission's fragments the sampler keeps: the owner routing in front of its log.

A fragment whose trace another instance owns goes to that owner, except when it came from
a peer (it is never routed twice: members may briefly disagree on who owns what) or when
its trace is already buffered here (after a membership change a buffered trace stays where
its first spans are, and its late spans join it). Spans without a trace id have no owner:
they pass through where they arrived. Fragments whose owner stayed unreachable are kept
here; `Peers` counts them.

Log records following their traces (`logs.follow_traces`) are routed by the same rule, to
the owner's logs route, so that they meet their trace where it is buffered and decided.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from typing import Protocol

from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import Signal, TraceFragment, TraceId


class Router(Protocol):
    """What the sampler needs of `edge.tailsampling.peers.Peers`."""

    async def route(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> list[TraceFragment]:
        """Forward what others own; the fragments to keep here."""
        ...

    def received(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> None:
        """Count fragments a peer forwarded here."""
        ...


class Routing:
    """The owner routing of one sampler."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def keep_here(self, fragments: list[TraceFragment], forwarded: bool, buffered: Container[TraceId],
                        signal: Signal = Signal.TRACES) -> list[TraceFragment]:
        """The fragments to keep here: forwarded ones, untraced ones, those of a trace buffered here,
        and those this instance owns or whose owner stayed unreachable; the others go to their owner."""
        if forwarded:
            self.router.received(fragments, signal)
            return fragments
        staying: list[TraceFragment] = []
        moving: list[TraceFragment] = []
        for fragment in fragments:
            here = fragment.trace_id in buffered or fragment.trace_id == UNTRACED
            (staying if here else moving).append(fragment)
        if not moving:
            return fragments
        return staying + await self.router.route(moving, signal)
