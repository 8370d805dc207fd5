"""The tail image (`docker build --build-arg DISTRIBUTION=tail`) as its user 10001 would run it.

No Docker engine runs on the machines this suite runs on (the docker client is there, no
daemon), so the image is rebuilt piece by piece from the Dockerfile, as tests/test_container.py
does: its DISTRIBUTION step makes `edge-entrypoint` point at the real `edge-tail` of this
checkout, its state-dir step runs in a directory standing for the image's WORKDIR, and the
entrypoint then runs under the image's USER (uid and gid 10001, no other groups) in that
directory, with the paths given by LOG_PATHS or as arguments, or with a closed stdin.
Switching users needs root (as CI has) and util-linux's setpriv; without them these tests skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.tail.tail_helpers import COMMAND, clean_env, wait_until, write_lines
from tests.test_container import RUNTIME, in_stage, run_distribution_step

SETPRIV = shutil.which("setpriv") or "setpriv"
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="running as the image's user 10001 needs root"),
              pytest.mark.skipif(shutil.which("setpriv") is None, reason="util-linux's setpriv is not installed")]

(USER,) = in_stage(RUNTIME, "USER")
UID, GID = (int(part) for part in USER.split(":"))
(WORKDIR,) = in_stage(RUNTIME, "WORKDIR")


def state_dir_step() -> str:
    (step,) = [run for run in in_stage(RUNTIME, "RUN") if ".tero" in run]
    return step


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Path]:
    """A world-readable root standing for the image: bin/ (the venv), app/ (the WORKDIR), logs/, out/.

    pytest's own temporary directories are private to root, so this one is made apart from them."""
    root = Path(tempfile.mkdtemp(prefix="edge-tail-image-"))
    root.chmod(0o755)
    try:
        (root / "bin").mkdir()
        (root / "bin").chmod(0o755)  # modes set explicitly: whatever the umask, as the image has them
        (root / "bin" / "edge-tail").symlink_to(Path(COMMAND[0]))
        assert run_distribution_step(root, "tail").returncode == 0
        for name, mode in (("app", 0o755), ("logs", 0o755), ("out", 0o777)):  # out: what edge-tail keeps
            (root / name).mkdir()
            (root / name).chmod(mode)
        write_lines(root / "logs" / "app.log", ["first", "second"])
        (root / "logs" / "app.log").chmod(0o644)
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def entrypoint(image: Path, args: list[str], env: dict[str, str] | None = None,
               stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """The image's ENTRYPOINT with `args` as `docker run IMAGE ARGS` passes them, as USER in WORKDIR.

    util-linux's setpriv switches to the image's user just before the exec, as a container runtime does."""
    as_user = [SETPRIV, f"--reuid={UID}", f"--regid={GID}", "--clear-groups"]
    return subprocess.Popen([*as_user, str(image / "bin" / "edge-entrypoint"), *args], cwd=image / "app",
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=clean_env(**(env or {})))


def run_state_dir_step(image: Path) -> None:
    subprocess.run(["sh", "-c", state_dir_step()], cwd=image / "app", check=True, timeout=10)


def stops_after(proc: subprocess.Popen[bytes], done: Callable[[], bool]) -> tuple[int, str]:
    try:
        assert wait_until(done), "edge-tail delivered nothing"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=20)
    return proc.returncode, stderr.decode()


def test_the_workdir_is_the_one_the_state_dir_step_runs_in() -> None:
    assert WORKDIR == "/app" and (UID, GID) == (10001, 10001)
    assert state_dir_step() == f"mkdir .tero && chown {UID}:{GID} .tero"


@pytest.mark.parametrize("paths_from", ["LOG_PATHS", "arguments"])
def test_the_image_user_tails_with_the_default_state_dir(image: Path, paths_from: str) -> None:
    run_state_dir_step(image)
    out = image / "out" / "kept.log"
    src = str(image / "logs" / "*.log")
    args, env = (["-o", str(out)], {"LOG_PATHS": src}) if paths_from == "LOG_PATHS" else (["-o", str(out), src], {})
    proc = entrypoint(image, ["--read-from", "checkpoint", "--checkpoint-interval-ms", "50", *args], env)
    status, stderr = stops_after(proc, lambda: out.exists() and out.read_bytes() == b"first\nsecond\n")
    assert status == 0, stderr
    state = image / "app" / ".tero"
    written = sorted(state.iterdir())
    assert written and all(p.stat().st_uid == UID for p in written), written  # checkpoints as user 10001


def test_without_the_state_dir_step_the_image_user_could_not_start(image: Path) -> None:
    """Why the step is there: the WORKDIR belongs to root."""
    proc = entrypoint(image, [str(image / "logs" / "app.log"), "-o", str(image / "out" / "kept.log")])
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert stderr.decode() == "edge-tail: state dir .tero: Permission denied\n"


def test_a_closed_stdin_without_paths_is_not_a_silent_exit(image: Path) -> None:
    """`docker run tero-edge-tail` without -i and without paths: stdin is empty at once."""
    run_state_dir_step(image)
    proc = entrypoint(image, [])
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0 and stdout == b""
    assert "stdin ended before any input: without a PATH argument or LOG_PATHS, edge-tail reads stdin" in (
        stderr.decode())
    piped = entrypoint(image, [], stdin=subprocess.PIPE)
    stdout, stderr = piped.communicate(b"from a pipe\n", timeout=30)
    assert (piped.returncode, stdout) == (0, b"from a pipe\n")
    assert "stdin ended" not in stderr.decode()
