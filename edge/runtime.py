"""What the HTTP app and its protocol routes need from the process they run in.

A gunicorn worker (`workers.runtime.WorkerRuntime`) and the Lambda extension
(`edge.lambda_extension.runtime.LocalRuntime`) hold their snapshots, statistics and
extension handlers very differently; the app (`edge.protocols.app.create_app`) sees
only this Protocol, so either can serve it and neither has to mimic the other's insides.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge.config import Config
from edge.engine.engine import Engine
from edge.policy.snapshot import Snapshot


class CurrentSnapshot(Protocol):
    """The runtime's snapshots as the admin endpoints read them."""

    def current(self) -> Snapshot | None:
        """The newest snapshot; None before the first."""
        ...


@runtime_checkable
class Runtime(Protocol):
    """One serving process's state, shared by every request it handles."""

    @property
    def config(self) -> Config: ...

    @property
    def snapshots(self) -> CurrentSnapshot: ...

    @property
    def generation(self) -> int:
        """Generation of the newest snapshot (0 before the first)."""
        ...

    def engine(self) -> Engine | None:
        """The engine for the newest snapshot; None until the first one (raw passthrough)."""
        ...

    def flush_stats(self) -> None:
        """Hand the match statistics counted so far to the control plane (about once a second)."""
        ...

    def start_extensions(self) -> None:
        """Start the extension handlers' background work (ASGI lifespan startup)."""
        ...

    def stop_extensions(self) -> None:
        """Deliver what extensions still hold, bounded in time (ASGI lifespan shutdown; blocks)."""
        ...

    def close(self) -> None:
        """Release what the runtime holds (last thing at shutdown)."""
        ...
