"""What an OTLP route hands the tail sampler instead of forwarding: traces, and logs that follow them.

With `tail_sampling.enabled` the traces route splits what edge's policies leave by trace id
and hands every fragment to the sampler. With `logs.follow_traces` too, the logs route
splits its records the same way and hands them over, so records of a buffered trace leave
or are dropped with it; a batch without any trace id is forwarded as usual, never through
the sampler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple, Protocol

from edge.config import Config
from edge.tailsampling.grouping import UNTRACED, split_by_trace, split_logs_by_trace
from edge.tailsampling.interfaces import Ack, SamplerClient, TraceFragment


class SamplerConnection(SamplerClient, Protocol):
    """A `SamplerClient` that also takes log records (`edge.tailsampling.client.SocketSamplerClient`)."""

    async def submit_logs(self, fragments: Sequence[TraceFragment], *, forwarded: bool = False) -> Ack:
        """Log records grouped by trace id; returns once they are in the sampler's log.
        `forwarded`: they came from a peer."""
        ...


class Handoff(NamedTuple):
    """How a route splits a batch for the sampler, and where it hands the fragments."""

    split: Callable[[bytes, str], list[TraceFragment]]
    submit: Callable[[list[TraceFragment]], Awaitable[Ack]]
    untraced_forwarded: bool  # a batch without any trace id is forwarded as usual (logs)

    def bypasses(self, fragments: Sequence[TraceFragment]) -> bool:
        """Whether this batch goes upstream as usual rather than to the sampler."""
        return self.untraced_forwarded and all(f.trace_id == UNTRACED for f in fragments)


def handoffs(config: Config, sampler: SamplerConnection | None) -> dict[str, Handoff]:
    """Each signal's handoff, by signal name: traces with a sampler, logs too under `logs.follow_traces`."""
    if sampler is None:
        return {}
    out = {"trace": Handoff(split_by_trace, sampler.submit, False)}
    if config.tail_sampling.logs.follow_traces:
        out["log"] = Handoff(split_logs_by_trace, sampler.submit_logs, True)
    return out
