"""The ASGI application gunicorn loads in every worker: `gunicorn -k workers.http_worker.HttpWorker workers.app:app`.

The supervisor starts gunicorn with `EDGE_RUN_DIR` (runtime.json: config, shared-memory
names, spool) and `PROMETHEUS_MULTIPROC_DIR` set; each worker imports this module after
the fork and attaches to the instance's shared state.
"""

from __future__ import annotations

import faulthandler
import os

from edge.lifecycle import die_with_parent
from edge.protocols.app import create_app
from workers.runtime import WorkerRuntime

faulthandler.enable()  # a crashing worker leaves a stack trace in the log
die_with_parent()  # a worker never outlives its gunicorn master
_runtime = WorkerRuntime.from_environment()
app = create_app(_runtime, os.environ.get("EDGE_DISTRIBUTION", "edge"), _runtime.sampler_client())
