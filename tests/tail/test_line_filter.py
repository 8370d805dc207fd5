"""LineFilter follows its snapshot source: a new snapshot gets a new engine, a failing read keeps the last."""

from __future__ import annotations

import logging

import pytest

from edge.policy.snapshot import Snapshot
from edge.tail.filtering import LineFilter
from tests.proxy_fixtures import compile_snapshot

BLOCK = b"keep me\ndrop me\n"
DROP = {"id": "d", "name": "d", "log": {"match": [{"log_field": "body", "contains": "drop"}], "keep": "none"}}
METRIC_ONLY = {"id": "m", "metric": {"match": [{"metric_field": "name", "exact": "x"}], "keep": False}}


class Source:
    """A snapshot source the test switches, or makes fail."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot
        self.failure: Exception | None = None

    def __call__(self) -> Snapshot | None:
        if self.failure is not None:
            raise self.failure
        return self.snapshot


def test_lines_pass_untouched_until_the_first_snapshot() -> None:
    source = Source()
    line_filter = LineFilter(source, "raw", 1024)
    assert line_filter.apply(BLOCK).data is BLOCK
    source.snapshot = compile_snapshot([DROP])
    assert line_filter.apply(BLOCK).data == b"keep me\n"


def test_a_snapshot_without_log_policies_keeps_every_line() -> None:
    source = Source(compile_snapshot([METRIC_ONLY]))
    line_filter = LineFilter(source, "raw", 1024)
    assert line_filter.apply(BLOCK).data is BLOCK


def test_an_unreadable_snapshot_keeps_the_previous_policies(caplog: pytest.LogCaptureFixture) -> None:
    source = Source(compile_snapshot([DROP]))
    line_filter = LineFilter(source, "raw", 1024)
    assert line_filter.apply(BLOCK).data == b"keep me\n"
    source.failure = OSError("segment gone")
    with caplog.at_level(logging.ERROR, logger="edge.tail"):
        assert line_filter.apply(BLOCK).data == b"keep me\n"
    assert "keeping the previous one" in caplog.text
    source.failure, source.snapshot = None, compile_snapshot([METRIC_ONLY])
    assert line_filter.apply(BLOCK).data is BLOCK
