"""Defaults never drop or sample production data; the example policies load only on the quick-start path.

The embedded config (`edge` with no argument and no config file around) and the container
image's config apply no policies. The README's quick-start command names
`edge/examples/quickstart.json`, which loads the example policies: it is run here as the
README writes it (the venv's `edge`, from the repository root) against a real upstream.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.config import load as load_config
from edge.policy.loader import load_file as load_policy_file
from supervisor.main import EMBEDDED_CONFIG
from tests.proxy_fixtures import RecordingUpstream, free_port, request
from tests.test_container import CONTAINER_CONFIG, EDGE_COMMAND, running_edge

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "edge" / "examples"
QUICKSTART = EXAMPLES / "quickstart.json"
SAMPLE_LOGS = (EXAMPLES / "logs.json").read_bytes()
EXAMPLE_POLICY_IDS = [p["id"] for p in json.loads((EXAMPLES / "policies.json").read_bytes())["policies"]]


def readme_setup() -> str:
    """The README's "Set up" section."""
    return (ROOT / "README.md").read_text().split("\n## Set up\n", 1)[1].split("\n## ", 1)[0]


def readme_setup_commands() -> list[str]:
    """The indented command lines of the README's "Set up" section."""
    return [line.strip() for line in readme_setup().splitlines() if line.startswith("    ")]


def quickstart_command() -> list[str]:
    (command,) = [c for c in readme_setup_commands() if "pip install -q . " in c]
    return command.split(" && ")


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def forwarded_bodies(upstream: RecordingUpstream) -> list[str]:
    return [record["body"]["stringValue"] for request in upstream.received("/v1/logs")
            for resource in json.loads(request.body)["resourceLogs"]
            for scope in resource["scopeLogs"] for record in scope["logRecords"]]


@pytest.mark.parametrize("path", [EMBEDDED_CONFIG, CONTAINER_CONFIG], ids=["embedded", "container"])
def test_default_configs_apply_no_policies(path: Path) -> None:
    config = load_config(path, env={})
    assert config.policy_providers == () and config.warnings == ()


def test_edge_without_a_config_forwards_everything(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """No argument, no ./config.json: the embedded default, no policies, a debug log passes untouched."""
    env = {"TERO_LISTEN_PORT": str(free_port()), "TERO_UPSTREAM_URL": upstream.url}
    with running_edge(tmp_path, env, snapshot=False) as served:
        assert served.policies == []
        reply = request(served.port, "POST", "/v1/logs", body=SAMPLE_LOGS, headers={"Content-Type": "application/json"})
        assert reply.status == 200
    assert forwarded_bodies(upstream) == ["cache miss for cart 42", "order 17 confirmed for jane.doe@example.com",
                                          "payment retry 2"]
    assert f"configuration from {EMBEDDED_CONFIG}" in served.stderr


def test_readme_quick_start_is_one_command_naming_the_quickstart_config() -> None:
    steps = quickstart_command()
    assert steps == ["python3 -m venv .venv", ".venv/bin/pip install -q .",
                     ".venv/bin/edge edge/examples/quickstart.json"]
    prose = " ".join(readme_setup().split())
    assert "the quick-start config `edge/examples/quickstart.json`" in prose
    assert "example policies of `edge/examples/policies.json`" in prose and "only this config loads them" in prose
    assert "The embedded default and the container image's default apply no policies" in " ".join(
        (ROOT / "README.md").read_text().split())


def test_quickstart_config_loads_the_example_policies() -> None:
    config = load_config(QUICKSTART, env={})
    (provider,) = config.policy_providers
    assert provider.type == "file" and Path(provider.path) == EXAMPLES / "policies.json"
    result = load_policy_file(provider.path)
    assert sorted(p.id for p in result.policies) == sorted(EXAMPLE_POLICY_IDS) and result.errors == []


def test_readme_quick_start_runs_the_example_policies(upstream: RecordingUpstream) -> None:
    """The README's run step, from the repository root, with the test venv's edge on a free port."""
    argv = shlex.split(quickstart_command()[-1])
    assert argv[0] == ".venv/bin/edge"
    env = {"TERO_LISTEN_PORT": str(free_port()), "TERO_UPSTREAM_URL": upstream.url}
    with running_edge(ROOT, env, args=tuple(argv[1:])) as served:
        assert sorted(served.policies) == sorted(EXAMPLE_POLICY_IDS)
        reply = request(served.port, "POST", "/v1/logs", body=SAMPLE_LOGS, headers={"Content-Type": "application/json"})
        assert reply.status == 200
    assert forwarded_bodies(upstream) == ["order 17 confirmed for <email>", "payment retry 2"]
    assert f"configuration from {argv[1]}" in served.stderr
    assert EDGE_COMMAND.exists()
