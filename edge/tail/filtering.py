"""Apply a policy file to blocks of lines: bytes in, kept lines' bytes out.

The policy file goes through the proxy's loader and compiler into a `Snapshot`, and
each block through the proxy's `Engine` as one `LineBatch`. Kept lines are cut out of
the block with one `compress` and one `join`; a block where everything is kept is
returned as the same bytes object. The reader already cuts lines to `max_line`; a longer
line handed in by another caller is kept without evaluation. Any internal error keeps the
whole block (fail-open). Only imported when there are policies (`edge.tail.keeping`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from itertools import compress

from edge.engine import bits
from edge.engine.engine import Engine
from edge.engine.holder import EngineHolder, SnapshotSource
from edge.formats.lines.batch import LineBatch, decode_lines, decode_records
from edge.formats.lines.patterns import Fields
from edge.formats.lines.records import DEFAULT_NAMES, FieldNames
from edge.policy.compiler import compile_policies
from edge.policy.loader import PolicyFileError, load_file
from edge.policy.model import LOG
from edge.policy.snapshot import Snapshot, empty_snapshot
from edge.tail.keeping import Kept

log = logging.getLogger("edge.tail")

_SELECTORS = bytes.maketrans(b"01", b"\x00\x01")


class PolicyLoadError(ValueError):
    """The policy file cannot be read or parsed (one line for the operator)."""


def load_snapshot(path: str) -> Snapshot:
    """Compile a policy file; bad individual policies are logged and left out (fail-open)."""
    if not path:
        return empty_snapshot()
    try:
        loaded = load_file(path)
    except PolicyFileError as exc:
        raise PolicyLoadError(str(exc)) from None
    snapshot = compile_policies(loaded.policies, load_errors=loaded.errors)
    for message in snapshot.load_errors:
        log.warning("%s: %s", path, message)
    for pid, errors in snapshot.errors().items():
        log.warning("%s: policy %s is inert: %s", path, pid, "; ".join(errors))
    return snapshot


class LastGoodSnapshot:
    """A snapshot source that answers with the last snapshot it could read when reading fails.

    An unreadable new snapshot must not stop the tail: it keeps evaluating with the
    previous one (and so with the previous engine) until a read succeeds again.
    """

    def __init__(self, source: SnapshotSource) -> None:
        self._source = source
        self._last: Snapshot | None = None

    def __call__(self) -> Snapshot | None:
        try:
            self._last = self._source()
        except Exception:  # noqa: BLE001 - an unreadable new snapshot: keep evaluating with the last one
            log.exception("cannot read the current policy snapshot; keeping the previous one")
        return self._last


def has_log_policies(snapshot: Snapshot) -> bool:
    """Only snapshots with log policies get an engine: without, every line is kept untouched."""
    return bool(snapshot.targets(LOG))


class LineFilter:
    """Filters blocks of complete lines with the current snapshot's engine.

    `source` returns the snapshot to use (a fixed one for `-p`, the supervisor's newest
    for its tail worker; None = no policies yet). A new snapshot gets a new engine; the
    check costs one call per block.
    """

    def __init__(self, source: SnapshotSource, fmt: str, max_line: int,
                 resource: Mapping[str, str] | None = None, names: FieldNames = DEFAULT_NAMES,
                 fields: Fields | None = None) -> None:
        self._engines = EngineHolder(LastGoodSnapshot(source), wanted=has_log_policies)
        self.format = fmt
        self.names = names
        self.fields = fields
        self.max_line = max_line
        self.resource = dict(resource or {})

    @classmethod
    def fixed(cls, snapshot: Snapshot, fmt: str, max_line: int,
              resource: Mapping[str, str] | None = None) -> LineFilter:
        return cls(lambda: snapshot, fmt, max_line, resource)

    def apply(self, block: bytes, file_path: str = "", records: list[bytes] | None = None) -> Kept:
        """`block` holds complete lines, each ending with a newline; `records`, when given, are the
        multi-line records it joins, each evaluated as one."""
        engine = self._engines.engine() if block else None
        if engine is None:
            return Kept(block, block.count(b"\n") if records is None else len(records), records)
        lines = records if records is not None else block.split(b"\n")[:-1]
        try:
            alive = self._alive(engine, block, lines, file_path, records is not None)
        except Exception:  # noqa: BLE001 - fail-open: an evaluation bug never loses lines
            log.exception("policy evaluation failed; keeping the %d lines of this block", len(lines))
            return Kept(block, len(lines), records)
        n = len(lines)
        if alive == bits.full_mask(n):
            return Kept(block, n, records)
        kept = list(compress(lines, bits.flags(alive, n).encode().translate(_SELECTORS)))
        joined = kept if records is not None else None
        return Kept(b"\n".join(kept) + b"\n", len(kept), joined) if kept else Kept(b"", 0, joined)

    def _alive(self, engine: Engine, block: bytes, lines: list[bytes], file_path: str, joined: bool) -> int:
        """The mask of lines to keep; over-long lines are kept without evaluation."""
        if len(block) <= self.max_line or max(map(len, lines)) <= self.max_line:
            return self._evaluate(engine, block, lines, file_path, joined)
        short = [i for i, line in enumerate(lines) if len(line) <= self.max_line]
        alive = bits.full_mask(len(lines)) ^ bits.from_indices(short, len(lines))
        if short:
            subset = [lines[i] for i in short]
            sub_alive = self._evaluate(engine, b"\n".join(subset) + b"\n", subset, file_path, joined)
            alive |= bits.from_indices([short[j] for j in bits.indices(sub_alive)], len(lines))
        return alive

    def _evaluate(self, engine: Engine, block: bytes, lines: list[bytes], file_path: str, joined: bool) -> int:
        texts = decode_records(lines) if joined else decode_lines(block)
        batch = LineBatch(lines, texts, self.format, file_path, self.resource, self.names, self.fields)
        engine.evaluate(LOG, batch)
        return batch.alive
