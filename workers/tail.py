"""The supervisor's tail worker: the edge-tail pipeline as a child process of `edge`.

When the config has a `tail` section (keys = edge-tail's long flag names with `_`, plus
`paths`), the supervisor starts `python -m workers.tail` with `EDGE_RUN_DIR` set, stops
it with SIGTERM (it flushes, checkpoints and exits 0) and starts it again if it dies.
Policies: the section's `policy` file when it names one, else the policy snapshots the
supervisor publishes for the HTTP workers (the same policies as the proxy, switched
without a restart).

`TailWorkerProcess` is the supervisor's handle on that child.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from edge import logs
from edge.config import from_json
from edge.snapshot_channel import SnapshotReader
from edge.tail.cli import install_stop_handlers
from edge.tail.runner import TailStartupError, run
from edge.tail.settings import SettingsError, from_mapping
from workers.paths import RUN_DIR_ENV, RuntimePaths

log = logging.getLogger("edge.supervisor")

STOP_SECONDS = 15  # SIGTERM → exit: output flush plus a forward target's drain (10 s)
RESTART_DELAY_SECONDS = 1.0


def main() -> int:
    """Entry point of the child process."""
    faulthandler.enable()
    run_dir = os.environ.get(RUN_DIR_ENV)
    if not run_dir:
        print(f"edge tail worker: {RUN_DIR_ENV} is not set: the edge supervisor starts this worker", file=sys.stderr)
        return 2
    paths = RuntimePaths.read(run_dir)
    config = from_json(Path(paths.config).read_bytes())
    logs.configure(config.log_level)
    try:
        settings = from_mapping(config.tail)
    except SettingsError as exc:
        log.error("tail worker: %s", exc)
        return 2
    stop, wakeup = threading.Event(), threading.Event()
    install_stop_handlers(stop, wakeup)
    reader = SnapshotReader(paths.snapshot_control)
    try:
        return run(settings, stop, wakeup, snapshots=reader.current)
    except TailStartupError as exc:
        log.error("tail worker: %s", exc)
        return 2
    finally:
        reader.close()


class TailWorkerProcess:
    """Starts the tail worker, restarts it when it dies, stops it with SIGTERM."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.process: subprocess.Popen | None = None
        self.restart_at = 0.0

    def start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "workers.tail"], env=self.env)
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


if __name__ == "__main__":
    sys.exit(main())
