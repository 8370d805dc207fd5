"""The Lambda Extensions API client (register, next event, init and exit errors).

Base URL `http://${AWS_LAMBDA_RUNTIME_API}/2020-01-01/extension`. `next_event` blocks
until Lambda has an event for us (the environment may be frozen meanwhile), so it has no
read timeout; the other calls are short.
"""

from __future__ import annotations

import http.client
from typing import Any

import orjson

RUNTIME_API_ENV = "AWS_LAMBDA_RUNTIME_API"
BASE_PATH = "/2020-01-01/extension"
NAME_HEADER = "Lambda-Extension-Name"
ID_HEADER = "Lambda-Extension-Identifier"
ERROR_TYPE_HEADER = "Lambda-Extension-Function-Error-Type"
EVENTS = ("INVOKE", "SHUTDOWN")
CALL_TIMEOUT_S = 5.0


class ExtensionsApiError(RuntimeError):
    """The Extensions API could not be reached or refused a call."""


class ExtensionsApi:
    def __init__(self, address: str) -> None:
        self.address = address  # host:port, as Lambda sets it
        self.extension_id = ""

    def register(self, name: str) -> dict[str, Any]:
        """Register for INVOKE and SHUTDOWN; keeps the identifier for every later call."""
        status, headers, body = self._call("POST", "/register", {NAME_HEADER: name}, {"events": list(EVENTS)})
        if status != 200 or not headers.get(ID_HEADER.lower()):
            raise ExtensionsApiError(f"register answered {status}: {body[:200]!r}")
        self.extension_id = headers[ID_HEADER.lower()]
        return _json(body)

    def next_event(self) -> dict[str, Any]:
        """Block until the next event (INVOKE or SHUTDOWN)."""
        status, _, body = self._call("GET", "/event/next", {ID_HEADER: self.extension_id}, timeout=None)
        if status != 200:
            raise ExtensionsApiError(f"event/next answered {status}: {body[:200]!r}")
        event = _json(body)
        if not isinstance(event.get("eventType"), str):
            raise ExtensionsApiError(f"event/next answered without an eventType: {body[:200]!r}")
        return event

    def init_error(self, error_type: str, message: str) -> None:
        self._error("/init/error", error_type, message)

    def exit_error(self, error_type: str, message: str) -> None:
        self._error("/exit/error", error_type, message)

    def _error(self, path: str, error_type: str, message: str) -> None:
        headers = {ID_HEADER: self.extension_id, ERROR_TYPE_HEADER: error_type}
        self._call("POST", path, headers, {"errorMessage": message, "errorType": error_type, "stackTrace": []})

    def _call(self, method: str, path: str, headers: dict[str, str], body: Any = None,
              timeout: float | None = CALL_TIMEOUT_S) -> tuple[int, dict[str, str], bytes]:
        data = orjson.dumps(body) if body is not None else None
        conn = http.client.HTTPConnection(self.address, timeout=timeout)
        try:
            conn.request(method, BASE_PATH + path, body=data,
                         headers={**headers, **({"Content-Type": "application/json"} if data else {})})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise ExtensionsApiError(f"{method} {BASE_PATH}{path}: {exc}") from None
        finally:
            conn.close()


def _json(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        raise ExtensionsApiError(f"not JSON: {body[:200]!r}") from None
    return doc if isinstance(doc, dict) else {}
