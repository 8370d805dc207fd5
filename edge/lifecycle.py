"""Child processes die with the process that started them, and stop on SIGTERM.

If the supervisor is SIGKILLed (OOM killer, `kill -9`, a crashed node agent), its children
would otherwise live on: gunicorn and its workers serving with frozen policies and holding
the port, so a new edge fails with "Address already in use". Linux's PR_SET_PDEATHSIG asks
the kernel to signal a process when its parent dies; SIGTERM lets each child drain and exit
as it would on a normal stop.

The signal is tied to the parent *thread* that forked: children must be started from a
thread that lives as long as the parent process (the supervisor starts them from its main
thread). A parent that died before the call is caught by comparing the parent pid.

A child on an event loop (the gRPC workers, the tail sampler) begins its stop when
`stop_requested()`'s event is set, by SIGTERM (the supervisor's stop, or its death) or SIGINT.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def die_with_parent(expected_parent: int | None = None, signum: int = signal.SIGTERM) -> None:
    """Ask for `signum` when the parent dies; if it is already gone, deliver it now."""
    if not sys.platform.startswith("linux"):
        return
    _libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    if expected_parent is not None and os.getppid() != expected_parent:
        os.kill(os.getpid(), signum)


def child_preexec() -> Callable[[], None]:
    """A `Popen(preexec_fn=...)` for the caller's children: runs in the child before exec.

    It only makes a system call, so it is safe in a parent that runs other threads.
    """
    parent = os.getpid()
    return lambda: die_with_parent(parent)


def stop_requested() -> asyncio.Event:
    """An event of the running loop, set by SIGTERM or SIGINT."""
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    return stopping
