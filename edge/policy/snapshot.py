"""A compiled policy set that travels between processes as bytes.

The supervisor compiles once and publishes `Snapshot.to_bytes()`; each worker calls
`Snapshot.from_bytes()` and gets ready-to-scan Hyperscan databases without compiling
anything. Runtime objects (loaded databases, per-thread scratch space, RE2 programs)
are created lazily in the process that uses them and never serialised.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass, field
from typing import Any

import hyperscan
import re2

from edge.engine.substitute import Substitution
from edge.policy.model import SIGNALS, CompiledPolicy, FieldKey, SignalPlan

_FORMAT = 2  # 2: several databases per field, exact-value dicts
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class SnapshotFormatError(ValueError):
    """The bytes are not a snapshot this version of edge can read."""


@dataclass
class Snapshot:
    """Every policy (valid or not, for status reporting) and the per-signal plans."""

    version: str = ""
    policies: list[CompiledPolicy] = field(default_factory=list)
    plans: dict[str, SignalPlan] = field(default_factory=dict)
    load_errors: list[str] = field(default_factory=list)
    _runtime: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # ── serialisation ──

    def to_bytes(self) -> bytes:
        state = {"format": _FORMAT, "version": self.version, "policies": self.policies,
                 "plans": self.plans, "load_errors": self.load_errors}
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, data: bytes | memoryview) -> Snapshot:
        """Load a snapshot published by a supervisor (trusted: our own process tree)."""
        try:
            state = pickle.loads(data)
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not a snapshot"
            raise SnapshotFormatError(f"unreadable snapshot: {exc}") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise SnapshotFormatError("snapshot format mismatch")
        return cls(state["version"], state["policies"], state["plans"], state["load_errors"])

    # ── queries ──

    def plan(self, signal: str) -> SignalPlan:
        return self.plans.get(signal) or SignalPlan(signal)

    def targets(self, signal: str) -> bool:
        """Whether any valid policy applies to the signal (if not, skip parsing entirely)."""
        return bool(self.plans.get(signal))

    def errors(self) -> dict[str, list[str]]:
        """Compile errors of enabled policies (a disabled policy does not exist, docs/policies.md §1)."""
        return {p.id: list(p.errors) for p in self.policies if p.errors and p.enabled}

    # ── runtime objects, built on first use in this process ──

    def databases(self, signal: str, key: FieldKey) -> list[tuple[hyperscan.Database, hyperscan.Scratch]]:
        """The field's Hyperscan databases, each with a scratch for the calling thread (cached per thread)."""
        local = self._runtime.get("local")
        if local is None:
            local = self._runtime.setdefault("local", threading.local())
        cache = getattr(local, "databases", None)
        if cache is None:
            cache = local.databases = {}
        found = cache.get((signal, key))
        if found is None:
            found = cache[(signal, key)] = [(db, hyperscan.Scratch(db)) for db in self._load_databases(signal, key)]
        return found

    def _load_databases(self, signal: str, key: FieldKey) -> list[hyperscan.Database]:
        """Deserialised once per process, shared by its threads (a scratch is per thread)."""
        with self._lock():
            dbs = self._runtime.get(("hs", signal, key))
            if dbs is None:
                raw = self.plans[signal].fields[key].hs_databases
                dbs = self._runtime[("hs", signal, key)] = [
                    hyperscan.loadb(bytes(blob), hyperscan.HS_MODE_BLOCK) for blob in raw]
        return dbs

    def _lock(self) -> threading.Lock:
        return self._runtime.setdefault("lock", threading.Lock())

    def regex(self, pattern: str) -> re2._Regexp:
        """A compiled RE2 program (patterns were validated when the snapshot was compiled)."""
        cache = self._runtime.setdefault("re2", {})
        program = cache.get(pattern)
        if program is None:
            program = cache[pattern] = re2.compile(pattern, _RE2_OPTIONS)
        return program

    def substitution(self, pattern: str, template: str) -> Substitution:
        """A redaction's program and template, resolved once per snapshot."""
        cache = self._runtime.setdefault("substitutions", {})
        found = cache.get((pattern, template))
        if found is None:
            found = cache[(pattern, template)] = Substitution(self.regex(pattern), template)
        return found


def empty_snapshot() -> Snapshot:
    """No policies: everything passes through untouched."""
    return Snapshot(plans={s: SignalPlan(s) for s in SIGNALS})
