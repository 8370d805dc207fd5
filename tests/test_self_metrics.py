"""The metrics' process id: prometheus_client asks it before every write to tell a fork, edge answers from memory."""

from __future__ import annotations

import os

from edge.protocols.self_metrics import current_pid


def test_current_pid_is_the_process_id_and_follows_a_fork() -> None:
    assert current_pid() == os.getpid()
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: report whether the id was updated by the fork hook, then leave at once
        os.write(write, b"1" if current_pid() == os.getpid() else b"0")
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
