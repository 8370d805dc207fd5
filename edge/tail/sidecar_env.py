"""The sidecar log collector's environment variables, read as edge-tail settings.

edge-tail replaces a sidecar collector whose Kubernetes manifests configure it with
plain variables (`GATEWAY_URL`, `LOG_PATHS`, `BATCH_SIZE`, ...). Those manifests keep
working unchanged: each variable maps onto one edge-tail option, below `TERO_*`
variables and the command line (which win), above the `-c` file. When the collector's
variables are in use (`GATEWAY_URL` or `LOG_PATHS` set), the resource also gets its
defaults for `SERVICE_NAME`, `POD_NAME` and `NAMESPACE`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

LOGS_PATH = "/v1/logs"
RESOURCE_DEFAULTS = {"SERVICE_NAME": "unknown-service", "POD_NAME": "unknown-pod", "NAMESPACE": "default"}


def _gateway(value: str) -> str:
    """A gateway base URL gets the OTLP logs path; a URL with a path is used as given."""
    text = value.strip()
    try:
        path = urlsplit(text).path
    except ValueError:
        return text  # the URL check reports it, naming the variable
    return text.rstrip("/") + LOGS_PATH if path in ("", "/") else text


def _milliseconds(value: str) -> Any:
    try:
        return str(round(float(value) * 1000))
    except ValueError:
        return value  # the count check reports it, naming the variable


def _on_off(on: str, off: str) -> Callable[[str], str]:
    return lambda value: on if value.strip().lower() in ("true", "1", "yes") else off


# variable → (option, conversion of its text)
VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "GATEWAY_URL": ("forward_url", _gateway),
    "BATCH_SIZE": ("batch_lines", str),
    "FLUSH_INTERVAL_SECONDS": ("batch_interval_ms", _milliseconds),
    "MAX_RETRIES": ("max_retries", str),
    "RETRY_BACKOFF_MS": ("retry_backoff_ms", str),
    "MAX_BUFFER_SIZE": ("max_buffer_records", str),
    "HTTP_TIMEOUT_SECONDS": ("http_timeout_s", str),
    "PARSE_STRUCTURED_LOGS": ("format", _on_off("auto", "raw")),
    "ENABLE_TRACE_CORRELATION": ("no_trace_correlation", _on_off("false", "true")),
}


def in_use(env: Mapping[str, str]) -> bool:
    return bool(env.get("GATEWAY_URL") or env.get("LOG_PATHS"))


def values(env: Mapping[str, str]) -> dict[str, tuple[Any, str]]:
    """(value, variable name) per option the collector's variables set."""
    return {option: (convert(env[name]), name) for name, (option, convert) in VARIABLES.items() if env.get(name)}


def paths(env: Mapping[str, str]) -> tuple[list[str], str] | None:
    """`LOG_PATHS`, comma-separated, as the paths to tail."""
    items = [p.strip() for p in env.get("LOG_PATHS", "").split(",") if p.strip()]
    return (items, "LOG_PATHS") if items else None


def resource_defaults(env: Mapping[str, str]) -> dict[str, str]:
    """The environment with the collector's resource defaults filled in when its variables are in use."""
    if not in_use(env):
        return dict(env)
    return {**RESOURCE_DEFAULTS, **{k: v for k, v in env.items() if v}}
