"""The proxy's own endpoints: health, loaded policies, Prometheus metrics. Never forwarded.

Their answers go through `edge.logs.redact` like every log line: a URL with credentials or a
secret query value (a provider URL in a load error, a policy named after an endpoint) never
leaves the proxy through them.
"""

from __future__ import annotations

from typing import Any

import orjson

from edge.logs import redact
from edge.protocols.self_metrics import Metrics
from edge.protocols.upstream import JSON
from edge.runtime import Runtime

HEALTH_BODY = b'{"status":"ok"}'


class Health:
    route = "health"

    async def __call__(self, req: Any, resp: Any) -> None:
        resp.status = 200
        resp.content_type = JSON
        resp.data = HEALTH_BODY


def redacted(value: Any) -> Any:
    """A JSON-like value with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v) for v in value]
    return value


def policies_document(runtime: Runtime) -> dict[str, Any]:
    snapshot = runtime.snapshots.current()
    if snapshot is None:
        return {"version": "", "generation": 0, "policies": [], "load_errors": []}
    return redacted({
        "version": snapshot.version,
        "generation": runtime.generation,
        "policies": [{"id": p.id, "name": p.name, "signal": p.signal, "enabled": p.enabled,
                      "in_force": p.valid, "errors": list(p.errors)} for p in snapshot.policies],
        "load_errors": list(snapshot.load_errors),
    })


class Policies:
    """GET /_edge/policies[?format=json] (JSON is the only format)."""

    route = "policies"

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, req: Any, resp: Any) -> None:
        resp.status = 200
        resp.content_type = JSON
        resp.data = orjson.dumps(policies_document(self.runtime))


class MetricsEndpoint:
    route = "metrics"

    def __init__(self, runtime: Runtime, metrics: Metrics) -> None:
        self.runtime = runtime
        self.metrics = metrics

    async def __call__(self, req: Any, resp: Any) -> None:
        update_snapshot_gauges(self.runtime, self.metrics)
        data, content_type = self.metrics.exposition()
        resp.status = 200
        resp.content_type = content_type
        resp.data = redact(data.decode("utf-8", "replace")).encode()


def update_snapshot_gauges(runtime: Runtime, metrics: Metrics) -> None:
    snapshot = runtime.snapshots.current()
    if snapshot is not None:
        metrics.snapshot_loaded(runtime.generation, len(snapshot.policies))
