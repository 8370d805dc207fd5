"""Merging the latest policy list of every provider into the one set that gets compiled.

The merger calls back only when the merged set really changed: a touched file or an
unchanged sync never costs a recompile. Whether it changed is decided by a version hash
that ignores order, so the same policies from a reordered file are the same set.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence

from edge.config import ProviderConfig
from edge.proto.tero.policy.v1.policy_pb2 import Policy

log = logging.getLogger("edge.providers")

OnChange = Callable[[list[Policy], str], None]
# (messages, publish): publish=False when a policy snapshot compiled next will carry them anyway
OnLoadErrors = Callable[[list[str], bool], None]


def policies_version(policies: Iterable[Policy]) -> str:
    """A short hash of a policy set that ignores order: identical sets get identical versions."""
    blobs = sorted((p.id, p.SerializeToString(deterministic=True)) for p in policies)
    digest = hashlib.sha256()
    for _, blob in blobs:
        digest.update(len(blob).to_bytes(8, "big"))
        digest.update(blob)
    return digest.hexdigest()[:16]


class PolicyMerger:
    """Merges the latest policy list of every provider by id into the one set that gets compiled.

    Precedence for an id defined by several providers: http providers over file providers (the
    policy server is the source of truth), then the provider listed first in the config.
    `on_change(policies, version)` runs under the merger's lock, so snapshots are delivered in
    order even though providers call in from their own threads. Load errors are merged the
    same way: `on_load_errors(messages, publish)` gets every provider's errors, each prefixed
    with the provider id, whenever they change; errors that come with new policies travel in
    the snapshot of those policies (publish=False), so a recovery is one snapshot, not two.
    """

    def __init__(self, on_change: OnChange, providers: Iterable[ProviderConfig] = (), *,
                 on_load_errors: OnLoadErrors | None = None) -> None:
        self._on_change = on_change
        self._on_load_errors = on_load_errors
        self._errors: dict[str, list[str]] = {}
        self._load_errors: list[str] = []
        self._lock = threading.RLock()
        self._rank: dict[str, tuple[int, int]] = {}
        self._sets: dict[str, list[Policy]] = {}
        self._merged: list[Policy] = []
        self._version = policies_version([])
        for config in providers:
            self.register(config.id, config.type)

    def register(self, provider_id: str, kind: str) -> None:
        """Declare a provider; registration order is config order (earlier wins among equals)."""
        with self._lock:
            if provider_id not in self._rank:
                self._rank[provider_id] = (1 if kind == "http" else 0, -len(self._rank))

    def update(self, provider_id: str, policies: Sequence[Policy]) -> bool:
        """A provider's new complete list. True when the merged set changed and was delivered.

        An unregistered provider id is registered as a file provider after the known ones.
        """
        with self._lock:
            self.register(provider_id, "file")
            self._sets[provider_id] = list(policies)
            merged = self._merge()
            version = policies_version(merged)
            if version == self._version:
                self._deliver_errors(publish=True)
                return False
            self._deliver_errors(publish=False)  # the snapshot compiled now carries them
            try:
                self._on_change(merged, version)
            except Exception:
                # Not marking the version as current makes the next update retry the delivery.
                log.exception("policy set %s could not be applied", version)
                return False
            self._merged, self._version = merged, version
            return True

    def report_errors(self, provider_id: str, errors: Sequence[str], deliver: bool = True) -> None:
        """A provider's current load errors (all of them; [] clears). Delivered only when the whole list changed;
        deliver=False when the provider's `update` follows at once and takes them along."""
        with self._lock:
            self.register(provider_id, "file")
            self._errors[provider_id] = list(errors)
            if deliver:
                self._deliver_errors(publish=True)

    def _deliver_errors(self, publish: bool) -> None:
        merged = [f"provider {pid}: {message}" for pid in self._rank for message in self._errors.get(pid, ())]
        if merged == self._load_errors:
            return
        try:
            if self._on_load_errors is not None:
                self._on_load_errors(list(merged), publish)
        except Exception:
            # Not recording them as delivered makes the provider's next report retry the delivery.
            log.exception("policy load errors could not be published")
            return
        self._load_errors = merged

    @property
    def load_errors(self) -> list[str]:
        with self._lock:
            return list(self._load_errors)

    def _merge(self) -> list[Policy]:
        by_id: dict[str, Policy] = {}
        for provider_id in sorted(self._sets, key=self._rank.__getitem__):
            for policy in self._sets[provider_id]:
                by_id[policy.id] = policy  # higher rank comes later and overwrites
        return [by_id[pid] for pid in sorted(by_id, key=lambda s: s.encode())]

    def current(self) -> tuple[list[Policy], str]:
        """The last delivered set and its version (empty set before the first change)."""
        with self._lock:
            return list(self._merged), self._version

    @property
    def version(self) -> str:
        with self._lock:
            return self._version
