"""Waiting on a condition with a deadline: the one way the suite waits for something to happen.

A fixed sleep is a guess at how long something takes. On a loaded machine the guess is
wrong: the test fails when it was too short and wastes time when it was too long.
`wait_for` polls the condition instead and returns as soon as it holds; its deadline only
bounds a hang, so deadlines are generous and never a claim about speed.

For an event that must NOT happen ("time to go wrong"), `assert not wait_for(fault, seconds)`
gives the fault a bounded chance to show, and says in the code which fault is looked for.
"""

from __future__ import annotations

import time
from collections.abc import Callable

DEFAULT_TIMEOUT = 20.0  # seconds: a hang bound, far above what any condition needs on a busy machine


def wait_for(condition: Callable[[], object], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.02) -> bool:
    """True as soon as `condition()` is truthy; False when it still is not after `timeout` seconds.

    The condition is checked once more at the deadline, so a slow poll never misses a late success.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)  # the poll interval: the loop waits on the condition, not on this
