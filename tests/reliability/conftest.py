"""Fixtures of the reliability suite: one real `edge` per module, a faulty upstream, a checked case.

Every test that takes `case` gets a fresh ledger and a reset upstream, and after the test the
invariant of `harness.check_invariant` is asserted (a failure shows as an error in teardown).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import (
    MATRIX_MAX_BODY,
    MATRIX_MAX_DECODED,
    MATRIX_TIMEOUT,
    Case,
    EdgeProcess,
    FaultUpstream,
    Ledger,
    check_invariant,
)


@pytest.fixture(scope="session")
def upstream() -> Iterator[FaultUpstream]:
    server = FaultUpstream().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def matrix_edge(upstream: FaultUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EdgeProcess]:
    """The proxy the fault matrix runs against (2 workers, 1.5 s upstream timeout)."""
    edge = EdgeProcess(tmp_path_factory.mktemp("edge"), upstream.url, upstream_timeout=MATRIX_TIMEOUT,
                       max_body_size=MATRIX_MAX_BODY, max_decoded_bytes=MATRIX_MAX_DECODED).start()
    yield edge
    assert edge.stop() == 0, edge.log()


@pytest.fixture
def case(matrix_edge: EdgeProcess, upstream: FaultUpstream) -> Iterator[Case]:
    upstream.reset()
    checked = Case(matrix_edge, upstream, Ledger(), matrix_edge.dropped())
    yield checked
    check_invariant(checked.edge, upstream, checked.ledger if checked.check_accounting else None,
                    checked.dropped_before, pool_bound=checked.pool_bound)
