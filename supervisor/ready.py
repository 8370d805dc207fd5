"""The "ready" line: logged once `/_health` answers, so it never claims more than is true.

The supervisor polls its own health route after starting gunicorn (bounded in time, and
given up at once when gunicorn exits or a stop is requested), then logs one line naming
what an operator checks first: where edge listens (HTTP, and OTLP/gRPC when served), with how many workers and which
distribution, where each signal goes, which policies are in force, and the tail sampler's
policies and log when it runs.
"""

from __future__ import annotations

import http.client
import ipaddress
import subprocess
import threading
import time
from collections.abc import Sequence

from edge.config import Config, ProviderConfig
from supervisor.grpc_children import serves_grpc
from supervisor.listener import display_address
from supervisor.sampler_child import runs_sampler

HEALTH_TIMEOUT_S = 60.0  # a hang bound: workers import Hyperscan and friends, slowly on a loaded host
POLL_S = 0.05


def health_host(address: str) -> str:
    """Where the supervisor reaches its own listener: loopback for a wildcard address."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address  # a host name: it resolves to an address of this host (the bind succeeded)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return address


def _healthy(host: str, port: int) -> bool:
    connection = http.client.HTTPConnection(host, port, timeout=2.0)
    try:
        connection.request("GET", "/_health")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


def wait_healthy(host: str, port: int, gunicorn: subprocess.Popen, stopping: threading.Event,
                 timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True once `/_health` answers 200; False when gunicorn exited, a stop was requested or time ran out."""
    deadline = time.monotonic() + timeout
    while not stopping.is_set() and gunicorn.poll() is None and time.monotonic() < deadline:
        if _healthy(host, port):
            return True
        stopping.wait(POLL_S)
    return False


def upstreams(config: Config) -> str:
    """Where each signal goes, as the ready line and `edge validate` both say it."""
    urls = config.otlp_urls()
    scrapes = config.prometheus.scrape_url or config.http_url(config.metrics_url)
    return (f"logs {_otlp_url(config, urls['log'])}, metrics {_otlp_url(config, urls['metric'])}, "
            f"traces {_otlp_url(config, urls['trace'])}, prometheus scrapes {scrapes}/metrics")


def _otlp_url(config: Config, url: str) -> str:
    """A signal's URL, marked when OTLP goes there over gRPC though its scheme says http(s)."""
    return f"{url} (OTLP/gRPC)" if config.over_grpc(url) and url.startswith("http") else url


def _policies(count: int | None, providers: Sequence[ProviderConfig]) -> str:
    if not providers:
        return "no policy providers (everything passes unfiltered)"
    names = ", ".join(f"{p.id} ({p.type})" for p in providers)
    if not count:  # none loaded yet, or only errors published so far
        return f"none in force yet from {names} (everything passes unfiltered until some are)"
    return f"{count} in force from {names}"


def _tail_sampling(config: Config, distribution: str) -> str:
    """With a tail sampler: its policies, its wait and where its log is (else nothing)."""
    if not runs_sampler(config, distribution):
        return ""
    tail = config.tail_sampling
    count = len(tail.policies)
    return (f"; tail sampling: {count} {'policy' if count == 1 else 'policies'}, "
            f"decision_wait {tail.decision_wait:g} s, write-ahead log in {tail.wal_dir}")


def ready_message(config: Config, distribution: str, version: str, policies: int | None) -> str:
    """The ready line: address (and OTLP/gRPC's), workers, distribution, upstreams per signal, policies in
    force, and tail sampling when it runs."""
    grpc = config.grpc
    grpc_text = (f", OTLP/gRPC on {display_address(grpc.listen_address, grpc.listen_port)}"
                 if serves_grpc(config, distribution) else "")
    return (f"edge {version} ready on {display_address(config.listen_address, config.listen_port)}: "
            f"{config.workers} worker{'' if config.workers == 1 else 's'}, distribution {distribution}{grpc_text}; "
            f"upstreams: {upstreams(config)}; "
            f"policies: {_policies(policies, config.policy_providers)}{_tail_sampling(config, distribution)}")
