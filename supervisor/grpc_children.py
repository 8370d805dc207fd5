"""The supervisor's handle on its OTLP/gRPC workers (`python -m workers.grpc`), one per HTTP worker.

They share the gRPC port through SO_REUSEPORT; the supervisor reserves it before any worker
starts (`supervisor.listener.reserve_port`), so a port in use is one error line and exit 2.
A worker that dies is started again (each at most once a second); on stop every worker
gets SIGTERM at once, finishes its calls in flight and exits, and is killed only when it
does not in time.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

from edge.config import Config
from edge.lifecycle import child_preexec

log = logging.getLogger("edge.supervisor")

STOP_SECONDS = 12  # the workers' drain (10 s) plus their last statistics flush
RESTART_DELAY_SECONDS = 1.0
GRPC_DISTRIBUTIONS = frozenset({"edge", "otlp"})  # the distributions that serve OTLP


def serves_grpc(config: Config, distribution: str) -> bool:
    """Whether this instance runs gRPC workers: `grpc.enabled` and a distribution that serves OTLP."""
    return config.grpc.enabled and distribution in GRPC_DISTRIBUTIONS


class GrpcWorker:
    """One gRPC worker process: started, watched, restarted when it exits."""

    def __init__(self, index: int, env: Mapping[str, str]) -> None:
        self.index = index
        self.env = dict(env)
        self.process: subprocess.Popen | None = None
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "workers.grpc"], env=self.env,
                                        preexec_fn=child_preexec())
        log.debug("gRPC worker %d started (pid %d)", self.index, self.process.pid)

    def watch(self) -> None:
        """Restart the worker if it exited (at most once a second)."""
        if self.process is None or self.process.poll() is None:
            return
        now = time.monotonic()
        if not self.restart_at:
            log.error("gRPC worker %d (pid %d) exited with status %s; restarting it", self.index, self.process.pid,
                      self.process.returncode)
            self.restart_at = now + RESTART_DELAY_SECONDS
        if now >= self.restart_at:
            self.restart_at = 0.0
            self.start()

    def terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait(self, deadline: float) -> None:
        """Wait for the exit until `deadline` (monotonic), then kill."""
        if self.process is None:
            return
        try:
            self.process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("gRPC worker %d did not stop in %d s; killing it", self.index, STOP_SECONDS)
            self.process.kill()
            self.process.wait()


class GrpcWorkers:
    """All the gRPC workers of the instance."""

    def __init__(self, count: int, env: Mapping[str, str]) -> None:
        self.workers = [GrpcWorker(i, env) for i in range(count)]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def watch(self) -> None:
        """Called about once a second by the supervisor's loop."""
        for worker in self.workers:
            worker.watch()

    def terminate(self) -> None:
        """SIGTERM to every worker: they stop accepting and drain in parallel (with the HTTP workers)."""
        for worker in self.workers:
            worker.terminate()

    def wait(self) -> None:
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self.workers:
            worker.wait(deadline)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self.workers if w.process is not None]
