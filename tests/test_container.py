"""The container image: the Dockerfile's structure, its lock file, health check and config.

No Docker engine runs here, so the image is checked piece by piece: the Dockerfile is
parsed (stages, build argument, user, port, entrypoint), its DISTRIBUTION step and its
HEALTHCHECK command are run by a real shell (against a stand-in venv, and against a real
running edge), the lock file is compared with pyproject.toml and the installed metadata,
and the default config is loaded with edge's loader and served by the real `edge` command
from a directory laid out like the image's /app (edge with no argument reads ./config.json
in the image's WORKDIR, then /app/config.json, then /etc/edge/config.json).
"""

from __future__ import annotations

import contextlib
import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from edge.config import load as load_config
from supervisor.healthcheck import health_url
from supervisor.main import CONFIG_SEARCH, EMBEDDED_CONFIG, _config_path
from tests.proxy_fixtures import free_port
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
    builder_runs = in_stage(0, "RUN")
    assert "-m venv" in builder_runs[0]
    # the locked dependencies (hashes required), then the project alone: nothing is resolved at build time
    assert re.search(r"pip\"? install --require-hashes -r requirements.lock$", builder_runs[1])
    assert re.search(r"pip\"? install --no-deps \.$", builder_runs[-1])
    assert "--from=builder /opt/edge /opt/edge" in in_stage(RUNTIME, "COPY")
    assert not any("pip" in run for run in in_stage(RUNTIME, "RUN"))  # nothing is built in the runtime stage


def test_builder_copies_every_package_the_project_installs() -> None:
    copied = {source for copy in in_stage(0, "COPY") for source in shlex.split(copy)[:-1]}
    packages = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages | {"pyproject.toml", PYPROJECT["project"]["readme"], "requirements.lock"} <= copied


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    (user,) = in_stage(RUNTIME, "USER")
    assert re.fullmatch(r"\d+(:\d+)?", user), f"USER {user} must be numeric (runAsNonRoot checks numbers)"
    uid = int(user.split(":")[0])
    assert uid != 0
    chart_values = yaml.safe_load((ROOT / "deploy" / "helm" / "edge" / "values.yaml").read_text())
    assert chart_values["podSecurityContext"]["runAsUser"] == uid


def test_exposes_8080_and_otlp_grpc_4317_with_an_exec_form_entrypoint() -> None:
    assert in_stage(RUNTIME, "EXPOSE") == ["8080 4317"]
    (entrypoint,) = in_stage(RUNTIME, "ENTRYPOINT")
    assert json.loads(entrypoint) == ["/opt/edge/bin/edge-entrypoint"]
    assert in_stage(RUNTIME, "CMD") == []  # edge with no argument reads ./config.json in the WORKDIR
    assert in_stage(RUNTIME, "WORKDIR") == ["/app"]  # so ./config.json is /app/config.json, as in Tero's image


def test_default_config_goes_to_etc_edge_without_policies() -> None:
    copies = [c for c in in_stage(RUNTIME, "COPY") if "--from" not in c]
    assert copies == ["edge/examples/container-config.json /etc/edge/config.json"]


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


# ── the lock file ──

LOCK = ROOT / "requirements.lock"


def locked() -> dict[str, str]:
    """name (normalised) -> version of every requirement line of the lock."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            requirement = Requirement(line.rstrip(" \\"))
            (specifier,) = requirement.specifier
            assert specifier.operator == "==", line
            pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def test_lock_pins_every_dependency_of_pyproject_within_its_range() -> None:
    pins = locked()
    for text in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in pins and requirement.specifier.contains(pins[name]), (text, pins.get(name))


def test_lock_is_closed_under_the_dependencies_of_what_it_pins() -> None:
    """Every requirement of every locked package (as installed here) is locked too: pip never has to resolve."""
    pins = locked()
    missing = set()
    for name in pins:
        for text in importlib.metadata.requires(name) or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                missing |= {canonicalize_name(requirement.name)} - set(pins)
    assert missing == set()


def test_lock_holds_a_hash_for_every_pin() -> None:
    entries = re.split(r"\n(?=\S)", LOCK.read_text())
    pinned = [e for e in entries if not e.startswith("#")]
    assert pinned and all("--hash=sha256:" in e for e in pinned)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_lock_resolves_for_the_image_on_both_architectures(tmp_path: Path, machine: str) -> None:
    """What the builder's `pip install --require-hashes -r requirements.lock` asks of PyPI, for amd64 and arm64
    images (python:3.11-slim is Debian 12, glibc 2.36): a wheel for every pin, with a hash the lock lists."""
    platforms = [f"--platform={tag}_{machine}" for tag in ("manylinux_2_36", "manylinux_2_28", "manylinux2014",
                                                           "manylinux_2_17", "manylinux1", "linux")]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--target",
         str(tmp_path), *platforms, "--only-binary=:all:", "--python-version=3.11", "--implementation=cp",
         "--require-hashes", "-r", str(LOCK)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr


# ── the health check ──


def healthcheck() -> tuple[list[str], str]:
    """(options, shell command) of the runtime stage's HEALTHCHECK."""
    (instruction,) = in_stage(RUNTIME, "HEALTHCHECK")
    options, _, command = instruction.partition(" CMD ")
    return options.split(), command


def run_healthcheck(app_dir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The HEALTHCHECK command as Docker runs it (`/bin/sh -c`), in the image's WORKDIR, with the venv on PATH."""
    full_env = {"PATH": f"{EDGE_COMMAND.parent}:{os.environ['PATH']}", **env}
    return subprocess.run(["/bin/sh", "-c", healthcheck()[1]], cwd=app_dir, env=full_env, capture_output=True,
                          text=True, timeout=30)


def test_healthcheck_options() -> None:
    assert healthcheck()[0] == ["--interval=30s", "--timeout=5s", "--start-period=10s", "--retries=3"]
    assert "EDGE_IMAGE_DISTRIBUTION=$DISTRIBUTION" in in_stage(RUNTIME, "ENV")


def test_healthcheck_is_a_console_script() -> None:
    assert PYPROJECT["project"]["scripts"]["edge-healthcheck"] == "supervisor.healthcheck:main"


@pytest.mark.parametrize(("address", "host"), [("0.0.0.0", "127.0.0.1"), ("::", "::1"), ("10.1.2.3", "10.1.2.3")])
def test_healthcheck_asks_loopback_for_a_wildcard_address(address: str, host: str) -> None:
    assert health_url(address, 9000) == (host, 9000)


def test_healthcheck_against_a_real_edge(tmp_path: Path) -> None:
    """Healthy while edge serves on the port its config names, unhealthy once it stopped."""
    app = app_dir(tmp_path, load_json(CONTAINER_CONFIG))
    port = free_port()
    env = {"TERO_LISTEN_ADDRESS": "127.0.0.1", "TERO_LISTEN_PORT": str(port)}
    with running_edge(app, env, snapshot=False):
        result = run_healthcheck(app, env)
        assert (result.returncode, result.stderr) == (0, "")
    result = run_healthcheck(app, env)
    assert result.returncode == 1
    refused = "no answer: [Errno 111] Connection refused"
    assert result.stderr == f"edge-healthcheck: http://127.0.0.1:{port}/_health: {refused}\n"


def test_healthcheck_of_the_tail_image_passes_without_a_port(tmp_path: Path) -> None:
    """edge-tail serves no HTTP: the tail image is healthy while it runs."""
    app = app_dir(tmp_path, load_json(CONTAINER_CONFIG))
    env = {"TERO_LISTEN_PORT": str(free_port())}
    assert run_healthcheck(app, env).returncode == 1
    assert run_healthcheck(app, {**env, "EDGE_IMAGE_DISTRIBUTION": "tail"}).returncode == 0


def test_healthcheck_with_a_bad_config_says_why(tmp_path: Path) -> None:
    app = app_dir(tmp_path, {"listen_port": "eighty"})
    result = run_healthcheck(app, {})
    assert result.returncode == 1
    assert result.stderr.startswith("edge-healthcheck: config key listen_port") and "Traceback" not in result.stderr


# ── the image's config ──


def load_json(path: Path) -> dict:
    return json.loads(path.read_bytes())


def test_container_config_listens_on_all_interfaces_and_applies_no_policies() -> None:
    config = load_config(CONTAINER_CONFIG, env={})
    assert (config.listen_address, config.listen_port) == ("0.0.0.0", 8080)
    assert config.warnings == ()
    assert config.policy_providers == ()  # the image never drops or samples production data by itself


def test_config_search_order() -> None:
    """./config.json (in the image: /app), /app/config.json (Tero's image), /etc/edge/config.json (the image's
    default, or the Helm chart's ConfigMap), else the embedded default."""
    expected = (Path("config.json"), Path("/app/config.json"), Path("/etc/edge/config.json"))
    assert expected == CONFIG_SEARCH
    assert CONFIG_SEARCH[1].parent == Path(in_stage(RUNTIME, "WORKDIR")[0])


def test_app_config_is_taken_when_present(tmp_path: Path) -> None:
    app, etc = tmp_path / "app" / "config.json", tmp_path / "etc-edge" / "config.json"
    search = (tmp_path / "cwd" / "config.json", app, etc)
    assert _config_path(None, search) == EMBEDDED_CONFIG
    etc.parent.mkdir()
    etc.write_text("{}")
    assert _config_path(None, search) == etc
    app.parent.mkdir()
    app.write_text("{}")
    assert _config_path(None, search) == app
    assert _config_path("mine.json", search) == Path("mine.json")


def app_dir(tmp_path: Path, config: dict) -> Path:
    """/app holding a config, as `docker run -v ./config.json:/app/config.json` lays it out."""
    app = tmp_path / "app"
    app.mkdir()
    (app / "config.json").write_text(json.dumps(config))
    return app


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.loads(response.read())


@dataclass
class Served:
    """A running edge: its port and loaded policy ids; `stderr` once it has stopped."""

    port: int
    policies: list[str]
    stderr: str = ""


@contextlib.contextmanager
def running_edge(cwd: Path, env: dict[str, str], args: tuple[str, ...] = (), *,
                 snapshot: bool = True) -> Iterator[Served]:
    """`edge` started in `cwd` (with no argument, as the image starts it), once healthy and, with `snapshot`,
    once its first policy snapshot is published; stopped with SIGTERM on exit, which must end in status 0."""
    port = int(env["TERO_LISTEN_PORT"])
    full_env = {**os.environ, "TERO_WORKERS": "1", **env}
    proc = subprocess.Popen([str(EDGE_COMMAND), *args], cwd=cwd, env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    served = Served(port, [])
    ready = False

    def serving() -> bool:  # ready, or exited (reported below)
        nonlocal ready
        try:
            assert get_json(f"http://127.0.0.1:{port}/_health") == {"status": "ok"}
            answer = get_json(f"http://127.0.0.1:{port}/_edge/policies?format=json")
        except OSError:
            return proc.poll() is not None  # not listening yet
        served.policies = [p["id"] for p in answer["policies"]]
        ready = answer["generation"] > 0 or not snapshot
        return ready

    try:
        wait_for(serving, 30, 0.1)
        assert ready, proc.stderr.read().decode() if proc.poll() is not None else "timed out"
        yield served
    finally:
        proc.send_signal(signal.SIGTERM)
        served.stderr = proc.communicate(timeout=20)[1].decode()
    assert proc.returncode == 0, served.stderr


def test_edge_without_arguments_serves_the_config_mounted_at_app(tmp_path: Path) -> None:
    """`edge` started the way the image starts it: no argument, working directory /app holding a config."""
    (tmp_path / "policies.json").write_text(json.dumps({"policies": [
        {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "DEBUG"}], "keep": "none"}}]}))
    mounted = {**load_json(CONTAINER_CONFIG),
               "policy_providers": [{"id": "mine", "type": "file", "path": str(tmp_path / "policies.json")}]}
    app = app_dir(tmp_path, mounted)
    # Loopback and a free port instead of 0.0.0.0:8080 (the config's other values stay as they are).
    env = {"TERO_LISTEN_ADDRESS": "127.0.0.1", "TERO_LISTEN_PORT": str(free_port())}
    with running_edge(app, env) as served:
        assert served.policies == ["drop-debug"]
    assert "configuration from config.json" in served.stderr
