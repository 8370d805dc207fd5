"""The thread every policy provider runs in: start, prompt stop, first-attempt readiness.

Providers fail safe: a broken or missing file, or a policy server that is down, keeps the
last good policies, and a bug in a provider is logged without killing its thread (a
silent dead thread would freeze policies).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from edge.config import ProviderConfig
from edge.proto.tero.policy.v1.policy_pb2 import Policy

log = logging.getLogger("edge.providers")

OnUpdate = Callable[[str, list[Policy]], None]
# (provider id, every load error the provider has now, deliver): an empty list clears them. Errors
# travel apart from policies because a broken file keeps the last good policies yet must be shown;
# deliver=False says the provider's on_update follows at once and takes them along.
OnErrors = Callable[[str, list[str], bool], None]


def _ignore_errors(provider_id: str, errors: list[str], deliver: bool = True) -> None:
    """The default when nobody listens for load errors (they are logged by the provider anyway)."""


def fallback(policies_in_force: int | None, until: str) -> str:
    """What a failing provider leaves in force, said truthfully: its last good policies only when
    it has delivered some; otherwise nothing of its own is filtered until `until`."""
    if policies_in_force:
        return "keeping the last good policies"
    return f"nothing is filtered until {until}"


class ProviderThread:
    """Thread plumbing shared by the providers; subclasses implement `_run` (one pass of their loop)."""

    kind = ""

    def __init__(self, config: ProviderConfig, on_update: OnUpdate, on_errors: OnErrors | None = None) -> None:
        self.config = config
        self.id = config.id
        self._on_update = on_update
        self._on_errors = on_errors or _ignore_errors
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the daemon thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run_forever, name=f"policy-provider-{self.id}",
                                            daemon=True)
            self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to stop without waiting (ProviderSet stops all providers in parallel)."""
        self._stopping.set()
        self._interrupt()

    def join(self, timeout: float) -> None:
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(max(timeout, 0.0))

    def stop(self, timeout: float = 1.0) -> None:
        self.request_stop()
        self.join(timeout)

    def wait_ready(self, timeout: float) -> bool:
        """True once the first load / sync attempt finished (whether or not it succeeded)."""
        return self._ready.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _report_errors(self, errors: list[str], before_update: bool = False) -> None:
        """Replace this provider's load errors (shown by GET /_edge/policies); [] clears them.

        before_update: new policies are delivered right after, and the errors go with them.
        """
        self._on_errors(self.id, list(errors), not before_update)

    def _interrupt(self) -> None:
        """Wake the thread out of its wait (subclasses wait on more than the stop event)."""

    def _run(self) -> None:
        raise NotImplementedError

    def _run_forever(self) -> None:
        # The loops guard each step themselves; this outer guard catches bugs in the loop itself.
        while not self._stopping.is_set():
            try:
                self._run()
            except Exception:
                log.exception("policy provider %s: unexpected error, continuing", self.id)
                self._ready.set()
                self._stopping.wait(1.0)

    def _guarded(self, step: Callable[[], Any]) -> Any:
        try:
            return step()
        except Exception:
            log.exception("policy provider %s: unexpected error, continuing", self.id)
            return None
