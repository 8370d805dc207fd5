"""gunicorn's config module (`-c python:workers.preload`): the master imports what every worker imports.

gunicorn reads this module before it listens and before it forks. Importing the application's
modules here (about a quarter of a second: aiohttp, falcon, the engine) means each forked worker
finds them loaded and boots in a few milliseconds, so a connection that arrives while edge
starts is answered at once instead of waiting for a worker's imports (a sender whose timeout
runs out meanwhile would retry, and its first request would still be served: delivered twice).
Nothing here runs the application: each worker still attaches to the instance in
`workers.app`. `gc.freeze()` keeps the imported objects out of the workers' collections, so
their pages stay shared with the master instead of being copied by the collector's writes.
"""

from __future__ import annotations

from gc import freeze as _freeze
from importlib import import_module as _import_module

# gunicorn reads every global of a config module whose name is a setting (`workers` is one), so the
# modules are imported without binding a name here.
for _module in ("edge.protocols.app", "workers.runtime"):
    _import_module(_module)
_freeze()
