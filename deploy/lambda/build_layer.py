#!/usr/bin/env python3
"""Build the AWS Lambda layer of `edge-lambda`: one zip per architecture.

    python3 deploy/lambda/build_layer.py                    # dist/edge-lambda-layer-x86_64.zip and -arm64.zip
    python3 deploy/lambda/build_layer.py --arch arm64 --out /tmp/layers

The layer is for functions on the python3.11 runtime (it brings packages, not an interpreter).
Unzipped under /opt it holds

    extensions/edge-lambda   the launcher: Lambda starts every executable in /opt/extensions at init
    edge-lambda/             edge and its dependencies, manylinux2014 wheels for CPython 3.11

The packages sit apart from /opt/python, which Lambda puts on the function's own path, so the
extension's versions never shadow the function's; the launcher runs Python with -S and only
this directory on its path, so the runtime's packages do not reach the extension either.
Dependencies come from deploy/lambda/layer-<arch>.lock (pinned, hashed, resolved for
manylinux2014: some newest releases have no manylinux2014 wheel); regenerate them with the
command in their headers when pyproject.toml's dependencies change.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PYTHON_VERSION = "3.11"
# Lambda's architecture name -> the manylinux platform tag of its wheels.
PLATFORMS = {"x86_64": "manylinux2014_x86_64", "arm64": "manylinux2014_aarch64"}
PACKAGES_DIR = "edge-lambda"
# What the source tree holds that is no part of edge's distribution.
NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis", ".tero",
              "tests", "benchmarks", "deploy", "docs")
EXTENSION = "edge-lambda"  # Lambda registers an extension under its file name
# sys.argv[0] becomes the launcher's path: edge-lambda registers with Lambda under that file's name.
LAUNCHER = f"""#!/bin/sh
# edge-lambda, the Lambda extension: its packages are in ../{PACKAGES_DIR}, nothing else is on its path.
layer=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
export PYTHONPATH="$layer/{PACKAGES_DIR}"
exec python{PYTHON_VERSION} -S -c 'import sys; sys.argv = sys.argv[1:]; \\
from edge.lambda_extension.main import main; sys.exit(main())' "$0" "$@"
"""


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *args],
                   check=True)


def stage(arch: str, staging: Path) -> None:
    """Lay out the layer: dependencies from the lock for `arch`, then edge itself, then the launcher."""
    packages = staging / PACKAGES_DIR
    pip("--target", str(packages), "--platform", PLATFORMS[arch], "--only-binary=:all:",
        "--python-version", PYTHON_VERSION, "--implementation", "cp", "--require-hashes",
        "-r", str(HERE / f"layer-{arch}.lock"))
    shutil.rmtree(packages / "bin")  # console scripts naming this machine's interpreter
    source = staging.parent / "source"  # a clean copy: an in-tree build could package a stale build/ directory
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    pip("--target", str(packages), "--no-deps", str(source))  # pure Python: the same for every architecture
    shutil.rmtree(packages / "bin")
    launcher = staging / "extensions" / EXTENSION
    launcher.parent.mkdir()
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)


def write_zip(staging: Path, target: Path) -> None:
    """Zip with each file's mode, which Lambda restores: the launcher must stay executable."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(staging.rglob("*")):
            if path.is_file():
                info = zipfile.ZipInfo.from_file(path, path.relative_to(staging).as_posix())
                info.external_attr = (stat.S_IFREG | stat.S_IMODE(path.stat().st_mode)) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, path.read_bytes())


def build(arch: str, out: Path) -> Path:
    target = out / f"edge-lambda-layer-{arch}.zip"
    with tempfile.TemporaryDirectory(prefix="edge-lambda-") as tmp:
        staging = Path(tmp) / "layer"
        staging.mkdir()
        stage(arch, staging)
        write_zip(staging, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(PLATFORMS),
                        help="architecture to build (repeatable; default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / "dist", help="directory for the zips (default: dist/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for arch in args.arch or sorted(PLATFORMS):
        try:
            target = build(arch, args.out)
        except subprocess.CalledProcessError as exc:
            print(f"build_layer: pip failed for {arch} (exit status {exc.returncode})", file=sys.stderr)
            return 1
        print(f"{target} ({target.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
