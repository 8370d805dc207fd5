"""Extension dispatch (docs/policies.md §9): copies of selected records go to registered handlers.

Selection happens after the keep outcome is final and before transforms; the handler
gets copies, so nothing it does can change what is forwarded. Handlers must return
quickly (queue and work off the request path); an unknown type is skipped.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from edge.engine import bits
from edge.engine.batch import Batch
from edge.policy.model import CompiledPolicy
from edge.proto.tero.policy.v1 import policy_pb2 as pb

log = logging.getLogger(__name__)

S3_DUMP = "com.usetero/s3-dump"  # the extension type edge ships a handler for (edge/extensions/s3_dump.py)


class ExtensionHandler(Protocol):
    def submit(self, policy_id: str, signal: str, config: bytes, records: list[dict[str, Any]]) -> None:
        """Accept copies of records; must not block the request path."""
        ...


class ExtensionRegistry:
    """Handlers by extension type (`com.usetero/s3-dump`, ...)."""

    def __init__(self) -> None:
        self._handlers: dict[str, ExtensionHandler] = {}

    def register(self, extension_type: str, handler: ExtensionHandler) -> None:
        self._handlers[extension_type] = handler

    def handler(self, extension_type: str) -> ExtensionHandler | None:
        return self._handlers.get(extension_type)

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def __bool__(self) -> bool:
        return bool(self._handlers)


def selected(mode: int, matched: int, alive: int, full: int) -> int:
    """The records an extension mode selects for one policy."""
    if mode == pb.EXTENSION_MODE_KEPT:
        return matched & alive
    if mode == pb.EXTENSION_MODE_DROPPED:
        return matched & ~alive & full
    if mode == pb.EXTENSION_MODE_UNMATCHED:
        return full & ~matched
    if mode == pb.EXTENSION_MODE_ALL:
        return full
    return matched


def dispatch(registry: ExtensionRegistry | None, signal: str, matched_by: list[tuple[CompiledPolicy, int]],
             alive: int, batch: Batch) -> None:
    """Hand each policy's selected records (`matched_by`: policy, its match mask) to its
    extensions' handlers, as `batch.export` copies (fail-open)."""
    if not registry:
        return
    full, export = batch.full, batch.export
    for policy, matched in matched_by:
        for ext in policy.extensions:
            handler = registry.handler(ext.type)
            if handler is None:
                continue
            chosen = selected(ext.mode, matched, alive, full)
            if not chosen:
                continue
            try:
                handler.submit(policy.id, signal, ext.config, [export(i) for i in bits.indices(chosen)])
            except Exception:  # noqa: BLE001 - an extension never affects the telemetry path
                log.exception("extension %s of policy %s failed", ext.type, policy.id)
