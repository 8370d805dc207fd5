"""The supervisor's tail worker: the edge-tail pipeline as a child process of `edge`.

When the config has a `tail` section (keys = edge-tail's long flag names with `_`, plus
`paths`), the supervisor starts `python -m workers.tail` with `EDGE_RUN_DIR` set, stops
it with SIGTERM (it flushes, checkpoints and exits 0) and starts it again if it dies.
Policies: the section's `policy` file when it names one, else the policy snapshots the
supervisor publishes for the HTTP workers (the same policies as the proxy, switched
without a restart).

The supervisor's handle on this child is `supervisor.tail_child.tail_worker`, a `supervisor.child.ChildProcess`.
"""

from __future__ import annotations

import faulthandler
import logging
import os
import sys
import threading
from pathlib import Path

from edge import logs
from edge.channels.run_dir import RUN_DIR_ENV, RuntimePaths
from edge.channels.snapshots import SnapshotReader
from edge.config import from_json
from edge.tail.cli import install_stop_handlers
from edge.tail.runner import TailStartupError, run
from edge.tail.settings import SettingsError, from_mapping

log = logging.getLogger("edge.supervisor")


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


if __name__ == "__main__":
    sys.exit(main())
