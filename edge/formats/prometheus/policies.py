"""What the metric policies of one snapshot decide about exposition samples.

A sample's family context (name, HELP, UNIT, TYPE) settles every condition except those on
its labels, so `ScrapePolicies` evaluates each (name, family) once per snapshot through the
engine's own matching code and caches the `Verdict`. Lines whose outcome can depend on their
labels are evaluated together, one batch per chunk, with the same matching code and the
engine's keep and statistics rules.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from itertools import repeat
from typing import Any

from edge.engine import bits
from edge.engine.matching import condition_masks, policy_masks
from edge.engine.values import MISSING, Column
from edge.formats.prometheus.labels import LabelLocator
from edge.policy.fields import AGGREGATION_TEMPORALITY, METRIC_DESCRIPTION, METRIC_NAME, METRIC_TYPE, METRIC_UNIT
from edge.policy.model import METRIC, CompiledPolicy, FieldKey, SignalPlan
from edge.policy.snapshot import Snapshot

LABEL = "datapoint_attribute"

_VERDICT_CACHE_MAX = 100_000  # per snapshot; a flood of distinct names only clears it
_FLAG_BYTES = bytes.maketrans(b"01", b"\x00\x01")


@dataclass(slots=True, eq=False)
class Context:
    """What a sample's family says about it: the family-level fields of one record."""

    name: str
    description: str | None = None
    unit: str | None = None
    metric_type: int | None = None
    temporality: int | None = None


@dataclass(slots=True, eq=False)
class Verdict:
    """The outcome for the samples of one name in one family context.

    `keep` and the per-line statistics `rows` are the outcome of a line on which no label
    that policies test is found. `dynamic`: a policy testing labels may match, so lines on
    which such a label is found are evaluated one by one; otherwise every line gets `keep`.
    """

    context: Context
    keep: bool = True
    rows: tuple[tuple[str, int, int], ...] = ()
    dynamic: bool = False
    context_holds: int = 0  # bit i: condition i holds here, for every condition the context settles
    label_keys: int = 0  # bit k: label key k can change the outcome here


PASS = Verdict(Context(""))  # lines no policy looks at: blank, unreadable or too long


def decide(policies: list[CompiledPolicy]) -> tuple[bool, tuple[tuple[str, int, int], ...]]:
    """Keep decision and statistics for one record matched by `policies` (id order), as the engine counts.

    Any keep=false policy drops; the first one by id takes the hit and the other matching
    policies a miss. A kept record gives every matching policy a hit (docs/policies.md §7).
    """
    causer = next((p for p in policies if not p.metric_keep), None)
    if causer is None:
        return True, tuple((p.id, 1, 0) for p in policies)
    return False, tuple((p.id, 1, 0) if p is causer else (p.id, 0, 1) for p in policies)


def add_rows(stats: dict[str, list[int]], rows: tuple[tuple[str, int, int], ...], times: int) -> None:
    """Add one record's statistics `times` over."""
    for pid, hit, miss in rows:
        row = stats.setdefault(pid, [0, 0])
        row[0] += hit * times
        row[1] += miss * times


class ScrapePolicies:
    """The metric policies of one snapshot, prepared for expositions (built once per snapshot)."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.plan: SignalPlan = snapshot.plan(METRIC)
        conditions = self.plan.conditions
        # Label conditions on a one-segment path need each line's labels; everything else is
        # settled by the family context (a nested path never exists on a Prometheus label).
        self.label_keys: list[FieldKey] = sorted(
            {c.field for c in conditions if c.field[0] == LABEL and len(c.field[1]) == 1}, key=repr)
        per_line = {c.index for c in conditions if c.field in self.label_keys}
        self.static_conditions = [[ci for ci in p.conditions if ci not in per_line] for p in self.plan.policies]
        self.settled = [c.index for c in conditions if c.index not in per_line]  # by the family context
        # The fields a line's labels decide, as a plan of their own for the engine's matching.
        self.label_plan = SignalPlan(METRIC, self.plan.policies, conditions,
                                     {key: fp for key, fp in self.plan.fields.items() if key in self.label_keys})
        self.per_line = [any(ci in per_line for ci in p.conditions) for p in self.plan.policies]
        key_index = {key: k for k, key in enumerate(self.label_keys)}
        self.policy_keys = [sum({1 << key_index[conditions[ci].field] for ci in p.conditions if ci in per_line})
                            for p in self.plan.policies]
        self.locator = LabelLocator(self.plan, self.label_keys) if self.label_keys else None
        self.verdicts: dict[tuple[bytes, Any], Verdict] = {}

    def resolve(self, keys: list[tuple[bytes, Any]], contexts: list[Context]) -> list[Verdict]:
        """Verdicts for (name, family) keys not seen before, evaluated as one batch and cached."""
        batch = ContextBatch(contexts)
        masks = condition_masks(self.snapshot, self.plan, batch)
        without_labels = policy_masks(self.plan, masks, batch.full)
        may_need: list[tuple[int, int]] = []  # (contexts where a policy testing labels may match, its keys)
        for static, policy_keys in zip(self.static_conditions, self.policy_keys, strict=True):
            if policy_keys:
                mask = batch.full
                for ci in static:
                    mask &= masks[ci]
                may_need.append((mask, policy_keys))
        if len(self.verdicts) + len(keys) > _VERDICT_CACHE_MAX:
            self.verdicts.clear()
        # Masks as '0'/'1' strings: reading bit i of an n-bit int costs O(n), which over a chunk
        # of many new names (a scrape of distinct metric names) made this loop quadratic.
        n = batch.n
        policy_flags = [(p, bits.flags(mask, n)) for p, mask in zip(self.plan.policies, without_labels, strict=True)]
        settled_flags = [(1 << ci, bits.flags(masks[ci], n)) for ci in self.settled]
        needing_flags = [(policy_keys, bits.flags(mask, n)) for mask, policy_keys in may_need]
        out = []
        for i, (key, context) in enumerate(zip(keys, contexts, strict=True)):
            matched = [p for p, flags in policy_flags if flags[i] == "1"]
            holding = sum(bit for bit, flags in settled_flags if flags[i] == "1")
            needed = 0
            for policy_keys, flags in needing_flags:
                if flags[i] == "1":
                    needed |= policy_keys
            verdict = Verdict(context, *decide(matched), dynamic=bool(needed), context_holds=holding,
                              label_keys=needed)
            self.verdicts[key] = verdict
            out.append(verdict)
        return out

    def evaluate(self, verdicts: list[Verdict], labels: list[dict[int, str]], stats: dict[str, list[int]],
                 holds: dict[int, list[int]] | None = None, exact: list[int] = ()) -> bytes:
        """Keep flags (one byte per record) for sample lines evaluated with their labels.

        Record i has the family context of `verdicts[i]` and `labels[k][i]` as the value of label
        key k (absent when missing), matched by the engine's code per field over the whole batch.
        With `holds`, label conditions hold where it says, except on the `exact` records, which
        are matched by their values. Keep decisions and statistics follow the engine's rules;
        the statistics are added to `stats`.
        """
        batch = SampleBatch(verdicts, dict(zip(self.label_keys, labels, strict=True)))
        if holds is None:
            masks = condition_masks(self.snapshot, self.label_plan, batch)
        else:
            masks = self._literal_masks(batch, holds, exact)
        for ci in self.settled:  # what the family contexts settled, spread over their lines
            mask = 0
            for verdict, owners in zip(batch.groups, batch.owners, strict=True):
                if verdict.context_holds >> ci & 1:
                    mask |= owners
            masks[ci] = mask
        masks = policy_masks(self.plan, masks, batch.full)
        alive = batch.full
        caused: dict[str, int] = {}
        for policy, mask in zip(self.plan.policies, masks, strict=True):
            drop = mask & alive
            if drop and not policy.metric_keep:
                caused[policy.id] = drop.bit_count()
                alive &= ~drop
        for policy, mask in zip(self.plan.policies, masks, strict=True):
            if mask:
                hits = (mask & alive).bit_count() + caused.get(policy.id, 0)
                row = stats.setdefault(policy.id, [0, 0])
                row[0] += hits
                row[1] += mask.bit_count() - hits
        return bits.flags(alive, batch.n).encode().translate(_FLAG_BYTES)

    def _literal_masks(self, batch: SampleBatch, holds: dict[int, list[int]], exact: list[int]) -> list[int]:
        """Label condition masks from the detectors' reports, and from values on the `exact` records."""
        exact_mask = bits.from_indices(exact, batch.n) if exact else 0
        masks = condition_masks(self.snapshot, self.label_plan, batch) if exact_mask else [0] * len(
            self.plan.conditions)
        plain = batch.full & ~exact_mask
        for condition in self.plan.conditions:
            if condition.field in self.label_keys:
                mask = bits.from_indices(holds.get(condition.index, ()), batch.n)
                if condition.negate:
                    mask ^= batch.full
                masks[condition.index] = (masks[condition.index] & exact_mask) | (mask & plain)
        return masks


_cached: ScrapePolicies | None = None
_cache_lock = threading.Lock()


def scrape_policies(snapshot: Snapshot) -> ScrapePolicies:
    """The prepared policies of `snapshot`, kept while it is the newest one this process uses."""
    global _cached
    cached = _cached
    if cached is not None and cached.snapshot is snapshot:
        return cached
    with _cache_lock:
        if _cached is None or _cached.snapshot is not snapshot:
            _cached = ScrapePolicies(snapshot)
        return _cached


# ── batch views for the engine's matching code ──────────────────────────────

_CONTEXT_FIELDS = {
    METRIC_NAME: lambda c: c.name,
    METRIC_DESCRIPTION: lambda c: c.description,
    METRIC_UNIT: lambda c: c.unit,
    METRIC_TYPE: lambda c: c.metric_type,
    AGGREGATION_TEMPORALITY: lambda c: c.temporality,
}


class ContextBatch:
    """One record per (name, family context): the family-level fields, labels absent."""

    def __init__(self, contexts: list[Context]) -> None:
        self.contexts = contexts
        self.n = len(contexts)
        self.full = bits.full_mask(self.n)

    def column(self, key: FieldKey) -> Column:
        getter = _CONTEXT_FIELDS.get(key)
        if getter is None:
            return Column([MISSING], [self.full])
        return Column([MISSING if v is None else v for v in map(getter, self.contexts)])

    def strings(self, key: FieldKey) -> Column:
        getter = _CONTEXT_FIELDS.get(key)
        if getter is None:
            return Column([""], [self.full])
        return Column([v if v.__class__ is str else "" for v in map(getter, self.contexts)])


class SampleBatch:
    """One record per sample line, for the label fields: what the family settled comes from the verdicts.

    `groups` are the distinct verdicts and `owners[g]` the mask of the records of group g.
    """

    def __init__(self, verdicts: list[Verdict], labels: dict[FieldKey, dict[int, str]]) -> None:
        self.n = len(verdicts)
        self.full = bits.full_mask(self.n)
        self.labels = labels
        self.groups = list(dict.fromkeys(verdicts))
        self.owners = _owner_masks(verdicts, self.groups, self.n)

    def column(self, key: FieldKey) -> Column:
        values = self.labels.get(key)
        if values is None:
            return Column([MISSING], [self.full])
        return Column(list(map(values.get, range(self.n), repeat(MISSING))))

    def strings(self, key: FieldKey) -> Column:
        values = self.labels.get(key)
        if values is None:
            return Column([""], [self.full])
        return Column(list(map(values.get, range(self.n), repeat(""))))


def _owner_masks(items: list[Any], groups: list[Any], n: int) -> list[int]:
    """For each group, the mask of the positions in `items` holding it (C-level passes)."""
    if len(groups) == 1:
        return [bits.full_mask(n)]
    if len(groups) < 256:
        codes = bytes(map({g: i for i, g in enumerate(groups)}.__getitem__, items))
        masks = []
        for i in range(len(groups)):
            table = bytearray(b"0" * 256)
            table[i] = 49  # "1"
            masks.append(int(codes.translate(table)[::-1], 2))
        return masks
    positions: dict[Any, list[int]] = {g: [] for g in groups}
    for i, item in enumerate(items):
        positions[item].append(i)
    return [bits.from_indices(positions[g], n) for g in groups]
