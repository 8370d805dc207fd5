"""The rate-limited log: one line per key per interval, and the count of what was folded in."""

from __future__ import annotations

import logging

import pytest

from edge.logs import RateLimitedLog


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_one_line_per_key_per_interval_then_the_folded_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Clock()
    limited = RateLimitedLog(logging.getLogger("edge.test"), interval=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="edge.test"):
        assert limited.log(logging.WARNING, "up", "upstream %s failed", "a")
        for _ in range(4):
            clock.now += 2.0
            assert not limited.log(logging.WARNING, "up", "upstream %s failed", "a")
        assert limited.log(logging.WARNING, "other", "other key")
        clock.now += 2.0  # 10 s after the first line
        assert limited.log(logging.WARNING, "up", "upstream %s failed", "a")
        clock.now += 10.0
        assert limited.log(logging.WARNING, "up", "upstream %s failed", "a")
    assert [r.getMessage() for r in caplog.records] == [
        "upstream a failed", "other key", "upstream a failed (4 more since the last such line)", "upstream a failed"]
