"""What the sampler remembers about traces it has decided, for spans that arrive after the decision.

`decision_cache.sampled_cache_size` / `non_sampled_cache_size` keep that many trace ids per
outcome (least recently used out first): a late span of a cached trace follows its
decision. With a cache off (size 0), a late span starts a new buffer entry, decided on its
own; to count those spans as late the sampler also remembers the ids (not the decisions)
of the last `num_traces` decided traces, which costs a few dozen bytes each.
"""

from __future__ import annotations

from collections import OrderedDict

from edge.tailsampling.interfaces import TraceId


class Lru:
    """Trace ids, the least recently used one dropped beyond `size` (size 0: remembers nothing)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.ids: OrderedDict[TraceId, None] = OrderedDict()

    def add(self, trace_id: TraceId) -> None:
        if self.size <= 0:
            return
        self.ids[trace_id] = None
        self.ids.move_to_end(trace_id)
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)

    def hit(self, trace_id: TraceId) -> bool:
        """Whether the id is remembered (and, if so, now the most recently used)."""
        if trace_id not in self.ids:
            return False
        self.ids.move_to_end(trace_id)
        return True

    def discard(self, trace_id: TraceId) -> None:
        self.ids.pop(trace_id, None)


class DecisionCache:
    """The two decision caches and the ids of recently decided traces."""

    def __init__(self, sampled_size: int, non_sampled_size: int, remembered: int) -> None:
        self.sampled = Lru(sampled_size)
        self.non_sampled = Lru(non_sampled_size)
        self.decided = Lru(remembered)

    def record(self, trace_id: TraceId, sampled: bool) -> None:
        (self.sampled if sampled else self.non_sampled).add(trace_id)
        (self.non_sampled if sampled else self.sampled).discard(trace_id)  # a re-decided trace: the newest wins
        self.decided.add(trace_id)

    def follow(self, trace_id: TraceId) -> bool | None:
        """The cached decision for a late span of this trace; None when no cache holds it."""
        if self.sampled.hit(trace_id):
            return True
        if self.non_sampled.hit(trace_id):
            return False
        return None

    def was_decided(self, trace_id: TraceId) -> bool:
        """Whether the trace was decided recently (its spans arriving now are late)."""
        return trace_id in self.decided.ids
