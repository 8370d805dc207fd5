"""`edge-healthcheck [CONFIG.json]`: exit 0 when the edge on this host answers `GET /_health`, else 1.

The container image's HEALTHCHECK runs it: the slim base image has no curl, and the port
is whatever the config says, so this reads the config the way `edge` does (same search
list, same `TERO_*` overrides) and asks the proxy on loopback. One line on stderr says
why a check failed; it never prints a traceback.
"""

from __future__ import annotations

import argparse
import http.client
import sys

from edge.config import ConfigError, load
from edge.logs import redact
from supervisor.main import _config_path

TIMEOUT_SECONDS = 3.0
# An edge listening on every interface is asked on loopback.
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


def health_url(listen_address: str, listen_port: int) -> tuple[str, int]:
    """(host, port) to ask: the listen address, or loopback for a wildcard address."""
    return WILDCARDS.get(listen_address, listen_address), listen_port


def check(host: str, port: int) -> str | None:
    """None when `GET /_health` answers 200, else why not."""
    connection = http.client.HTTPConnection(host, port, timeout=TIMEOUT_SECONDS)
    try:
        connection.request("GET", "/_health")
        status = connection.getresponse().status
    except OSError as exc:
        return f"no answer: {exc}"
    finally:
        connection.close()
    return None if status == 200 else f"status {status}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-healthcheck", description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="config file (default: the one `edge` would read)")
    args = parser.parse_args(argv)
    try:
        config = load(_config_path(args.config))
    except ConfigError as exc:
        print(f"edge-healthcheck: {redact(str(exc))}", file=sys.stderr)
        return 1
    host, port = health_url(config.listen_address, config.listen_port)
    problem = check(host, port)
    if problem is not None:
        shown = f"[{host}]" if ":" in host else host
        print(f"edge-healthcheck: http://{shown}:{port}/_health: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
