"""`--help` and `--version` of every command but edge-policy, run as a user runs them.

The help is for operators: routes, the default port, where the config keys are described and
the `TERO_*` overrides; never a module docstring. edge-lambda answers both without any Lambda
environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge import __version__

BIN = Path(sys.executable).parent
ADMIN = ["GET|HEAD /_health", "GET /_edge/metrics", "GET /_edge/policies[?format=json]",
         "anything else  passed through unmodified to upstream_url"]
ROUTES = {
    "edge": ["POST /v1/logs, /v1/metrics, /v1/traces", "POST /api/v2/logs", "POST /api/v2/series",
             "GET /metrics, /metrics/*", *ADMIN],
    "edge-otlp": ["POST /v1/logs, /v1/metrics, /v1/traces", *ADMIN],
    "edge-datadog": ["POST /api/v2/logs", "POST /api/v2/series", *ADMIN],
    "edge-prometheus": ["GET /metrics, /metrics/*", *ADMIN],
}


def run(command: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "TERO_"))}
    return subprocess.run([str(BIN / command), *args], capture_output=True, text=True, timeout=60, env=env)


@pytest.mark.parametrize("command", sorted(ROUTES))
def test_proxy_help_names_routes_port_keys_and_env(command: str) -> None:
    result = run(command, "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    for route in ROUTES["edge"]:
        assert (f"\n  {route}" in text) == (route in ROUTES[command]), route
    assert "listens on 127.0.0.1:8080 unless listen_address/listen_port say otherwise." in text
    assert "config keys (JSON): listen_address, listen_port, upstream_url," in text
    assert "the README's \"Config reference\" table and docs/configuration.md." in text
    assert "TERO_<KEY> in the environment overrides any scalar key (TERO_LOG_LEVEL=debug" in text
    assert f"{command} validate [CONFIG] is the same as --dry-run." in text
    assert "supervisor process" not in text and "The supervisor" not in text  # no module docstring


@pytest.mark.parametrize("command", [*sorted(ROUTES), "edge-tail", "edge-lambda"])
def test_version(command: str) -> None:
    result = run(command, "--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"{command} {__version__}\n", "")


def test_tail_help() -> None:
    result = run("edge-tail", "--help")
    assert result.returncode == 0 and result.stderr == ""
    assert "Tail files (or stdin), apply edge policies to each line, write or forward what" in result.stdout
    assert "--version" in result.stdout


def test_lambda_help_without_lambda_environment() -> None:
    result = run("edge-lambda", "--help")
    assert result.returncode == 0 and result.stderr == ""
    text = result.stdout
    assert "The edge proxy as an AWS Lambda extension" in text
    for route in ("POST /api/v2/logs  Datadog logs", "POST /api/v2/series  Datadog metrics",
                  "GET|HEAD /_health, GET /_edge/metrics, GET /_edge/policies"):
        assert f"\n  {route}" in text, route
    assert "TERO_<KEY> sets any scalar key of the config file" in text
    assert "Start-up (Lambda's init phase)" not in text  # the module docstring
    assert run("edge-lambda").stderr == "edge-lambda: AWS_LAMBDA_RUNTIME_API is not set: run it as a Lambda extension\n"
