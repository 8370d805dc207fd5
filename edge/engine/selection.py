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
from typing import TypeAlias

from edge.policy.model import CompiledPolicy, SignalPlan

# Policies with the mask of the records they matched, in plan (id) order.
Matched: TypeAlias = list[tuple[CompiledPolicy, int]]


@dataclass(frozen=True, slots=True)
class PolicyIndex:
    """A plan's policies filed by gate condition; built once per engine (i.e. per snapshot)."""

    policies: tuple[CompiledPolicy, ...]  # the plan's, in plan order: position p is policies[p]
    gated: dict[int, tuple[int, ...]]  # condition index -> positions of the policies it gates
    rest: tuple[tuple[int, ...], ...]  # per position: the policy's conditions other than its gate
    always: frozenset[int]  # positions listed on every batch, matched or not (they have extensions)
    negated: tuple[int, ...]  # conditions whose mask is the complement of their hits

    @classmethod
    def of(cls, plan: SignalPlan) -> PolicyIndex:
        negated = {c.index for c in plan.conditions if c.negate}
        gated: dict[int, list[int]] = {}
        rest: list[tuple[int, ...]] = []
        for position, policy in enumerate(plan.policies):
            plain = [ci for ci in policy.conditions if ci not in negated]
            gate = (plain or policy.conditions)[0]
            gated.setdefault(gate, []).append(position)
            rest.append(tuple(ci for ci in policy.conditions if ci != gate))
        always = frozenset(p for p, policy in enumerate(plan.policies) if policy.extensions)
        return cls(tuple(plan.policies), {ci: tuple(ps) for ci, ps in gated.items()}, tuple(rest), always,
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
        gated, rest, always = self.gated, self.rest, self.always
        found: list[tuple[int, int]] = []  # (position, mask)
        for ci, gate_mask in masks.items():
            for position in gated.get(ci, ()):
                mask = gate_mask
                for other in rest[position]:
                    mask &= masks.get(other, 0)
                    if not mask:
                        break
                if mask or position in always:
                    found.append((position, mask))
        if always:
            listed = {position for position, _ in found}
            found += [(position, 0) for position in always if position not in listed]
        found.sort()
        policies = self.policies
        return [(policies[position], mask) for position, mask in found]


__all__ = ["Matched", "PolicyIndex"]
