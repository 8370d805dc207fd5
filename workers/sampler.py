"""The supervisor's tail sampler: `python -m workers.sampler`, one per instance with `tail_sampling.enabled`.

It opens the write-ahead log (which brings back what a previous run left), serves the
workers' submissions on the Unix socket named in `runtime.json`, and on one asyncio loop
decides due traces about twenty times a second, sends the span rollup every
`rollup_interval` and updates its gauges every second. Its metrics go to the instance's
`PROMETHEUS_MULTIPROC_DIR`, so every worker's `/_edge/metrics` shows them.

SIGTERM: stop accepting (workers get UNAVAILABLE, hence 503 with Retry-After), send the
rollup, let the exporters deliver for at most FLUSH_SECONDS, sync the log, exit 0. Traces
still undecided stay in the log and are decided by the next run.

The supervisor's handle on this child is `supervisor.sampler_child`.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import functools
import logging
import os
import sys
import time
from pathlib import Path

import uvloop

from edge import logs
from edge.channels.run_dir import RuntimePaths
from edge.config import Config, from_json
from edge.lifecycle import die_with_parent, stop_requested
from edge.tailsampling.assembly import SamplerParts, assemble
from edge.tailsampling.channel import serve_connection
from edge.tailsampling.sampler import TailSampler
from edge.tailsampling.wal import WalLocked

log = logging.getLogger("edge.sampler")

TICK_SECONDS = 0.05  # due traces are decided within this of their decision_wait
OBSERVE_SECONDS = 1.0
FLUSH_SECONDS = 10.0  # exports still in flight at SIGTERM get this long
SERVER_CLOSE_SECONDS = 2.0
EXIT_CANNOT_START = 2


async def run_loop(sampler: TailSampler, parts: SamplerParts, stopping: asyncio.Event) -> None:
    """Decide, export, roll up and observe until `stopping` is set."""
    interval = parts.config.rollup_interval
    loop = asyncio.get_running_loop()
    next_rollup = loop.time() + interval
    next_observe = loop.time()
    while not stopping.is_set():
        sampler.tick()
        now = loop.time()
        if now >= next_rollup:
            sampler.send_rollup()
            next_rollup = now + interval
        if now >= next_observe:
            parts.observe(sampler)
            next_observe = now + OBSERVE_SECONDS
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), TICK_SECONDS)


async def shut_down(sampler: TailSampler, parts: SamplerParts, server: asyncio.Server) -> None:
    """Stop accepting, hand over what is decided, give the exporters FLUSH_SECONDS, close the log."""
    sampler.accepting = False
    server.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(server.wait_closed(), SERVER_CLOSE_SECONDS)
    sampler.tick()
    sampler.send_rollup()
    await parts.close(FLUSH_SECONDS, sampler)


async def serve(paths: RuntimePaths, config: Config) -> int:
    try:
        parts = await assemble(config)
    except (OSError, WalLocked) as exc:  # the log's directory: one line saying why, not a traceback a second
        log.error("tail sampler cannot open its write-ahead log in %s (tail_sampling.wal_dir): %s",
                  config.tail_sampling.wal_dir, exc)
        return EXIT_CANNOT_START
    sampler = parts.sampler(time.time)
    sampler.restore(parts.wal.replay())
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.sampler_socket)  # left by a sampler that was killed
    server = await asyncio.start_unix_server(functools.partial(serve_connection, submitted=sampler.handle),
                                             path=paths.sampler_socket)
    log.info("tail sampler ready: %d traces buffered, write-ahead log at %s (%d bytes)", len(sampler.buffer),
             config.tail_sampling.wal_dir, parts.wal.bytes_used)
    stopping = stop_requested()
    await run_loop(sampler, parts, stopping)
    await shut_down(sampler, parts, server)
    log.info("tail sampler stopped: %d traces left undecided in the write-ahead log", len(sampler.buffer))
    return 0


def main() -> int:
    """Entry point of the child process."""
    faulthandler.enable()
    die_with_parent()  # never outlives its supervisor (SIGTERM: a clean stop, the log synced)
    paths = RuntimePaths.from_environment()
    config = from_json(Path(paths.config).read_bytes())
    logs.configure(config.log_level)
    try:
        return uvloop.run(serve(paths, config))
    except Exception:
        log.exception("tail sampler failed")
        return 1


if __name__ == "__main__":
    sys.exit(main())
