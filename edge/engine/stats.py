"""Match statistics per policy (docs/policies.md §7), read-and-reset into sync requests.

Counters are added once per batch (not per record) under a lock, so the cost on the
request path is a few dict updates per matching policy.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

STAGES = ("remove", "redact", "rename", "add")


@dataclass
class PolicyCounters:
    hits: int = 0
    misses: int = 0
    # transform stage -> [hits, misses]
    stages: dict[str, list[int]] = field(default_factory=lambda: {s: [0, 0] for s in STAGES})

    def empty(self) -> bool:
        return not (self.hits or self.misses or any(h or m for h, m in self.stages.values()))


class MatchStats:
    """Thread-safe accumulator; `drain()` hands the counts over and starts from zero."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, PolicyCounters] = {}

    def add(self, policy_id: str, hits: int, misses: int) -> None:
        if hits or misses:
            self.add_many([(policy_id, hits, misses)])

    def add_many(self, rows: list[tuple[str, int, int]]) -> None:
        """(policy id, hits, misses) for a whole batch under one lock."""
        if not rows:
            return
        with self._lock:
            for policy_id, hits, misses in rows:
                c = self._counters.get(policy_id)
                if c is None:
                    c = self._counters[policy_id] = PolicyCounters()
                c.hits += hits
                c.misses += misses

    def add_stage(self, policy_id: str, stage: str, hits: int, misses: int) -> None:
        if not (hits or misses):
            return
        with self._lock:
            c = self._counters.get(policy_id)
            if c is None:
                c = self._counters[policy_id] = PolicyCounters()
            pair = c.stages[stage]
            pair[0] += hits
            pair[1] += misses

    def merge(self, other: dict[str, PolicyCounters]) -> None:
        """Put drained counts back (a sync that failed must not lose them)."""
        with self._lock:
            for pid, theirs in other.items():
                c = self._counters.setdefault(pid, PolicyCounters())
                c.hits += theirs.hits
                c.misses += theirs.misses
                for stage, (h, m) in theirs.stages.items():
                    c.stages[stage][0] += h
                    c.stages[stage][1] += m

    def drain(self) -> dict[str, PolicyCounters]:
        with self._lock:
            out, self._counters = self._counters, {}
        return out

    def snapshot(self) -> dict[str, PolicyCounters]:
        with self._lock:
            return {pid: PolicyCounters(c.hits, c.misses, {s: list(v) for s, v in c.stages.items()})
                    for pid, c in self._counters.items()}
