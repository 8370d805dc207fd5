"""The ASGI application gunicorn loads in every worker: `gunicorn -k asgi workers.app:app`.

The supervisor starts gunicorn with `EDGE_RUN_DIR` (runtime.json: config, shared-memory
names, spool) and `PROMETHEUS_MULTIPROC_DIR` set; each worker imports this module after
the fork and attaches to the instance's shared state.
"""

from __future__ import annotations

from edge.protocols.app import create_app
from workers.runtime import WorkerRuntime

app = create_app(WorkerRuntime.from_environment())
