"""gunicorn's own log lines as edge's JSON lines: `gunicorn --logger-class workers.gunicorn_logging.JsonLogger`.

gunicorn writes its master and worker events ("Booting worker", worker exits, its config
dump at debug) through its own handlers and plain-text format; every line edge writes is
JSON, so a log pipeline parsing edge's stderr would choke on those. This class keeps
gunicorn's handlers and levels but formats through `edge.logs.JsonFormatter`.
"""

from __future__ import annotations

import logging
from typing import Any

from gunicorn.glogging import Logger

from edge.logs import QUIET_LIBRARIES, JsonFormatter


class JsonLogger(Logger):
    """gunicorn's logger with every handler formatting JSON lines (redacted like edge's own)."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        formatter = JsonFormatter()
        for logger in (self.error_log, self.access_log):
            for handler in logger.handlers:
                handler.setFormatter(formatter)
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
