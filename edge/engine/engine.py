"""The policy engine: decides keep/drop, samples, limits and transforms a batch.

One `Engine` wraps one snapshot plus the state that outlives it (rate-limit windows,
match statistics, extension handlers). Work per batch is: one column extraction and
one scan per field, a few big-int operations per policy, and per-record Python only
where the outcome really is per record (sampling draws, transforms, tracestate).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, cast

from edge.engine import bits, sampling
from edge.engine.batch import Batch, LogBatch, TraceBatch
from edge.engine.extensions import ExtensionRegistry, dispatch
from edge.engine.matching import condition_hits
from edge.engine.ratelimit import LocalRateLimiter, RateLimiter
from edge.engine.selection import Matched, PolicyIndex
from edge.engine.stats import MatchStats
from edge.engine.transforms import apply_transforms
from edge.engine.values import MISSING, OTHER, Column
from edge.policy.fields import LOG_TRACE_ID
from edge.policy.model import LOG, TRACE, CompiledPolicy, SignalPlan
from edge.policy.snapshot import Snapshot


@dataclass(slots=True)
class Outcome:
    """What happened to a batch."""

    total: int
    kept: int
    changed: bool  # records were dropped or modified: the document must be re-serialised

    @property
    def dropped(self) -> int:
        return self.total - self.kept


def per_record(column: Column, n: int) -> list[Any]:
    """A column as one value per record (group-level values repeated over their records)."""
    if column.owners is None:
        return column.values
    out: list[Any] = [MISSING] * n
    for value, owner in zip(column.values, column.owners, strict=True):
        for i in bits.indices(owner):
            out[i] = value
    return out


def _key_bytes(value: Any) -> bytes | None:
    if value is MISSING or value is OTHER:
        return None
    if value.__class__ is bytes:
        return value
    if value.__class__ is str:
        return value.encode()
    if value.__class__ is bool:
        return b"true" if value else b"false"
    return str(value).encode()


class Engine:
    def __init__(self, snapshot: Snapshot, *, limiter: RateLimiter | None = None,
                 stats: MatchStats | None = None, extensions: ExtensionRegistry | None = None,
                 rng: random.Random | None = None) -> None:
        self.snapshot = snapshot
        self.limiter = limiter if limiter is not None else LocalRateLimiter()
        self.stats = stats if stats is not None else MatchStats()
        self.extensions = extensions
        self.rng = rng or random.SystemRandom()
        self.limiter.load({p.id for p in snapshot.plan(LOG).policies if p.log_keep.kind == "rate"})
        self._indexes = {signal: PolicyIndex.of(plan) for signal, plan in snapshot.plans.items()}
        # Log policies in the order keep decisions take them (docs/policies.md §4): most
        # restrictive first, ties in id order (the plan's order, which the stable sort keeps).
        by_restrictiveness = sorted(snapshot.plan(LOG).policies, key=lambda p: p.log_keep.restrictiveness())
        # Only policies that can drop take part: keep=all ones never change a decision, and
        # leaving them out of the per-batch sort is most of a small batch's deciding.
        self._drop_rank = {policy.id: rank for rank, policy in enumerate(by_restrictiveness)
                           if policy.log_keep.kind != "all"}
        self._transforms = any(policy.transform for policy in snapshot.plan(LOG).policies)
        self._thresholds = {policy.id: sampling.threshold(policy.log_keep.percent)
                            for policy in by_restrictiveness if policy.log_keep.kind == "percent"}

    # ── shared steps ──

    def _match(self, plan: SignalPlan, batch: Batch) -> Matched:
        """The policies that match some record of the batch, and the ones with extensions."""
        return self._indexes[plan.signal].matched(condition_hits(self.snapshot, plan, batch), batch.full)

    def _count(self, matched: Matched, alive: int, caused: dict[str, int]) -> None:
        """Hits and misses (docs/policies.md §7) for every policy that matched something."""
        rows = [(policy.id, hits := (mask & alive).bit_count() + caused.get(policy.id, 0), mask.bit_count() - hits)
                for policy, mask in matched if mask]
        if rows:
            self.stats.add_many(rows)

    # ── logs ──

    def _sample_drop(self, policy: CompiledPolicy, candidates: int, batch: Batch) -> int:
        t = self._thresholds[policy.id]
        if t == 0:
            return 0
        if t >= sampling.SPACE:
            return candidates
        positions = bits.indices(candidates)
        if policy.sample_key is None:
            draw = self.rng.getrandbits
            return bits.from_indices([i for i in positions if draw(sampling.BITS) < t], batch.n)
        values = per_record(batch.column(policy.sample_key), batch.n)
        randomness = (sampling.randomness_of_trace_id if policy.sample_key == LOG_TRACE_ID
                      else sampling.randomness_of_key)
        dropped = []
        for i in positions:
            raw = _key_bytes(values[i])
            if raw and randomness(raw) < t:  # an absent sample key keeps the record
                dropped.append(i)
        return bits.from_indices(dropped, batch.n)

    def _rate_drop(self, policy: CompiledPolicy, candidates: int) -> int:
        keep = policy.log_keep
        positions = bits.indices(candidates)
        granted = self.limiter.take(policy.id, keep.rate, keep.window_s, len(positions))
        if granted >= len(positions):
            return 0
        return bits.from_indices(positions[granted:], positions[-1] + 1)

    def _decide_logs(self, matched: Matched, batch: Batch) -> tuple[int, dict[str, int]]:
        """Most restrictive keep first; the first policy (by restrictiveness, then id) that drops causes it."""
        alive = batch.full
        caused: dict[str, int] = {}
        rank = self._drop_rank
        deciding = [(r, i) for i, (policy, mask) in enumerate(matched)
                    if mask and (r := rank.get(policy.id)) is not None]
        deciding.sort()
        for _, i in deciding:
            policy, mask = matched[i]
            candidates = mask & alive
            if not candidates:
                continue
            kind = policy.log_keep.kind
            if kind == "none":
                drop = candidates
            elif kind == "percent":
                drop = self._sample_drop(policy, candidates, batch)
            else:
                drop = self._rate_drop(policy, candidates)
            if drop:
                caused[policy.id] = drop.bit_count()
                alive &= ~drop
        return alive, caused

    # ── metrics ──

    def _decide_metrics(self, matched: Matched, batch: Batch) -> tuple[int, dict[str, int]]:
        """Any matching keep=false drops; the first such policy by id causes it."""
        alive = batch.full
        caused: dict[str, int] = {}
        for policy, mask in matched:
            drop = mask & alive
            if not policy.metric_keep and drop:
                caused[policy.id] = drop.bit_count()
                alive &= ~drop
        return alive, caused

    # ── traces ──

    def _decide_traces(self, matched: Matched, batch: TraceBatch) -> tuple[int, dict[str, int]]:
        """The lowest percentage decides a span (ties by id) and writes its threshold."""
        alive = batch.full
        caused: dict[str, int] = {}
        order = sorted((pm for pm in matched if pm[1]), key=lambda pm: pm[0].trace_keep.percentage)
        decided = 0
        for policy, mask in order:
            todo = mask & ~decided
            if not todo:
                continue
            decided |= todo
            dropped = []
            for i in bits.indices(todo):
                decision = sampling.decide_span(policy.trace_keep, batch.trace_id(i), batch.trace_state(i))
                if not decision.keep:
                    dropped.append(i)
                elif decision.tracestate is not None:
                    batch.set_trace_state(i, decision.tracestate)
            drop = bits.from_indices(dropped, batch.n)
            if drop:
                caused[policy.id] = drop.bit_count()
                alive &= ~drop
        return alive, caused

    def evaluate(self, signal: str, batch: Batch) -> Outcome:
        """Match, decide keep, count, dispatch extensions, transform (logs), drop: one batch.

        The signal names the batch's shape: a `LogBatch` for LOG, a `TraceBatch` for TRACE,
        any `Batch` for METRIC.
        """
        plan = self.snapshot.plan(signal)
        if not plan or not batch.n:
            return Outcome(batch.n, batch.n, False)
        matched = self._match(plan, batch)
        if signal == LOG:
            alive, caused = self._decide_logs(matched, batch)
        elif signal == TRACE:
            alive, caused = self._decide_traces(matched, cast(TraceBatch, batch))
        else:
            alive, caused = self._decide_metrics(matched, batch)
        self._count(matched, alive, caused)
        if self.extensions:
            dispatch(self.extensions, signal, matched, alive, batch)
        if signal == LOG and self._transforms:
            targets = [(p, m & alive) for p, m in matched if p.transform]
            if targets:
                apply_transforms(cast(LogBatch, batch), self.snapshot, targets, self.stats)
        batch.keep_only(alive)
        return Outcome(batch.n, alive.bit_count(), batch.changed)


__all__ = ["Engine", "Outcome"]
