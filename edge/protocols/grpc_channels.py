"""Connections to a gRPC upstream: a few `grpc.aio` channels per upstream and worker, used in turn.

One channel is one HTTP/2 connection, and every call on it shares that connection's flow
control and the single thread the server gives it; a few channels spread the calls of a
busy worker. They are created once, on a worker's first call to that upstream (inside its
event loop, which grpc.aio channels belong to), and closed with the worker's `Upstream`.
Each channel has its own subchannel (`grpc.use_local_subchannel_pool`), else grpc-core
would share one connection between channels of the same target.

Options: messages up to the body limit both ways; keepalive pings while calls are in flight
(a silently dead connection fails within `KEEPALIVE_TIMEOUT_MS` instead of at the deadline);
reconnection attempts at most `MAX_RECONNECT_BACKOFF_MS` apart, so calls succeed again
within seconds of an upstream coming back, however long it was down. TLS (`grpcs://`, or
`https://` under `upstream_protocol: grpc`) verifies the upstream against the system's CA
bundle (`SSL_CERT_FILE` when set), as the HTTP client does.
"""

from __future__ import annotations

import itertools
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc

from edge.config import GRPC_SCHEMES

CHANNELS = 4  # per upstream and worker
KEEPALIVE_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000
INITIAL_RECONNECT_BACKOFF_MS = 200
MAX_RECONNECT_BACKOFF_MS = 5_000
OTLP_GRPC_PORT = 4317  # a grpc(s):// URL without a port


@dataclass(frozen=True, slots=True)
class GrpcTarget:
    """Where a gRPC upstream listens (`host:port`, as grpcio spells it) and whether it speaks TLS."""

    address: str
    tls: bool


def grpc_target(url: str) -> GrpcTarget:
    """The target of a signal URL: grpc(s)://host[:port], or an http(s) URL under `upstream_protocol: grpc`
    (its port, else 80 or 443)."""
    parts = urlsplit(url)
    tls = parts.scheme in ("grpcs", "https")
    default_port = OTLP_GRPC_PORT if parts.scheme in GRPC_SCHEMES else 443 if tls else 80
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    return GrpcTarget(f"{host}:{parts.port or default_port}", tls)


def channel_options(message_limit: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", message_limit), ("grpc.max_receive_message_length", message_limit),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS), ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.use_local_subchannel_pool", 1),
            ("grpc.initial_reconnect_backoff_ms", INITIAL_RECONNECT_BACKOFF_MS),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]


def system_roots() -> bytes | None:
    """The system's CA bundle as PEM (None: grpcio's own roots, when the system has no bundle file)."""
    cafile = ssl.get_default_verify_paths().cafile
    if not cafile:
        return None
    try:
        with open(cafile, "rb") as bundle:
            return bundle.read()
    except OSError:
        return None


class ChannelPool:
    """The channels to one upstream, and per method a rotation of its callables over them."""

    def __init__(self, target: GrpcTarget, message_limit: int) -> None:
        options = channel_options(message_limit)
        if target.tls:
            credentials = grpc.ssl_channel_credentials(root_certificates=system_roots())
            self.channels = [grpc.aio.secure_channel(target.address, credentials, options)
                             for _ in range(CHANNELS)]
        else:
            self.channels = [grpc.aio.insecure_channel(target.address, options) for _ in range(CHANNELS)]

    def rotation(self, method: str) -> Iterator[grpc.aio.UnaryUnaryMultiCallable]:
        """The unary method on raw bytes, one callable per channel, endlessly in turn."""
        return itertools.cycle([channel.unary_unary(method, request_serializer=None, response_deserializer=None)
                                for channel in self.channels])

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
