"""The container image: the Dockerfile's structure and the config the image starts with.

No Docker engine runs here, so the image is checked piece by piece: the Dockerfile is
parsed (stages, build argument, user, port, entrypoint), its DISTRIBUTION step is run by
a real shell against a stand-in venv, and the default config is loaded with edge's loader
and served by the real `edge` command from a directory laid out like the image's
/etc/edge (edge with no argument reads ./config.json, the image's WORKDIR).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tomllib
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from edge.config import load as load_config
from edge.policy.loader import load_file as load_policy_file
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLES = ROOT / "edge" / "examples"
CONTAINER_CONFIG = EXAMPLES / "container-config.json"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EDGE_COMMAND = Path(sys.executable).parent / "edge"

# DISTRIBUTION build argument -> the console script the image runs.
DISTRIBUTIONS = {"edge": "edge", "otlp": "edge-otlp", "datadog": "edge-datadog",
                 "prometheus": "edge-prometheus", "tail": "edge-tail"}


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    arguments: str  # the rest of the logical line, continuations joined
    stage: int  # index of the FROM it belongs to (-1 before the first)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Logical instructions: `\\` continues a line, `#` lines are comments (also inside a continuation)."""
    instructions: list[Instruction] = []
    pending = ""
    stage = -1
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        pending = ""
        if keyword.upper() == "FROM":
            stage += 1
        instructions.append(Instruction(keyword.upper(), arguments.strip(), stage))
    return instructions


INSTRUCTIONS = parse_dockerfile(DOCKERFILE.read_text())
GLOBAL_ARGS = dict(i.arguments.split("=", 1) for i in INSTRUCTIONS if i.keyword == "ARG" and i.stage == -1)


def in_stage(stage: int, keyword: str) -> list[str]:
    return [i.arguments for i in INSTRUCTIONS if i.stage == stage and i.keyword == keyword]


def from_lines() -> list[tuple[str, str]]:
    """(image, stage name) of every FROM, with global build arguments substituted."""
    out = []
    for i in INSTRUCTIONS:
        if i.keyword == "FROM":
            image, _, name = re.sub(r"\$\{(\w+)\}", lambda m: GLOBAL_ARGS[m.group(1)], i.arguments).partition(" AS ")
            out.append((image.strip(), name.strip()))
    return out


RUNTIME = len(from_lines()) - 1


def test_multi_stage_build_on_python_slim() -> None:
    assert from_lines() == [("python:3.11-slim", "builder"), ("python:3.11-slim", "runtime")]
    builder_runs = " ".join(in_stage(0, "RUN"))
    assert "-m venv" in builder_runs and re.search(r"pip\"? install \.$", in_stage(0, "RUN")[-1])
    assert "--from=builder /opt/edge /opt/edge" in in_stage(RUNTIME, "COPY")
    assert not any("pip" in run for run in in_stage(RUNTIME, "RUN"))  # nothing is built in the runtime stage


def test_builder_copies_every_package_the_project_installs() -> None:
    copied = {source for copy in in_stage(0, "COPY") for source in shlex.split(copy)[:-1]}
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", PYPROJECT["project"]["readme"]} <= copied


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    (user,) = in_stage(RUNTIME, "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} must be numeric (runAsNonRoot checks numbers)"
    uid = int(user.split(":")[0])
    assert uid != 0
    chart_values = yaml.safe_load((ROOT / "deploy" / "helm" / "edge" / "values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == uid


def test_exposes_8080_with_an_exec_form_entrypoint() -> None:
    assert in_stage(RUNTIME, "EXPOSE") == ["8080"]
    (entrypoint,) = in_stage(RUNTIME, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/edge/bin/edge-entrypoint"]
    assert in_stage(RUNTIME, "CMD") == []  # edge with no argument reads ./config.json in the WORKDIR
    assert in_stage(RUNTIME, "WORKDIR") == ["/etc/edge"]


def test_default_config_and_policies_go_to_etc_edge() -> None:
    copies = in_stage(RUNTIME, "COPY")
    assert "edge/examples/container-config.json /etc/edge/config.json" in copies
    assert "edge/examples/policies.json /etc/edge/policies.json" in copies


def distribution_step() -> str:
    (step,) = [run for run in in_stage(RUNTIME, "RUN") if "DISTRIBUTION" in run]
    return step


def run_distribution_step(venv: Path, distribution: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "VIRTUAL_ENV": str(venv), "DISTRIBUTION": distribution}
    return subprocess.run(["sh", "-c", distribution_step()], env=env, capture_output=True, text=True, timeout=10)


@pytest.fixture
def stand_in_venv(tmp_path: Path) -> Path:
    """A venv bin directory holding an executable for every console script the image may run."""
    (tmp_path / "bin").mkdir()
    for command in DISTRIBUTIONS.values():
        script = tmp_path / "bin" / command
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
    return tmp_path


def test_distribution_build_argument_defaults_to_edge() -> None:
    assert "DISTRIBUTION=edge" in in_stage(RUNTIME, "ARG")


@pytest.mark.parametrize(("distribution", "command"), sorted(DISTRIBUTIONS.items()))
def test_distribution_selects_the_entrypoint(stand_in_venv: Path, distribution: str, command: str) -> None:
    result = run_distribution_step(stand_in_venv, distribution)
    assert result.returncode == 0, result.stderr
    link = stand_in_venv / "bin" / "edge-entrypoint"
    assert link.is_symlink() and link.resolve() == stand_in_venv / "bin" / command


def test_unknown_distribution_fails_the_build(stand_in_venv: Path) -> None:
    result = run_distribution_step(stand_in_venv, "fluentd")
    assert result.returncode != 0
    assert "DISTRIBUTION must be edge, otlp, datadog, prometheus or tail, not 'fluentd'" in result.stderr
    assert not (stand_in_venv / "bin" / "edge-entrypoint").exists()


def test_distribution_without_its_command_fails_the_build(stand_in_venv: Path) -> None:
    (stand_in_venv / "bin" / "edge-datadog").unlink()
    result = run_distribution_step(stand_in_venv, "datadog")
    assert result.returncode != 0 and "edge-datadog is not installed" in result.stderr


def test_every_distribution_is_a_console_script_of_the_project() -> None:
    assert set(DISTRIBUTIONS.values()) <= set(PYPROJECT["project"]["scripts"])


def dockerignore_excludes(path: str) -> bool:
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    parts = Path(path).parts
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    return any(fnmatch.fnmatch(prefix, pattern.replace("**/", "")) or fnmatch.fnmatch(prefix, pattern)
               for pattern in patterns for prefix in prefixes)


def test_dockerignore_keeps_what_the_build_copies() -> None:
    sources = [s for i in INSTRUCTIONS if i.keyword == "COPY" and "--from" not in i.arguments
               for s in shlex.split(i.arguments)[:-1]]
    assert sources and [s for s in sources if dockerignore_excludes(s)] == []
    assert all(dockerignore_excludes(p) for p in (".git", ".venv", "tests", ".ci/bin/helm", "edge/__pycache__"))


# ── the image's default config ──


def test_container_config_listens_on_all_interfaces(tmp_path: Path) -> None:
    config = load_config(CONTAINER_CONFIG, env={})
    assert (config.listen_address, config.listen_port) == ("0.0.0.0", 8080)
    assert config.warnings == ()
    (provider,) = config.policy_providers
    assert provider.type == "file" and Path(provider.path) == EXAMPLES / "policies.json"
    result = load_policy_file(provider.path)
    assert result.policies and result.errors == []


def image_etc_edge(tmp_path: Path) -> Path:
    """/etc/edge as the Dockerfile lays it out."""
    etc = tmp_path / "etc-edge"
    etc.mkdir()
    (etc / "config.json").write_bytes(CONTAINER_CONFIG.read_bytes())
    (etc / "policies.json").write_bytes((EXAMPLES / "policies.json").read_bytes())
    return etc


def test_container_config_in_etc_edge_finds_its_policies(tmp_path: Path) -> None:
    etc = image_etc_edge(tmp_path)
    (provider,) = load_config(etc / "config.json", env={}).policy_providers
    assert Path(provider.path) == etc / "policies.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


def test_edge_without_arguments_serves_the_image_config(tmp_path: Path) -> None:
    """`edge` started the way the image starts it: no argument, working directory /etc/edge."""
    etc = image_etc_edge(tmp_path)
    port = free_port()
    # Loopback and a free port instead of 0.0.0.0:8080 (the config's other values stay as they are).
    env = {**os.environ, "TERO_LISTEN_ADDRESS": "127.0.0.1", "TERO_LISTEN_PORT": str(port), "TERO_WORKERS": "1"}
    proc = subprocess.Popen([str(EDGE_COMMAND)], cwd=etc, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        expected = {p["id"] for p in json.loads((etc / "policies.json").read_bytes())["policies"]}
        loaded: set[str] = set()

        def serving() -> bool:  # healthy with the image's policies, or exited (reported below)
            nonlocal loaded
            try:
                assert get_json(f"http://127.0.0.1:{port}/_health") == {"status": "ok"}
                loaded = {p["id"] for p in get_json(f"http://127.0.0.1:{port}/_edge/policies?format=json")["policies"]}
            except OSError:
                pass  # not listening yet
            return loaded == expected or proc.poll() is not None

        wait_for(serving, 30, 0.1)
        assert loaded == expected, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "configuration from config.json" in stderr.decode()
