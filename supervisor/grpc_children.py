"""The supervisor's handle on its OTLP/gRPC workers (`python -m workers.grpc`), one per HTTP worker.

They share the gRPC port through SO_REUSEPORT; the supervisor reserves it before any worker
starts (`supervisor.listener.reserve_port`), so a port in use is one error line and exit 2.
A worker that dies is started again (each at most once a second); on stop every worker
gets SIGTERM at once, finishes its calls in flight and exits, and is killed only when it
does not in time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from edge.config import Config
from edge.distributions import serves
from supervisor.child import ChildProcess

STOP_SECONDS = 12  # the workers' drain (10 s) plus their last statistics flush


def serves_grpc(config: Config, distribution: str) -> bool:
    """Whether this instance runs gRPC workers: `grpc.enabled` and a distribution that serves OTLP."""
    return config.grpc.enabled and serves(distribution, "otlp")


class GrpcWorkers:
    """All the gRPC workers of the instance."""

    def __init__(self, count: int, env: Mapping[str, str]) -> None:
        self.workers = [ChildProcess(f"gRPC worker {i}", "workers.grpc", env, STOP_SECONDS, logging.DEBUG)
                        for i in range(count)]

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
        return [w.pid for w in self.workers if w.pid is not None]
