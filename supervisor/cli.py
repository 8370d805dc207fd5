"""The command line of `edge`, `edge-otlp`, `edge-datadog` and `edge-prometheus`: arguments and `--help`.

The help is written for the operator (routes, default port, config keys, `TERO_*`), never the
module docstrings, which describe the code.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from edge import __version__
from edge.config import Config, declared_keys

VALIDATE = "validate"

ADMIN_ROUTES = ("GET|HEAD /_health", "GET /_edge/metrics", "GET /_edge/policies[?format=json]")
PROTOCOL_ROUTES = {
    "otlp": ("POST /v1/logs, /v1/metrics, /v1/traces  OTLP/HTTP (JSON or protobuf)",),
    "datadog": ("POST /api/v2/logs  Datadog logs", "POST /api/v2/series  Datadog metrics"),
    "prometheus": ("GET /metrics, /metrics/*  Prometheus scrape proxy",),
}


@dataclass(frozen=True)
class Arguments:
    config: str | None
    dry_run: bool


def prog(distribution: str) -> str:
    return "edge" if distribution == "edge" else f"edge-{distribution}"


def _routes(distribution: str) -> list[str]:
    protocols = PROTOCOL_ROUTES if distribution == "edge" else {distribution: PROTOCOL_ROUTES[distribution]}
    lines = [route for routes in protocols.values() for route in routes]
    return [*lines, *ADMIN_ROUTES, "anything else  passed through unmodified to upstream_url"]


def _description(distribution: str) -> str:
    served = "every protocol's routes" if distribution == "edge" else f"the {distribution} routes only"
    return (f"The edge telemetry policy proxy with {served}:\nit applies policies to logs, metrics and "
            "traces on their way to your backends.")


def _epilog(distribution: str) -> str:
    keys = ", ".join(key.name for key in declared_keys(Config))
    default = Config()
    routes = "\n".join(f"  {route}" for route in _routes(distribution))
    return (f"routes:\n{routes}\n\n"
            f"listens on {default.listen_address}:{default.listen_port} unless listen_address/listen_port say "
            "otherwise.\n\n"
            f"config keys (JSON): {keys}.\n"
            "Every key, its default and meaning: the README's \"Config reference\" table and "
            "docs/configuration.md.\n"
            "TERO_<KEY> in the environment overrides any scalar key (TERO_LOG_LEVEL=debug, "
            "TERO_LISTEN_PORT=9090,\nTERO_SERVICE_NAME=edge-eu); ${VAR} in a string is replaced by the "
            "environment variable VAR.\n\n"
            f"{prog(distribution)} {VALIDATE} [CONFIG] is the same as --dry-run.\n"
            "exit status: 0 stopped cleanly (or the check passed), 2 bad configuration or cannot listen, "
            "1 the workers failed.")


def parser(distribution: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog(distribution), description=_description(distribution),
                                epilog=_epilog(distribution), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", metavar="CONFIG",
                   help="config file (default: the first of ./config.json, /app/config.json, "
                        "/etc/edge/config.json that exists, else the embedded one, which applies no policies)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the config and every policy source, print a summary, start nothing; "
                        "exit 0 when all is well, 2 otherwise")
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return p


def parse(distribution: str, argv: list[str]) -> Arguments:
    """`[validate] [--dry-run] [CONFIG]`; `validate` first is the same as `--dry-run`."""
    validate = bool(argv) and argv[0] == VALIDATE
    args = parser(distribution).parse_args(argv[1:] if validate else argv)
    return Arguments(args.config, args.dry_run or validate)
