"""One supervised child process (`python -m <module>`): started, watched, restarted, stopped.

The tail worker, each gRPC worker and the tail sampler are all run the same way: started
with the run directory in their environment, started again when they die (at most once a
second, so a child that cannot start does not spin), stopped with SIGTERM and killed only
when they do not finish their own shutdown in time.
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

RESTART_DELAY_SECONDS = 1.0


class ChildProcess:
    """A child running `python -m module`, named in log lines as `name`."""

    def __init__(self, name: str, module: str, env: Mapping[str, str], stop_seconds: float,
                 start_level: int = logging.INFO, exit_names_pid: bool = True) -> None:
        self.name = name
        self.module = module
        self.env = dict(env)
        self.stop_seconds = stop_seconds
        self.start_level = start_level  # many identical children (gRPC workers) log their start at debug
        self.exit_names_pid = exit_names_pid  # among identical children the pid tells which one died
        self.process: subprocess.Popen[bytes] | None = None
        self.restart_at = 0.0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", self.module], env=self.env,
                                        preexec_fn=child_preexec())
        log.log(self.start_level, "%s started (pid %d)", self.name, self.process.pid)

    def watch(self) -> None:
        """Called about once a second: restart a child that exited (at most once a second)."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if not self.restart_at:
            who = f"{self.name} (pid {self.process.pid})" if self.exit_names_pid else self.name
            log.error("%s exited with status %s; restarting it", who, self.process.returncode)
            self.restart_at = now + RESTART_DELAY_SECONDS
        if now >= self.restart_at:
            self.restart_at = 0.0
            self.start()

    def terminate(self) -> None:
        """SIGTERM: the child stops accepting work, finishes its own and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait for the exit until `deadline` (monotonic), then kill."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s; killing it", self.name, self.stop_seconds)
            self.process.kill()
            self.process.wait()

    def stop(self) -> None:
        """SIGTERM, then wait at most `stop_seconds`."""
        self.terminate()
        self.wait(time.monotonic() + self.stop_seconds)
