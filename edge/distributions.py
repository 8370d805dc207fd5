"""The distributions edge ships, one command each (`edge`, `edge-otlp`, `edge-datadog`,
`edge-prometheus`), and the protocols each serves.

One table for every process that asks: the HTTP app mounts the routes of the distribution's
protocols, and the supervisor starts the gRPC workers and the tail sampler only for one that
serves OTLP. Every distribution also has the admin routes and passes everything else through.
"""

from __future__ import annotations

PROTOCOLS: dict[str, frozenset[str]] = {
    "edge": frozenset({"otlp", "datadog", "prometheus"}),
    "otlp": frozenset({"otlp"}),
    "datadog": frozenset({"datadog"}),
    "prometheus": frozenset({"prometheus"}),
}


def serves(distribution: str, protocol: str) -> bool:
    """Whether `distribution` serves `protocol` (`otlp`, `datadog` or `prometheus`)."""
    return protocol in PROTOCOLS[distribution]
