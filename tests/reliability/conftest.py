"""Fixtures of the reliability suite: one real `edge` per module, a faulty upstream, a checked case.

Every test that takes `case` gets a fresh ledger and a reset upstream, and after the test the
invariant of `harness.check_invariant` is asserted (a failure shows as an error in teardown).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from reliability.harness import EdgeProcess, FaultUpstream, Ledger, check_invariant

MATRIX_TIMEOUT = 1.5  # upstream_timeout of the fault-matrix proxy (seconds)
MATRIX_MAX_BODY = 1 << 20
MATRIX_MAX_DECODED = 4 << 20


@dataclass
class Case:
    edge: EdgeProcess
    upstream: FaultUpstream
    ledger: Ledger
    dropped_before: float
    pool_bound: int = 16
    check_accounting: bool = True

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
        return self.edge.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})},
                                 timeout=timeout)


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
