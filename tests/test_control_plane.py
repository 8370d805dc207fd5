"""build_control_plane: the one wiring of providers, merger and snapshot manager.

The sink and the statistics source are test doubles that only meet the declared
Protocols, which is all the control plane may rely on.
"""

from __future__ import annotations

import ast
import logging
import threading
from pathlib import Path

import orjson
import pytest

from edge.config import Config, build
from edge.control.builder import build_control_plane
from edge.engine.stats import PolicyCounters
from edge.policy.snapshot import Snapshot

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE = "http://127.0.0.1:9/v1/policy/sync"


class RecordingSink:
    def __init__(self) -> None:
        self.published: list[Snapshot] = []
        self.ticks = 0
        self.changed = threading.Event()

    def publish(self, snapshot: Snapshot) -> int:
        self.published.append(snapshot)
        self.changed.set()
        return len(self.published)

    def tick(self) -> None:
        self.ticks += 1


class QueuedStats:
    def __init__(self) -> None:
        self.queued: dict[str, PolicyCounters] = {}

    def collect(self) -> dict[str, PolicyCounters]:
        counts, self.queued = self.queued, {}
        return counts


def config_with(*providers: dict) -> Config:
    return build({"upstream_url": "http://127.0.0.1:9", "policy_providers": list(providers)}, env={})


def write_policies(path: Path, *ids: str) -> Path:
    policies = [{"id": i, "name": i, "log": {"match": [{"log_field": "body", "contains": i}], "keep": "none"}}
                for i in ids]
    path.write_bytes(orjson.dumps({"policies": policies}))
    return path


def test_file_policies_reach_the_sink(tmp_path: Path) -> None:
    path = write_policies(tmp_path / "policies.json", "a", "b")
    sink = RecordingSink()
    control = build_control_plane(config_with({"id": "f", "type": "file", "path": str(path)}), sink, QueuedStats())
    control.start()
    try:
        assert sink.changed.wait(5)
    finally:
        control.stop()
    assert [p.id for p in sink.published[0].policies] == ["a", "b"]
    assert control.errors() == {}
    control.tick()
    assert sink.ticks == 1
    assert control.final_sync()  # no policy server: nothing to report


def test_statistics_come_from_the_source_and_failed_syncs_give_them_back() -> None:
    stats = QueuedStats()
    control = build_control_plane(config_with(), RecordingSink(), stats)
    stats.queued = {"a": PolicyCounters(hits=2)}
    control.manager.return_stats({"a": PolicyCounters(hits=1), "b": PolicyCounters(misses=1)})
    drained = control.manager.drain_stats()
    assert {pid: (c.hits, c.misses) for pid, c in drained.items()} == {"a": (3, 0), "b": (0, 1)}
    assert control.manager.drain_stats() == {}


def test_policy_servers_get_the_service_extensions_and_timeout() -> None:
    config = config_with({"id": "tero", "type": "http", "url": UNREACHABLE})
    control = build_control_plane(config, RecordingSink(), QueuedStats(), extensions=["com.example/x"],
                                  http_timeout=0.5)
    [provider] = control.providers.http_providers
    assert provider.client.extensions == ["com.example/x"]
    assert provider.client.timeout == 0.5
    assert provider.client.service["name"] == config.service.name


def test_a_failed_final_sync_is_reported_once(caplog: pytest.LogCaptureFixture) -> None:
    config = config_with({"id": "one", "type": "http", "url": UNREACHABLE},
                         {"id": "two", "type": "http", "url": UNREACHABLE})
    control = build_control_plane(config, RecordingSink(), QueuedStats(), http_timeout=0.5)
    with caplog.at_level(logging.WARNING, logger="edge.providers"):
        assert not control.final_sync(0.5)
    lost = [r for r in caplog.records if "statistics since the last sync are lost" in r.getMessage()]
    assert len(lost) == 1


def test_nothing_in_edge_imports_the_supervisor() -> None:
    """The control plane and everything else under edge/ must be usable without the supervisor."""
    offenders = []
    for path in sorted((REPO / "edge").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.relative_to(REPO)}: {name}" for name in names
                          if name == "supervisor" or name.startswith("supervisor.")]
    assert offenders == []
