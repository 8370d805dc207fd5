"""`edge-lambda`: register with the Lambda Extensions API, serve the proxy, follow the events.

Start-up (Lambda's init phase): register for INVOKE and SHUTDOWN, read the config from
`TERO_*` variables only, start the proxy on 127.0.0.1:`TERO_LISTEN_PORT` (8080) and load
the policies, all before asking for the first event, so the function's first telemetry is
already filtered. A failure here is reported with `POST /init/error`.

INVOKE: upload the s3-dump batches and sync policy servers that are due, while the
function runs; the environment may be frozen as soon as we ask for the next event, so
nothing is left half done. SHUTDOWN: stop the proxy (in-flight requests finish, s3-dump
batches are uploaded), make a final policy sync with the last statistics, exit 0 — all
within the event's deadline. A proxy that died is reported with `POST /exit/error`.

Variables beyond the scalar `TERO_<KEY>` overrides of the config file (docs/configuration.md): the list
valued keys are JSON, `TERO_POLICY_PROVIDERS` (as `policy_providers`) and
`TERO_S3_DUMP_TARGETS` (as `s3_dump.targets`); `${VAR}` is substituted in them.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from edge import __version__, logs
from edge.config import Config, ConfigError, build
from edge.control.builder import build_control_plane
from edge.extensions.s3_dump import EXTENSION_TYPE
from edge.lambda_extension.api import RUNTIME_API_ENV, ExtensionsApi, ExtensionsApiError
from edge.lambda_extension.policies import EventDrivenPolicies
from edge.lambda_extension.runtime import LocalRuntime, StatsHandOver
from edge.lambda_extension.server import ProxyServer
from edge.protocols.app import create_app

log = logging.getLogger("edge.lambda")

DISTRIBUTION = "datadog"
JSON_VARIABLES = {"TERO_POLICY_PROVIDERS": ("policy_providers",), "TERO_S3_DUMP_TARGETS": ("s3_dump", "targets")}
SERVER_START_TIMEOUT_S = 5.0
POLICY_HTTP_TIMEOUT_S = 3.0  # a sync at start-up or on INVOKE; Lambda's init phase has 10 s in all
INVOKE_FLUSH_TIMEOUT_S = 2.0
SHUTDOWN_BUDGET_S = 2.0  # when the event names no deadline (Lambda gives external extensions 2 s)
SHUTDOWN_MARGIN_S = 0.2


class ProxyStopped(RuntimeError):
    """The proxy's server thread is gone: the function's telemetry has nowhere to go."""


class Terminated(Exception):
    """SIGTERM or SIGINT while waiting for an event (a local run; Lambda sends SHUTDOWN)."""


def lambda_config(env: Mapping[str, str]) -> Config:
    """The config from the environment alone: the scalar TERO_* overrides plus the JSON lists."""
    doc: dict[str, Any] = {}
    for name, path in JSON_VARIABLES.items():
        if name not in env:
            continue
        try:
            value = orjson.loads(env[name])
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"environment variable {name}: not valid JSON: {exc}") from None
        section = doc
        for key in path[:-1]:
            section = section.setdefault(key, {})
        section[path[-1]] = value
    return build(doc, env=env, overrides={"listen_address": "127.0.0.1", "workers": 1})


class LambdaExtension:
    def __init__(self, api: ExtensionsApi, config: Config) -> None:
        self.api = api
        self.config = config
        self.runtime = LocalRuntime(config)
        self.server = ProxyServer(create_app(self.runtime, DISTRIBUTION), config.listen_address, config.listen_port,
                                  config.max_connections)
        # snapshots and statistics stay in this process: no shared memory, no spool
        self.control = build_control_plane(config, self.runtime.snapshots, StatsHandOver(self.runtime.stats),
                                           extensions=[EXTENSION_TYPE] if self.runtime.s3_dump is not None else [],
                                           http_timeout=POLICY_HTTP_TIMEOUT_S)
        self.policies = EventDrivenPolicies(self.control.providers)
        self._waiting = False
        self._terminate = False

    # ── start-up ──

    def start(self) -> None:
        self.server.start(SERVER_START_TIMEOUT_S)
        self.policies.refresh(force=True)
        log.info("edge-lambda listening on %s:%d, upstream %s, %d policy providers", self.config.listen_address,
                 self.config.listen_port, self.config.upstream_url, len(self.config.policy_providers))

    def on_signal(self, signum: int, _frame: object) -> None:
        log.info("received %s", signal.Signals(signum).name)
        if self._waiting:
            raise Terminated
        self._terminate = True

    # ── events ──

    def run(self) -> int:
        """Follow events until SHUTDOWN (0) or a failure (1)."""
        try:
            while not self._terminate:
                event = self._next_event()
                kind = event["eventType"]
                if kind == "SHUTDOWN":
                    self.shutdown(_budget(event))
                    return 0
                if kind == "INVOKE":
                    self.on_invoke()
                else:
                    log.warning("ignoring an unknown Lambda event %r", kind)
        except Terminated:
            pass
        except ProxyStopped as exc:
            log.error("%s", exc)
            self._report_exit("Extension.ProxyStopped", str(exc))
            self.shutdown(SHUTDOWN_BUDGET_S)
            return 1
        except ExtensionsApiError as exc:
            log.error("Lambda Extensions API: %s", exc)
            self.shutdown(SHUTDOWN_BUDGET_S)
            return 1
        self.shutdown(SHUTDOWN_BUDGET_S)
        return 0

    def _next_event(self) -> dict[str, Any]:
        self._waiting = True
        try:
            return self.api.next_event()
        finally:
            self._waiting = False

    def on_invoke(self) -> None:
        if not self.server.running:
            raise ProxyStopped("the proxy server stopped")
        try:
            if not self.runtime.flush_extensions(INVOKE_FLUSH_TIMEOUT_S):
                log.warning("s3-dump batches were not all uploaded within %g s; they stay queued",
                            INVOKE_FLUSH_TIMEOUT_S)
            self.policies.refresh()
        except Exception:  # noqa: BLE001 - a failed flush must not take the proxy down
            log.exception("flushing on INVOKE failed")

    def shutdown(self, budget: float) -> None:
        """Stop serving (extensions flush in the lifespan shutdown), then the final sync, within `budget`."""
        deadline = time.monotonic() + budget
        self.runtime.stop_timeout = budget * 0.4
        if not self.server.stop(budget * 0.6):
            log.warning("the proxy did not stop within %.1f s", budget * 0.6)
        self.policies.final_sync(max(deadline - time.monotonic(), 0.2))
        log.info("stopped")

    def _report_exit(self, error_type: str, message: str) -> None:
        try:
            self.api.exit_error(error_type, message)
        except ExtensionsApiError as exc:
            log.error("reporting the exit error failed: %s", exc)


def _budget(event: dict[str, Any]) -> float:
    """Seconds left before the event's deadline, less a margin for exiting."""
    deadline_ms = event.get("deadlineMs")
    if not isinstance(deadline_ms, (int, float)):
        return SHUTDOWN_BUDGET_S
    return max(deadline_ms / 1000 - time.time() - SHUTDOWN_MARGIN_S, 0.2)


def _fail_init(api: ExtensionsApi, error_type: str, message: str) -> None:
    print(f"edge-lambda: {logs.redact(message)}", file=sys.stderr)
    try:
        api.init_error(error_type, message)
    except ExtensionsApiError as exc:
        print(f"edge-lambda: reporting the init error failed: {exc}", file=sys.stderr)


HELP_EPILOG = f"""routes (on 127.0.0.1):
  POST /api/v2/logs  Datadog logs
  POST /api/v2/series  Datadog metrics
  GET|HEAD /_health, GET /_edge/metrics, GET /_edge/policies
  anything else  passed through unmodified to upstream_url

configuration: environment only. TERO_<KEY> sets any scalar key of the config file
(TERO_UPSTREAM_URL, TERO_LISTEN_PORT, default 8080, TERO_LOG_LEVEL; every key in the README's
"Config reference" table); TERO_POLICY_PROVIDERS and TERO_S3_DUMP_TARGETS hold JSON lists.
Lambda sets {RUNTIME_API_ENV}; without it edge-lambda exits 2."""


def _parse_arguments(argv: list[str]) -> None:
    """`--help` and `--version` work anywhere; nothing else is taken from the command line."""
    parser = argparse.ArgumentParser(
        prog="edge-lambda", epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="The edge proxy as an AWS Lambda extension: filters the function's Datadog telemetry "
                    "with edge policies before it leaves.")
    parser.add_argument("--version", action="version", version=f"edge-lambda {__version__}")
    parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    _parse_arguments(sys.argv[1:] if argv is None else argv)
    address = os.environ.get(RUNTIME_API_ENV)
    if not address:
        print(f"edge-lambda: {RUNTIME_API_ENV} is not set: run it as a Lambda extension", file=sys.stderr)
        return 2
    api = ExtensionsApi(address)
    try:
        api.register(Path(sys.argv[0]).name or "edge-lambda")
    except ExtensionsApiError as exc:
        print(f"edge-lambda: registering with the Lambda Extensions API failed: {exc}", file=sys.stderr)
        return 1
    try:
        config = lambda_config(os.environ)
    except ConfigError as exc:
        _fail_init(api, "Extension.ConfigInvalid", str(exc))
        return 2
    logs.configure(config.log_level)
    for warning in config.warnings:
        log.warning("%s", warning)
    try:
        extension = LambdaExtension(api, config)
        extension.start()
    except Exception as exc:  # noqa: BLE001 - reported to Lambda, one line on stderr
        log.debug("start-up failed", exc_info=True)
        _fail_init(api, "Extension.StartFailed", str(exc))
        return 1
    signal.signal(signal.SIGTERM, extension.on_signal)
    signal.signal(signal.SIGINT, extension.on_signal)
    return extension.run()


if __name__ == "__main__":
    sys.exit(main())
