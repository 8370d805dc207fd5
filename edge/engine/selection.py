"""Which policies a batch can match, found from the conditions it hit.

A policy matches a record only where all its conditions hold, so it can match nothing
in a batch where one of its conditions holds nowhere. Each policy is filed under one
such gate condition when the engine is built (a plain one when it has any: string
conditions hold on few batches, negated ones on most), and a batch visits only the
policies filed under the conditions it hit. With 1,000 narrow policies a batch then
costs work for the few policies whose conditions it hit, not for the 1,000.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import repeat
from typing import TypeAlias

from edge.policy.model import CompiledPolicy, SignalPlan

# Policies with the mask of the records they matched, in plan (id) order.
Matched: TypeAlias = list[tuple[CompiledPolicy, int]]


@dataclass(frozen=True, slots=True)
class PolicyIndex:
    """A plan's policies filed by gate condition; built once per engine (i.e. per snapshot)."""

    policies: tuple[CompiledPolicy, ...]  # the plan's, in plan order: position p is policies[p]
    gated: dict[int, tuple[int, ...]]  # condition index -> positions of the policies it gates
    always: frozenset[int]  # positions listed on every batch, matched or not (they have extensions)
    negated: tuple[int, ...]  # conditions whose mask is the complement of their hits

    @classmethod
    def of(cls, plan: SignalPlan) -> PolicyIndex:
        negated = {c.index for c in plan.conditions if c.negate}
        gated: dict[int, list[int]] = {}
        for position, policy in enumerate(plan.policies):
            plain = [ci for ci in policy.conditions if ci not in negated]
            gated.setdefault((plain or policy.conditions)[0], []).append(position)
        always = frozenset(p for p, policy in enumerate(plan.policies) if policy.extensions)
        return cls(tuple(plan.policies), {ci: tuple(ps) for ci, ps in gated.items()}, always,
                   tuple(sorted(negated)))

    def condition_masks(self, hits: dict[int, int], full: int) -> dict[int, int]:
        """Record masks of the conditions that hold somewhere: `hits` with negation applied."""
        if not self.negated:
            return hits
        masks = dict(hits)
        for ci in self.negated:
            mask = masks.pop(ci, 0) ^ full
            if mask:
                masks[ci] = mask
        return masks

    def matched(self, hits: dict[int, int], full: int) -> Matched:
        """Policies that match some record (plus the `always` ones), from the raw condition hits."""
        masks = self.condition_masks(hits, full)
        positions = set().union(*map(self.gated.get, masks, repeat(())))
        always = self.always
        if always:
            positions |= always
        out: Matched = []
        policies = self.policies
        for position in sorted(positions):
            policy = policies[position]
            mask = full
            for ci in policy.conditions:
                mask &= masks.get(ci, 0)
                if not mask:
                    break
            if mask or position in always:
                out.append((policy, mask))
        return out


__all__ = ["Matched", "PolicyIndex"]
