"""The supervisor's handle on its tail sampler (`python -m workers.sampler`).

With `tail_sampling.enabled` in a distribution that serves OTLP (edge, otlp), the instance
runs one sampler process: the workers hand it every trace batch over its Unix socket. It
is a `ChildProcess`: restarted when it dies (its write-ahead log brings back what it held),
stopped with SIGTERM, and killed only when its own shutdown (log synced, exports flushed
for a bounded time) overruns.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge.config import Config
from edge.distributions import serves
from supervisor.child import ChildProcess

# SIGTERM → exit: the sampler flushes its exports for at most 10 s (workers.sampler.FLUSH_SECONDS), then syncs its log.
STOP_SECONDS = 15
SOCKET_NAME = "sampler.sock"


def runs_sampler(config: Config, distribution: str) -> bool:
    """Whether this instance runs a tail sampler: `tail_sampling.enabled` and a distribution that takes traces."""
    return config.tail_sampling.enabled and serves(distribution, "otlp")


def sampler_process(env: Mapping[str, str]) -> ChildProcess:
    """The sampler's handle, not started yet."""
    return ChildProcess("tail sampler", "workers.sampler", env, STOP_SECONDS)
