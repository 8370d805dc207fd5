"""The engine a process evaluates with right now: one `Engine` per snapshot, swapped when it changes.

Every process that evaluates policies (an HTTP worker, the Lambda extension, edge-tail)
asks its snapshot source for the current snapshot on each batch and must evaluate with an
engine built for exactly that snapshot, building a new one only when the snapshot changed.

The engine is keyed on the snapshot object the source returns, not on a generation number,
because the sources disagree on when their generation moves: the shared-memory reader
advances it inside `current()` (reading it first would lag one batch behind a publish), the
Lambda's in-process snapshots store the snapshot before the generation (reading it second
could pair a new generation with the old snapshot until the next publish), and edge-tail's fixed `-p`
snapshot has none. The snapshot itself is the one thing all of them agree on: an engine is
never paired with another snapshot than its own, and no snapshot is built twice. The pair
is replaced as one tuple, so even concurrent callers never see a mismatched pair.
"""

from __future__ import annotations

from collections.abc import Callable

from edge.engine.engine import Engine
from edge.engine.extensions import ExtensionRegistry
from edge.engine.ratelimit import RateLimiter
from edge.engine.stats import MatchStats
from edge.policy.snapshot import Snapshot

SnapshotSource = Callable[[], Snapshot | None]  # the newest snapshot; None before the first


def _every_snapshot(snapshot: Snapshot) -> bool:
    """The default `wanted`: every snapshot gets an engine."""
    return True


class EngineHolder:
    """Holds the engine of the source's current snapshot and rebuilds it when the snapshot changes.

    `limiter`, `stats` and `extensions` are shared by every engine it builds (rate-limit
    windows and counts survive a policy change); None gives each engine its own. A snapshot
    that `wanted` rejects gets no engine (edge-tail skips snapshots without log policies).
    """

    def __init__(self, source: SnapshotSource, *, limiter: RateLimiter | None = None,
                 stats: MatchStats | None = None, extensions: ExtensionRegistry | None = None,
                 wanted: Callable[[Snapshot], bool] = _every_snapshot) -> None:
        self._source = source
        self._limiter = limiter
        self._stats = stats
        self._extensions = extensions
        self._wanted = wanted
        self._held: tuple[Snapshot | None, Engine | None] = (None, None)

    def engine(self) -> Engine | None:
        """The engine for the current snapshot; None while there is none (raw passthrough)."""
        snapshot = self._source()
        held, engine = self._held
        if snapshot is held:
            return engine
        engine = self._build(snapshot)
        self._held = (snapshot, engine)
        return engine

    def _build(self, snapshot: Snapshot | None) -> Engine | None:
        if snapshot is None or not self._wanted(snapshot):
            return None
        return Engine(snapshot, limiter=self._limiter, stats=self._stats, extensions=self._extensions)
