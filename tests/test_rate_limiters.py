"""Both rate limiters against one contract: fixed windows per policy, started at load, settled per batch.

The shared one runs on a real shared-memory table and lock file, as the proxy's workers use it;
two limiters attached to one table stand for two worker processes.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.channels.ratelimit import SIZE, SLOTS, SharedRateLimiter, create_table
from edge.engine.ratelimit import LocalRateLimiter, RateLimiter


class Clock:
    """The limiter's time source, set by the test."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def table(tmp_path: Path) -> Iterator[tuple[str, str]]:
    name = f"edge-t{os.getpid()}-{uuid.uuid4().hex[:8]}-rl"
    segment = create_table(name)
    try:
        yield name, str(tmp_path / "rl.lock")
    finally:
        segment.close()
        segment.unlink()


@pytest.fixture(params=["local", "shared"])
def make(request: pytest.FixtureRequest, table: tuple[str, str]) -> Iterator[Callable[[Clock], RateLimiter]]:
    opened: list[SharedRateLimiter] = []

    def build(clock: Clock) -> RateLimiter:
        if request.param == "local":
            return LocalRateLimiter(clock=clock)
        limiter = SharedRateLimiter(*table, clock=clock)
        opened.append(limiter)
        return limiter

    yield build
    for limiter in opened:
        limiter.close()


def test_a_window_grants_its_rate_in_record_order(make: Callable[[Clock], RateLimiter]) -> None:
    clock = Clock()
    limiter = make(clock)
    limiter.load({"p"})
    assert limiter.take("p", 5, 1.0, 3) == 3
    assert limiter.take("p", 5, 1.0, 3) == 2
    assert limiter.take("p", 5, 1.0, 3) == 0
    assert limiter.take("p", 5, 1.0, 0) == 0


def test_asking_for_nothing_grants_nothing(make: Callable[[Clock], RateLimiter]) -> None:
    limiter = make(Clock())
    assert limiter.take("p", 5, 1.0, 0) == 0
    assert limiter.take("p", 5, 1.0, 5) == 5


def test_a_new_window_starts_once_the_window_has_fully_passed(make: Callable[[Clock], RateLimiter]) -> None:
    clock = Clock()
    limiter = make(clock)
    limiter.load({"p"})
    assert limiter.take("p", 2, 60.0, 5) == 2
    clock.now += 59.5
    assert limiter.take("p", 2, 60.0, 5) == 0
    clock.now += 0.5  # exactly one window after the start
    assert limiter.take("p", 2, 60.0, 5) == 2
    clock.now += 30.0
    assert limiter.take("p", 2, 60.0, 5) == 0  # the new window started at the take, not at the old end


def test_the_first_window_starts_when_the_policy_is_loaded(make: Callable[[Clock], RateLimiter]) -> None:
    clock = Clock()
    limiter = make(clock)
    limiter.load({"p"})
    clock.now += 0.5
    assert limiter.take("p", 2, 1.0, 5) == 2
    clock.now += 0.5  # one second after the load, half a second after the first take
    assert limiter.take("p", 2, 1.0, 5) == 2


def test_without_a_load_the_first_take_starts_the_window(make: Callable[[Clock], RateLimiter]) -> None:
    clock = Clock()
    limiter = make(clock)
    assert limiter.take("p", 2, 1.0, 5) == 2
    clock.now += 0.9
    assert limiter.take("p", 2, 1.0, 5) == 0
    clock.now += 0.1
    assert limiter.take("p", 2, 1.0, 5) == 2


def test_loading_a_known_policy_again_keeps_its_window(make: Callable[[Clock], RateLimiter]) -> None:
    clock = Clock()
    limiter = make(clock)
    limiter.load({"p"})
    assert limiter.take("p", 2, 1.0, 2) == 2
    clock.now += 0.5
    limiter.load({"p", "q"})
    assert limiter.take("p", 2, 1.0, 2) == 0
    clock.now += 0.5
    assert limiter.take("p", 2, 1.0, 2) == 2
    assert limiter.take("q", 2, 1.0, 5) == 2  # q's window started at its load, half a second ago


def test_each_policy_has_its_own_window(make: Callable[[Clock], RateLimiter]) -> None:
    limiter = make(Clock())
    limiter.load({"a", "b"})
    assert limiter.take("a", 1, 1.0, 1) == 1
    assert limiter.take("b", 3, 1.0, 5) == 3
    assert limiter.take("a", 1, 1.0, 1) == 0


def test_reset_forgets_the_windows_it_names() -> None:
    clock = Clock()
    limiter = LocalRateLimiter(clock=clock)
    limiter.load({"a", "b"})
    assert (limiter.take("a", 1, 1.0, 1), limiter.take("b", 1, 1.0, 1)) == (1, 1)
    limiter.reset({"a", "unknown"})
    assert (limiter.take("a", 1, 1.0, 1), limiter.take("b", 1, 1.0, 1)) == (1, 0)
    limiter.reset()
    assert (limiter.take("a", 1, 1.0, 1), limiter.take("b", 1, 1.0, 1)) == (1, 1)


def test_workers_attached_to_one_table_spend_one_window(table: tuple[str, str]) -> None:
    clock = Clock()
    first, second = SharedRateLimiter(*table, clock=clock), SharedRateLimiter(*table, clock=clock)
    try:
        first.load({"p"})
        clock.now += 0.5
        second.load({"p"})  # the table has seen p: its window still started at the first load
        assert first.take("p", 3, 1.0, 2) == 2
        assert second.take("p", 3, 1.0, 2) == 1
        clock.now += 0.5
        assert second.take("p", 3, 1.0, 5) == 3
    finally:
        first.close()
        second.close()


def test_concurrent_takes_never_grant_more_than_the_rate(table: tuple[str, str]) -> None:
    limiters = [SharedRateLimiter(*table), SharedRateLimiter(*table)]
    granted: list[int] = []

    def spend(limiter: SharedRateLimiter) -> None:
        granted.extend(limiter.take("p", 500, 3600.0, 1) for _ in range(400))

    threads = [threading.Thread(target=spend, args=(limiters[i % 2],)) for i in range(4)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for limiter in limiters:
            limiter.close()
    assert sum(granted) == 500


def test_every_slot_of_the_table_holds_its_own_policy(table: tuple[str, str]) -> None:
    """Colliding policy ids probe on to the next free slot until the table is full."""
    limiter = SharedRateLimiter(*table, clock=Clock())
    ids = {f"policy-{i}" for i in range(SLOTS)}
    try:
        limiter.load(ids)
        assert all(limiter.take(pid, 1, 1.0, 1) == 1 for pid in ids)
        assert all(limiter.take(pid, 1, 1.0, 1) == 0 for pid in ids)
        with pytest.raises(RuntimeError, match="^rate-limit table full$"):
            limiter.take("one-too-many", 1, 1.0, 1)
    finally:
        limiter.close()


def test_a_new_table_is_all_free_slots() -> None:
    name = f"edge-t{os.getpid()}-{uuid.uuid4().hex[:8]}-rl"
    segment = create_table(name)
    try:
        assert segment.size >= SIZE
        assert bytes(segment.buf[:SIZE]) == bytes(SIZE)
    finally:
        segment.close()
        segment.unlink()


def test_close_releases_the_lock_file_descriptor(table: tuple[str, str]) -> None:
    before = set(os.listdir("/proc/self/fd"))
    limiter = SharedRateLimiter(*table)
    limiter.close()
    assert set(os.listdir("/proc/self/fd")) == before
    assert oct(os.stat(table[1]).st_mode & 0o777) == "0o600"
