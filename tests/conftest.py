"""Fixtures shared by several test modules, and the one way tests import their helpers.

`tests` and its sub-suites are packages, and pytest runs from the repository root, so every
helper is imported by its full name: `from tests.engine_helpers import clean_engine`,
`from tests.proxy_fixtures import EdgeStack`, `from tests.reliability.harness import Case`,
`from tests.tail.tail_helpers import Tailer`. No test touches `sys.path`. Fixtures that only
one suite needs stay in that suite's conftest (`tests/reliability/conftest.py`).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.proxy_fixtures import RecordingUpstream


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    """A recording upstream per module: the HTTP tests share it and reset it before each test.

    Modules that need another kind of upstream, or a fresh one per test, define their own
    `upstream` fixture, which takes precedence over this one.
    """
    server = RecordingUpstream().start()
    yield server
    server.stop()
