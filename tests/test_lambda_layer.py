"""The Lambda layer: built by deploy/lambda/build_layer.py, unzipped as Lambda does, started from its layout.

The layer is built for this machine's architecture from PyPI (nothing is cached in the
repository; pip's own download cache makes a second run faster), unzipped with each file's
mode as Lambda unzips layers under /opt, and its `extensions/edge-lambda` launcher is started
against the local Extensions API of tests/test_lambda.py with nothing but the layer on its
Python path (the interpreter runs with -S, so this venv's packages cannot stand in for the
layer's). It registers under its file name, filters Datadog logs with a file policy and
exits 0 on SHUTDOWN. The build takes 20 to 60 s, most of it downloading wheels.
"""

from __future__ import annotations

import json
import os
import platform
import re
import stat
import subprocess
import sys
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.proxy_fixtures import RecordingUpstream, free_port, request
from tests.test_lambda import FakeLambda, stop

ROOT = Path(__file__).resolve().parent.parent
BUILD_LAYER = ROOT / "deploy" / "lambda" / "build_layer.py"
ARCH = {"x86_64": "x86_64", "aarch64": "arm64"}.get(platform.machine())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
BUILD_TIMEOUT = 600  # seconds: downloads from PyPI, bounded

pytestmark = pytest.mark.skipif(ARCH is None or sys.version_info[:2] != (3, 11),
                                reason="the layer holds CPython 3.11 wheels for x86_64 and arm64")

DROP_DEBUG = {"id": "drop-debug", "log": {"match": [{"log_field": "severity_text", "exact": "debug"}], "keep": "none"}}


def unzip_like_lambda(archive_path: Path, opt: Path) -> None:
    """Extract keeping each file's mode (zipfile alone drops it; Lambda keeps it)."""
    with zipfile.ZipFile(archive_path) as archive:
        for info in archive.infolist():
            path = Path(archive.extract(info, opt))
            mode = stat.S_IMODE(info.external_attr >> 16)
            if mode:
                path.chmod(mode)


@pytest.fixture(scope="module")
def layer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """/opt with the layer for this machine's architecture unzipped into it."""
    tmp = tmp_path_factory.mktemp("layer")
    result = subprocess.run([sys.executable, str(BUILD_LAYER), "--arch", str(ARCH), "--out", str(tmp / "dist")],
                            capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    archive = tmp / "dist" / f"edge-lambda-layer-{ARCH}.zip"
    assert result.stdout.startswith(str(archive))
    unzip_like_lambda(archive, tmp / "opt")
    return tmp / "opt"


@pytest.fixture
def lam() -> Iterator[FakeLambda]:
    api = FakeLambda()
    yield api
    api.close()


@pytest.fixture
def upstream() -> Iterator[RecordingUpstream]:
    server = RecordingUpstream().start()
    yield server
    server.stop()


def test_layer_layout(layer: Path) -> None:
    launcher = layer / "extensions" / "edge-lambda"
    assert [p.name for p in (layer / "extensions").iterdir()] == ["edge-lambda"]
    assert os.access(launcher, os.X_OK) and launcher.read_text().startswith("#!/bin/sh\n")
    packages = layer / "edge-lambda"
    assert {"edge", "hyperscan", "re2.py", "orjson", "aiohttp", "boto3"} <= {p.name for p in packages.iterdir()}
    assert (packages / "edge" / "proto" / "tero" / "policy" / "v1" / "policy.proto").is_file()
    assert not (layer / "python").exists() and not (packages / "bin").exists()
    extensions = [p.name for p in packages.rglob("*.so") if ".cpython-" in p.name]
    assert extensions and all(".cpython-311-" in name for name in extensions)


def runs_on_lambda(tag: str, machine: str) -> bool:
    """A wheel tag CPython 3.11 on Amazon Linux 2 accepts: pure, or manylinux of glibc 2.17 at most."""
    python, abi, platform_tag = tag.split("-")
    if platform_tag == "any":
        return True
    glibc = re.fullmatch(rf"manylinux(?:_2_(\d+)|(2014|2010|1))_{machine}", platform_tag)
    return (python in ("py3", "cp311") or abi == "abi3") and bool(glibc) and int(glibc.group(1) or 17) <= 17


def test_every_binary_wheel_runs_on_lambda(layer: Path) -> None:
    """manylinux2014 (glibc 2.17) at most: the python3.11 runtime's Amazon Linux 2 has glibc 2.26."""
    machine = {"x86_64": "x86_64", "arm64": "aarch64"}[str(ARCH)]
    for wheel in (layer / "edge-lambda").glob("*.dist-info/WHEEL"):
        tags = [line.removeprefix("Tag: ") for line in wheel.read_text().splitlines() if line.startswith("Tag: ")]
        assert any(runs_on_lambda(tag, machine) for tag in tags), (wheel.parent.name, tags)


def test_each_architecture_has_a_lock_pinning_every_dependency() -> None:
    declared = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    for arch in ("x86_64", "arm64"):
        lock = (ROOT / "deploy" / "lambda" / f"layer-{arch}.lock").read_text()
        pins = {canonicalize_name(name): version
                for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", lock, re.MULTILINE)}
        for requirement in declared:
            version = pins.get(canonicalize_name(requirement.name))
            assert version and requirement.specifier.contains(version), (arch, str(requirement), version)
        assert f"--python-platform {'x86_64' if arch == 'x86_64' else 'aarch64'}-manylinux2014" in lock


def lambda_path(tmp: Path) -> str:
    """PATH as in a python3.11 function: `python3.11` is the bare interpreter, never this venv."""
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.11").symlink_to(sys._base_executable)  # type: ignore[attr-defined]
    return f"{bin_dir}:/usr/bin:/bin"


def test_the_extension_starts_from_the_layer(layer: Path, tmp_path: Path, lam: FakeLambda,
                                             upstream: RecordingUpstream) -> None:
    policy_file = tmp_path / "policies.json"
    policy_file.write_text(json.dumps({"policies": [DROP_DEBUG]}))
    port = free_port()
    env = {"PATH": lambda_path(tmp_path), "AWS_LAMBDA_RUNTIME_API": lam.address, "TERO_LISTEN_PORT": str(port),
           "TERO_UPSTREAM_URL": upstream.url,
           "TERO_POLICY_PROVIDERS": json.dumps([{"id": "file", "type": "file", "path": str(policy_file)}])}
    log_path = tmp_path / "edge-lambda.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(layer / "extensions" / "edge-lambda")], stdout=log, stderr=subprocess.STDOUT,
                                env=env, cwd=tmp_path)
    try:
        lam.wait_next_calls(1)  # registered, listening, policies loaded
        (register,) = lam.calls_to("/register")
        assert register.headers["Lambda-Extension-Name"] == "edge-lambda"
        assert request(port, "GET", "/_health").status == 200
        lam.push("INVOKE", requestId="r-1", deadlineMs=int(time.time() * 1000) + 30_000)
        lam.wait_next_calls(2)
        logs = [{"message": "cache miss", "status": "debug"}, {"message": "order placed", "status": "info"}]
        reply = request(port, "POST", "/api/v2/logs", body=json.dumps(logs).encode(),
                        headers={"Content-Type": "application/json"})
        assert reply.status == 200
        (forwarded,) = upstream.received("/api/v2/logs")
        assert [entry["message"] for entry in json.loads(forwarded.body)] == ["order placed"]
        lam.push("SHUTDOWN", shutdownReason="spindown", deadlineMs=int(time.time() * 1000) + 2000)
        assert stop(proc) == 0, log_path.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert lam.calls_to("/init/error") == [] and lam.calls_to("/exit/error") == []
    assert "Traceback" not in log_path.read_text()
