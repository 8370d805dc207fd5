"""One POST to a policy server, bounded in time and size, never leaking headers to another origin.

A policy server is configured with credentials (an `Authorization` header, API keys) and is
trusted with them; whatever it redirects to is not. So:

- a redirect to the same origin (scheme, host, port) is followed, re-posting the request
  (the sync protocol has no meaning as a GET); a redirect to another origin is refused,
  logged and reported as a failed sync: provider headers never leave their origin;
- the reply is read in chunks and refused once it exceeds `max_response_bytes` (a Content-Length
  over the cap is refused before reading), so a hostile or broken server cannot grow the
  supervisor's memory;
- the whole exchange, redirects included, has one deadline: the socket timeout only bounds
  each read, so a server dripping one byte every few seconds would otherwise hold a sync
  forever. A timer shuts the socket down when the deadline passes.

http.client rather than urllib: urllib follows redirects itself, forwarding headers to any
host, and offers no handle on the socket to enforce a total deadline.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

log = logging.getLogger("edge.providers")

MAX_RESPONSE_BYTES = 16 << 20
MAX_REDIRECTS = 5
READ_CHUNK = 64 << 10
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportError(Exception):
    """The exchange failed; the message says why in one line, naming no secret."""


class ReplyTooLarge(TransportError):
    """The reply is over `max_response_bytes`: refused unread (counted by the caller)."""


@dataclass(slots=True)
class Reply:
    status: int
    content_type: str
    body: bytes


def origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port filled in: what "the same origin" compares."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or _DEFAULT_PORTS.get(scheme, 0)


def public_url(url: str) -> str:
    """The URL without userinfo, query or fragment: safe to put in a log line."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


class _Deadline:
    """Shuts a connection's socket down when the exchange's time is up, waking any blocked read."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.expired = False
        self._connection: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(max(seconds, 0.0), self._expire)
        self._timer.daemon = True
        self._timer.start()

    def remaining(self) -> float:
        left = self.at - time.monotonic()
        if left <= 0:
            self.expired = True
        return left

    def watch(self, connection: http.client.HTTPConnection | None) -> None:
        with self._lock:
            self._connection = connection

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            sock = self._connection.sock if self._connection is not None else None
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()


def post(url: str, body: bytes, headers: Mapping[str, str], *, deadline_s: float,
         max_response_bytes: int = MAX_RESPONSE_BYTES) -> Reply:
    """POST `body`, following same-origin redirects; raises TransportError on any failure."""
    deadline = _Deadline(deadline_s)
    try:
        target = url
        for _ in range(MAX_REDIRECTS + 1):
            reply, location = _exchange(target, body, headers, deadline, max_response_bytes)
            if location is None:
                return reply
            following = urljoin(target, location)
            if origin(following) != origin(url):
                log.warning("policy server %s redirected to another origin (%s); not followed, so its "
                            "credentials stay with it", public_url(url), public_url(following))
                raise TransportError(f"redirect to another origin ({public_url(following)}) refused")
            target = following
        raise TransportError(f"more than {MAX_REDIRECTS} redirects")
    finally:
        deadline.cancel()


def _exchange(url: str, body: bytes, headers: Mapping[str, str], deadline: _Deadline,
              max_response_bytes: int) -> tuple[Reply, str | None]:
    """One request/response; returns the reply and the redirect location, if it is one."""
    connection = _connect(url, deadline)
    deadline.watch(connection)
    try:
        parts = urlsplit(url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=dict(headers))
        response = connection.getresponse()
        if response.status in _REDIRECTS and response.getheader("Location"):
            return Reply(response.status, "", b""), response.getheader("Location")
        data = _read_capped(response, max_response_bytes, deadline)
        return Reply(response.status, response.getheader("Content-Type") or "", data), None
    except (OSError, http.client.HTTPException) as exc:
        if deadline.expired:
            raise TransportError("no complete answer within the sync deadline") from None
        raise TransportError(f"unreachable: {exc}") from None
    finally:
        deadline.watch(None)
        connection.close()


def _connect(url: str, deadline: _Deadline) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    remaining = deadline.remaining()
    if remaining <= 0:
        raise TransportError("no complete answer within the sync deadline")
    if parts.scheme == "https":
        return http.client.HTTPSConnection(parts.hostname or "", parts.port, timeout=remaining,
                                           context=ssl.create_default_context())
    if parts.scheme == "http":
        return http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=remaining)
    raise TransportError(f"unsupported URL scheme {parts.scheme!r}")


def _read_capped(response: http.client.HTTPResponse, cap: int, deadline: _Deadline) -> bytes:
    declared = response.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise ReplyTooLarge(f"reply of {int(declared)} bytes is over max_response_bytes ({cap}); refused")
    chunks: list[bytes] = []
    size = 0
    while True:
        if deadline.remaining() <= 0:
            raise TransportError("no complete answer within the sync deadline")
        chunk = response.read1(READ_CHUNK) if not response.isclosed() else b""
        if not chunk:
            if deadline.expired:  # the timer shut the socket down: what was read is not the whole reply
                raise TransportError("no complete answer within the sync deadline")
            return b"".join(chunks)
        size += len(chunk)
        if size > cap:
            raise ReplyTooLarge(f"reply is over max_response_bytes ({cap}); refused")
        chunks.append(chunk)
