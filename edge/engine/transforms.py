"""Log transforms (docs/policies.md §5): remove, redact, rename, add.

Policies apply in policy-id order, each running its four stages in that order. This
is what the conformance cases pin (compound_transforms_across_policies: a later
policy's rename lands after an earlier policy's adds), and what docs/policies.md §5
documents. A transform that finds its field absent is a no-op
(counted as a stage miss); one that changes the record is a stage hit.
"""

from __future__ import annotations

from edge.engine import bits
from edge.engine.batch import LogBatch
from edge.engine.stats import MatchStats
from edge.engine.substitute import substitute
from edge.policy.model import Add, CompiledPolicy, FieldKey, Redact, Rename
from edge.policy.snapshot import Snapshot


def _rename_target(source: FieldKey, to: str) -> FieldKey:
    """A rename moves the value to attribute `to` beside the source (log fields -> log attributes)."""
    head = source[0]
    if head == "log_field":
        return ("log_attribute", (to,))
    return (head, source[1][:-1] + (to,))


def _remove(batch: LogBatch, snapshot: Snapshot, i: int, key: FieldKey) -> bool:
    return batch.delete(i, key)


def _redact(batch: LogBatch, snapshot: Snapshot, i: int, op: Redact) -> bool:
    value = batch.get(i, op.field)
    if value is None:
        return False
    if op.regex is None:
        return batch.set(i, op.field, batch.string_value(op.replacement))
    text = batch.string_of(value)
    if text is None:
        return False
    redacted = substitute(snapshot.substitution(op.regex, op.replacement), text)
    if redacted == text:
        return False
    return batch.set(i, op.field, batch.string_value(redacted))


def _rename(batch: LogBatch, snapshot: Snapshot, i: int, op: Rename) -> bool:
    value = batch.get(i, op.source)
    if value is None:
        return False
    target = _rename_target(op.source, op.to)
    if target == op.source:
        return False
    if not op.upsert and batch.get(i, target) is not None:
        return False
    if not batch.set(i, target, value):
        return False
    batch.delete(i, op.source)
    return True


def _add(batch: LogBatch, snapshot: Snapshot, i: int, op: Add) -> bool:
    if not op.upsert and batch.get(i, op.field) is not None:
        return False
    return batch.set(i, op.field, batch.string_value(op.value))


def apply_transforms(batch: LogBatch, snapshot: Snapshot, targets: list[tuple[CompiledPolicy, int]],
                     stats: MatchStats | None) -> None:
    """Apply the transforms of `targets` (policy, mask of kept records it matched)."""
    for policy, mask in targets:
        if not (policy.transform and mask):
            continue
        records = bits.indices(mask)
        for stage, apply in _STAGES:
            ops = getattr(policy.transform, stage)
            if not ops:
                continue
            hits = sum(apply(batch, snapshot, i, op) for i in records for op in ops)
            if stats is not None:
                stats.add_stage(policy.id, stage, hits, len(records) * len(ops) - hits)


# Within one policy the stages run in this order (docs/policies.md §5).
_STAGES = (("remove", _remove), ("redact", _redact), ("rename", _rename), ("add", _add))
