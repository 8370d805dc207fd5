"""The supervisor's OTLP/gRPC workers: `python -m workers.grpc`, as many as the HTTP workers.

Each one is grpcio's asyncio server on `grpc.listen_address:grpc.listen_port` with
SO_REUSEPORT, so the kernel spreads connections over them. It attaches to the instance's
shared state exactly as a gunicorn worker does (`WorkerRuntime`: snapshots from shared
memory, the shared rate-limit windows, match statistics to the spool) and runs the HTTP
app's `Lifespan` (`edge.protocols.lifespan`) for its upstream pool, extensions and once-a-second statistics. SIGTERM
stops accepting and lets calls in flight finish (`server.stop(grace)`), then flushes.
It runs on uvloop, as the HTTP workers do: the one event loop carries grpc.aio's completions
and the upstream clients, and uvloop costs less per call than asyncio's own loop.

The supervisor's handle on these children is `supervisor.grpc_children.GrpcWorkers`.
"""

from __future__ import annotations

import faulthandler
import logging
import sys
from pathlib import Path

import grpc
import uvloop

from edge import logs
from edge.config import Config
from edge.lifecycle import die_with_parent, stop_requested
from edge.protocols.body import worker_share
from edge.protocols.grpc_otlp import otlp_services
from edge.protocols.lifespan import Lifespan
from edge.protocols.self_metrics import get_metrics
from edge.protocols.upstream import Upstream
from supervisor.listener import display_address
from workers.runtime import WorkerRuntime

log = logging.getLogger("edge.grpc")

DRAIN_SECONDS = 10  # as the HTTP workers: calls in flight get this long after SIGTERM
EXIT_CANNOT_LISTEN = 2


def server_options(config: Config) -> list[tuple[str, int]]:
    """Port sharing between the workers, and the message size limit (RESOURCE_EXHAUSTED beyond it)."""
    limit = config.grpc.message_limit(config.max_body_size)
    return [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit)]


def credentials(config: Config) -> grpc.ServerCredentials | None:
    """Server TLS from the PEM files of the `grpc` section; None: plaintext."""
    if not config.grpc.tls_cert_file:
        return None
    key = Path(config.grpc.tls_key_file).read_bytes()
    chain = Path(config.grpc.tls_cert_file).read_bytes()
    return grpc.ssl_server_credentials([(key, chain)])


async def serve(runtime: WorkerRuntime) -> int:
    """Serve until SIGTERM/SIGINT, then drain; the exit status."""
    config = runtime.config
    metrics = get_metrics()
    upstream = Upstream(config, metrics)
    lifespan = Lifespan(runtime, upstream, metrics)
    # Beyond its share of `max_connections` a worker answers RESOURCE_EXHAUSTED, as HTTP workers answer 503.
    server = grpc.aio.server(options=server_options(config),
                             maximum_concurrent_rpcs=worker_share(config.max_connections, config.workers))
    sampler = runtime.sampler_client()
    for service, methods in otlp_services(runtime, upstream, metrics, sampler).items():
        server.add_registered_method_handlers(service, methods)
    address = display_address(config.grpc.listen_address, config.grpc.listen_port)
    tls = credentials(config)
    try:
        port = server.add_secure_port(address, tls) if tls else server.add_insecure_port(address)
    except RuntimeError:
        port = 0
    if not port:
        log.error("gRPC worker: cannot listen on %s (config keys grpc.listen_address, grpc.listen_port)", address)
        return EXIT_CANNOT_LISTEN
    await lifespan.process_startup(None, None)
    await server.start()
    stopping = stop_requested()
    await stopping.wait()
    await server.stop(DRAIN_SECONDS)
    if sampler is not None:
        await sampler.close()
    await lifespan.process_shutdown(None, None)
    return 0


def main() -> int:
    """Entry point of the child process."""
    faulthandler.enable()  # a crashing worker leaves a stack trace in the log
    die_with_parent()  # a worker never outlives its supervisor
    runtime = WorkerRuntime.from_environment()
    logs.configure(runtime.config.log_level)
    return uvloop.run(serve(runtime))


if __name__ == "__main__":
    sys.exit(main())
