"""The wheel and the sdist hold every module and data file of the project.

Both are built from a copy of the source tree (so the build's own `build/` and egg-info
never land in the working tree, and nothing stale there can slip into the wheel) with the
test venv's setuptools: no build isolation, no dependency download. Each takes about a second.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "supervisor", "workers")
# What a source tree holds that is no part of a distribution.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".ruff_cache",
              ".hypothesis", ".tero", ".ci", "tests", "benchmarks")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("packaging") / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    return src


def package_files(src: Path) -> set[str]:
    """Every file under the project's packages: modules, stubs, examples, .proto schemas."""
    return {path.relative_to(src).as_posix() for package in PACKAGES for path in (src / package).rglob("*")
            if path.is_file()}


def build(argv: list[str], out: Path) -> Path:
    """Run a build; it must succeed without a warning (setuptools warns of deprecated metadata before it fails)."""
    result = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "warning" not in output.lower(), output
    (artifact,) = out.iterdir()
    return artifact


def test_the_wheel_holds_every_package_and_data_file(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "wheel"
    wheel = build(["-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(source)], out)
    assert wheel.name == f"tero_edge-{PYPROJECT['project']['version']}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"tero_edge-{PYPROJECT['project']['version']}.dist-info"
        entry_points = configparser.ConfigParser()
        entry_points.read_string(archive.read(f"{dist_info}/entry_points.txt").decode())
    assert {n for n in names if not n.startswith(dist_info)} == package_files(source)
    assert {"edge/examples/quickstart.json", "edge/proto/tero/policy/v1/policy.proto"} <= names
    assert dict(entry_points["console_scripts"]) == PYPROJECT["project"]["scripts"]


def test_the_sdist_holds_every_package_data_file_and_the_project_files(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "sdist"
    sdist = build(["-m", "build", "--sdist", "--no-isolation", "--outdir", str(out), str(source)], out)
    top = f"tero_edge-{PYPROJECT['project']['version']}"
    assert sdist.name == f"{top}.tar.gz"
    with tarfile.open(sdist) as archive:
        names = {member.name.removeprefix(f"{top}/") for member in archive.getmembers() if member.isfile()}
    assert package_files(source) <= names
    assert {"pyproject.toml", "README.md", "PKG-INFO"} <= names
