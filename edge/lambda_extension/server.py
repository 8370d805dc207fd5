"""The proxy's ASGI app served by uvicorn in a background thread of the extension process.

The main thread belongs to the Extensions API loop (it blocks in `event/next`), so the
server runs its own event loop in a thread; uvicorn installs no signal handlers there.
Stopping runs the ASGI lifespan shutdown (extensions flushed) within a bounded time.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import uvicorn

GRACEFUL_S = 1  # in-flight requests get this long at shutdown


class ProxyServer:
    def __init__(self, app: Any, host: str, port: int, max_connections: int) -> None:
        logging.getLogger("uvicorn").setLevel(logging.WARNING)
        # h11: its bound on a request head holds without edge's gunicorn limits (`workers.http_protocol`);
        # the function's own telemetry on loopback needs no faster parser.
        config = uvicorn.Config(app, host=host, port=port, loop="uvloop", http="h11", lifespan="on", log_config=None,
                                access_log=False, limit_concurrency=max_connections, server_header=False,
                                timeout_graceful_shutdown=GRACEFUL_S)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, name="proxy-server", daemon=True)
        self.failure: BaseException | None = None

    def _run(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # noqa: BLE001 - uvicorn reports a failed bind with SystemExit
            self.failure = exc

    def start(self, timeout: float) -> None:
        """Serve, and return once the port accepts connections; RuntimeError when it does not."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the proxy server stopped while starting (port in use, or the app failed)")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the proxy server did not start within {timeout:g} s")
            time.sleep(0.01)

    @property
    def running(self) -> bool:
        return self.thread.is_alive() and self.server.started

    def stop(self, timeout: float) -> bool:
        """Stop accepting, finish in-flight requests, run the lifespan shutdown; False on timeout."""
        self.server.should_exit = True
        self.thread.join(timeout)
        return not self.thread.is_alive()
