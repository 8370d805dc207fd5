"""The supervisor's handle on its tail worker child (`python -m workers.tail`).

A `ChildProcess`: restarted when it dies, stopped with SIGTERM and killed only when it
does not flush and exit in time.
"""

from __future__ import annotations

from collections.abc import Mapping

from supervisor.child import ChildProcess

STOP_SECONDS = 15  # SIGTERM → exit: output flush plus a forward target's drain (10 s)


def tail_worker(env: Mapping[str, str]) -> ChildProcess:
    """The tail worker's handle, not started yet."""
    return ChildProcess("tail worker", "workers.tail", env, STOP_SECONDS, exit_names_pid=False)
