"""Rendezvous (highest-random-weight) hashing: which member of the cluster owns a trace id.

Every instance computes the owner from the member list and the trace id alone, so all of
them agree without talking to each other. A member's weight for a trace is a hash of the
member and the trace id together; the member with the highest weight owns the trace.

Why rendezvous rather than a hash ring (ketama, `uhashring`): there are no virtual nodes to
tune for an even spread, the result does not depend on the order the members are listed in
(DNS answers come in any order), and when a member leaves only the traces it owned move,
each to its second choice: 1/N of them, the least any scheme can move. Its cost, one hash
per member per lookup (~0.2 µs each), is small for the tens of members a cluster has, and
it needs no dependency. The hash is BLAKE2b, not Python's `hash()`: it must give the same
weights in every process of every instance.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

SEED_BYTES = 16
WEIGHT_BYTES = 8


class Rendezvous:
    """The owners of trace ids over one member set (members change: build a new one)."""

    __slots__ = ("members", "_seeds")

    def __init__(self, members: Iterable[str]) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members)))
        # Each member's hash state after its own name: a lookup only copies it and adds the trace id.
        self._seeds = [(hashlib.blake2b(hashlib.blake2b(m.encode(), digest_size=SEED_BYTES).digest(),
                                        digest_size=WEIGHT_BYTES), m) for m in self.members]

    def owner(self, trace_id: bytes) -> str | None:
        """The member with the highest weight for `trace_id`; None when there are no members.

        Weights are equal-length digests, so comparing the bytes compares the numbers; a tie
        (practically never) goes to the first member in sorted order, the same everywhere."""
        best: str | None = None
        best_weight = b""
        for seed, member in self._seeds:
            state = seed.copy()
            state.update(trace_id)
            weight = state.digest()
            if weight > best_weight:
                best, best_weight = member, weight
        return best
