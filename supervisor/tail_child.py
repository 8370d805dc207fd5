"""The supervisor's handle on its tail worker child (`python -m workers.tail`).

It starts the child with the run directory in its environment, restarts it when it
dies (at most once a second) and stops it with SIGTERM, killing it only when it does
not flush and exit in time.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from edge.lifecycle import child_preexec

log = logging.getLogger("edge.supervisor")

STOP_SECONDS = 15  # SIGTERM → exit: output flush plus a forward target's drain (10 s)
RESTART_DELAY_SECONDS = 1.0


class TailWorkerProcess:
    """Starts the tail worker, restarts it when it dies, stops it with SIGTERM."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.process: subprocess.Popen | None = None
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "workers.tail"], env=self.env,
                                        preexec_fn=child_preexec())
        log.info("tail worker started (pid %d)", self.process.pid)

    def watch(self) -> None:
        """Called about once a second: restart a worker that exited (at most once a second)."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if not self.restart_at:
            log.error("tail worker exited with status %s; restarting it", self.process.returncode)
            self.restart_at = now + RESTART_DELAY_SECONDS
        if now >= self.restart_at:
            self.restart_at = 0.0
            self.start()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            log.warning("tail worker did not stop in %d s; killing it", STOP_SECONDS)
            self.process.kill()
            self.process.wait()
