"""Structured logs: one JSON object per line on stderr, at the configured level.

Every line is redacted here, once, so no call site has to remember it: URL userinfo
(`http://user:pass@host` -> `http://***@host`) and the values of secret-looking query
parameters (`?api_key=abc` -> `?api_key=***`), in the message (after its arguments are
formatted in) and in the exception text. `redact` is also applied to the `/_edge/*` answers.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable

import orjson

REDACTED = "***"

# A query parameter's value is redacted when its key, compared case-insensitively, is one of
# these words or ends in one of them after a separator (`-`, `_`, `.`): `api_key`, `dd-api-key`,
# `access_token`, `client_secret`, `X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`
# all match, `monkey`, `tokens` or `keyboard` do not.
SECRET_QUERY_WORDS = ("key", "apikey", "token", "secret", "password", "passwd", "pwd", "passphrase",
                      "signature", "sig", "auth", "authorization", "credential", "credentials", "jwt")

# What a redaction may remove never contains `\` or `"`: applied to JSON or Prometheus text, it
# cannot break an escape sequence or a string (those characters are not allowed raw in URLs).
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s\"'<>\\]*@")
_SECRET_QUERY = re.compile(r"(?i)([?&;](?:[\w.\-]*[_.\-])?(?:" + "|".join(SECRET_QUERY_WORDS) + r")=)"
                           r"[^&#;\s\"'<>\\]*")


def redact(text: str) -> str:
    """The text with URL userinfo and secret-looking query values replaced by `***`."""
    if "@" in text:
        text = _USERINFO.sub(r"\1" + REDACTED + "@", text)
    if "=" in text:
        text = _SECRET_QUERY.sub(r"\1" + REDACTED, text)
    return text


# The documented level names (docs/configuration.md, `log_level`) and the Python levels they stand for.
# `trace` is below debug: it turns on everything, the libraries' own debug lines included.
TRACE = 5
LEVELS: dict[str, int] = {"trace": TRACE, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
                          "err": logging.ERROR}
# Older and Python spellings accepted as input, mapped to the documented name.
LEVEL_ALIASES: dict[str, str] = {"warning": "warn", "error": "err", "critical": "err", "fatal": "err"}
logging.addLevelName(TRACE, "TRACE")


def level_name(name: str) -> str | None:
    """The documented name for a level spelled any accepted way (any case); None when unknown."""
    name = name.strip().lower()
    name = LEVEL_ALIASES.get(name, name)
    return name if name in LEVELS else None


def record_level(levelno: int) -> str:
    """The documented name a line at `levelno` carries in its `level` field (critical is `err`)."""
    for name in ("err", "warn", "info", "debug"):
        if levelno >= LEVELS[name]:
            return name
    return "trace"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, its `level` spelled as the config's `log_level` is documented."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record_level(record.levelno),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry).decode()


# Libraries whose debug lines describe their own machinery, not edge's work. watchdog logs every
# inotify event it sees: with stderr written into a watched policy directory, each such line is
# itself an event, and the log feeds itself.
QUIET_LIBRARIES = ("watchdog",)


def configure(level: str) -> None:
    """JSON lines on stderr at `level` (any accepted spelling; unknown means info)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level_name(level) or "info"])
    logging.captureWarnings(True)  # a library's warnings.warn becomes a JSON line too, not raw stderr text
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


class RateLimitedLog:
    """At most one line per key per `interval` seconds, with the count of what was folded in.

    Failures that repeat per request (an upstream down, bodies forwarded unfiltered) would
    otherwise bury every other line at hundreds per second. The first occurrence of a key is
    logged at once; later ones within the interval are counted, and the next line that is
    logged says how many were folded into it. Per process: each worker keeps its own.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def log(self, level: int, key: str, msg: str, *args: object) -> bool:
        """Log `msg % args` unless `key` was logged within the interval; True when logged."""
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._folded[key] = self._folded.get(key, 0) + 1
                return False
            self._last[key] = now
            folded = self._folded.pop(key, 0)
        if folded:
            msg += " (%d more since the last such line)"
            args = (*args, folded)
        self._logger.log(level, msg, *args)
        return True
