"""The least a forwarding proxy on this stack can do: the ceiling edge is measured against.

A gunicorn worker, a Falcon ASGI sink and one aiohttp session, as edge runs them, but
no policies, no parsing, no metrics: read the body, POST it to the upstream, relay the
answer. `benchmarks/proxy.py --floor` serves it next to edge and nginx on every worker
class considered for edge (edge's own among them), so edge's overhead and the stack's
own cost are reported apart.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import falcon.asgi

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:80")


class Forward:
    """Sink and lifespan middleware in one: a connection pool per worker."""

    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def process_startup(self, scope: Any, event: Any) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False)

    async def process_shutdown(self, scope: Any, event: Any) -> None:
        if self.session is not None:
            await self.session.close()

    async def __call__(self, req: Any, resp: Any, **_: Any) -> None:
        body = await req.stream.read()
        assert self.session is not None
        async with self.session.post(UPSTREAM + req.path, data=body,
                                     headers={"Content-Type": req.content_type or "application/json"}) as answer:
            resp.status = answer.status
            resp.data = await answer.read()


forward = Forward()
app = falcon.asgi.App(middleware=[forward])
app.add_sink(forward, "/")
