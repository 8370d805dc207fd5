"""The gunicorn worker class of edge's HTTP workers: uvicorn's, parsing with httptools on uvloop.

gunicorn's own ASGI worker (`-k asgi`) parses HTTP in Python; uvicorn's parses it in C
(httptools, llhttp) and serves the same app with more requests per second
(`benchmarks/proxy.py --floor` measures both side by side). It comes from the `uvicorn-worker`
package, kept by uvicorn's maintainers (`uvicorn.workers` is deprecated in its favour).

gunicorn still runs the processes: the master, the inherited `fd://` listener, worker restarts,
the heartbeat. What gunicorn's settings said that uvicorn's worker does not carry over is set here:
- the limits on the request head (`--limit-request-line`, `-fields`, `-field_size`), enforced by
  `workers.http_protocol.LimitedHttpToolsProtocol`;
- `--graceful-timeout` bounds the drain on SIGTERM (uvicorn alone would wait without end), after
  which the ASGI lifespan shutdown still runs (statistics flushed, extensions stopped);
- the lifespan is required: a failing startup stops the worker with gunicorn's boot error, as
  gunicorn's worker did, instead of serving without its upstream pool;
- no `server` header (the upstream's is relayed) and no websockets (edge upgrades to nothing);
- a worker stopped by a signal exits normally once drained, through gunicorn's exit path (uvicorn
  would raise the signal again and die by it: no "Worker exiting" line, no exit handlers).
"""

from __future__ import annotations

import sys
from functools import partial
from types import FrameType
from typing import Any, ClassVar

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from workers.http_protocol import HeadLimits, LimitedHttpToolsProtocol


class DrainingServer(Server):
    """uvicorn's server, without raising a stop signal again after the drain."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        self._captured_signals.clear()


class HttpWorker(UvicornWorker):
    """`gunicorn -k workers.http_worker.HttpWorker`: uvicorn's worker within gunicorn's limits."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {"loop": "uvloop", "lifespan": "on", "ws": "none",
                                               "server_header": False, "access_log": False,
                                               "proxy_headers": False}  # nothing reads the client's address

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        cfg = self.cfg
        limits = HeadLimits(cfg.limit_request_line, cfg.limit_request_fields, cfg.limit_request_field_size)
        self.config.http = partial(LimitedHttpToolsProtocol, limits=limits)
        self.config.timeout_graceful_shutdown = cfg.graceful_timeout

    async def _serve(self) -> None:
        """uvicorn_worker's, with `DrainingServer`."""
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
