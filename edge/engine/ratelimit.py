"""Per-policy fixed-window rate limiters (docs/policies.md §4, "N/s", "N/Dm").

The window starts when the policy is loaded; a new window starts at the first record
after the previous one ended. `take(k)` settles a whole batch at once: the first
`allowed` matching records of the batch are kept. The proxy swaps in a limiter backed
by shared memory so the limit holds across worker processes; this one is per process.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class RateLimiter(Protocol):
    def load(self, policy_ids: set[str]) -> None:
        """Start the first window of newly loaded rate-limit policies now."""
        ...

    def take(self, policy_id: str, rate: int, window_s: float, count: int) -> int:
        """Ask for `count` slots; returns how many of them are granted (in record order)."""
        ...


class LocalRateLimiter:
    """Windows held in this process; thread-safe."""

    def __init__(self, clock=time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}  # policy id -> (window start, used)

    def reset(self, policy_ids: set[str] | None = None) -> None:
        """Forget windows (a reloaded policy starts a fresh window)."""
        with self._lock:
            if policy_ids is None:
                self._windows.clear()
            else:
                for pid in policy_ids:
                    self._windows.pop(pid, None)

    def load(self, policy_ids: set[str]) -> None:
        """Policies already known keep their window (a reload of the same policy is not a reset)."""
        now = self._clock()
        with self._lock:
            for pid in policy_ids:
                self._windows.setdefault(pid, (now, 0))

    def take(self, policy_id: str, rate: int, window_s: float, count: int) -> int:
        now = self._clock()
        with self._lock:
            start, used = self._windows.get(policy_id, (now, 0))
            if now - start >= window_s:
                start, used = now, 0
            granted = max(0, min(count, rate - used))
            self._windows[policy_id] = (start, used + granted)
            return granted
