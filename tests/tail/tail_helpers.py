"""Running the real `edge-tail` executable as a user would, for the black-box tests of tests/tail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.waiting import wait_for as wait_until  # the suite's one condition wait, under the tail tests' name

_SCRIPT = Path(sys.executable).with_name("edge-tail")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.tail.cli"]
REPO = Path(__file__).parents[2]
# Short cadences so that tests wait milliseconds, not seconds.
FAST = ["--poll-ms", "20", "--flush-interval-ms", "20", "--glob-interval-ms", "100", "--rotate-wait-ms", "200",
        "--checkpoint-interval-ms", "50"]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without TERO_* or Kubernetes variables that would change the tailer's settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TERO_") and k not in ("POD_NAME", "NAMESPACE", "SERVICE_NAME")}
    env.update(extra)
    return env


def run_cli(args: list[str], *, stdin: bytes = b"", env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 30) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*COMMAND, *args], input=stdin, capture_output=True, env=env or clean_env(),
                          cwd=cwd or REPO, timeout=timeout)


def write_policy(path: Path, policies: list[dict[str, Any]]) -> Path:
    path.write_text(json.dumps({"policies": policies}))
    return path


def drop_policy(pid: str, match: dict[str, Any]) -> dict[str, Any]:
    return {"id": pid, "name": pid, "log": {"match": [match], "keep": "none"}}


def lines_of(path: Path) -> list[bytes]:
    data = path.read_bytes() if path.exists() else b""
    return data.split(b"\n")[:-1]


class Tailer:
    """An `edge-tail` process in file mode; `stop()` sends SIGTERM and expects exit 0."""

    def __init__(self, tmp: Path, args: list[str], *, fast: bool = True, env: dict[str, str] | None = None) -> None:
        self.stderr_path = tmp / f"stderr-{time.monotonic_ns()}.log"
        self.args = [*COMMAND, "-v", "--state-dir", str(tmp / "state"), *(FAST if fast else []), *args]
        self.env = env or clean_env()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Tailer:
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=stderr, env=self.env)
        return self

    def stop(self) -> None:
        assert self.proc is not None
        assert terminate(self.proc, self.stderr) == 0, self.stderr()
        assert "Traceback" not in self.stderr(), self.stderr()

    def wait_tailing(self, path: Path, count: int = 1) -> None:
        """Wait until the tailer has opened `path` (`count` times: after rotations); it logs that with -v."""
        needle = f"tailing {path} from offset"
        assert wait_until(lambda: self.stderr().count(needle) >= count), self.stderr()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def __enter__(self) -> Tailer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()


def terminate(proc: subprocess.Popen[bytes], stderr: Callable[[], str], timeout: float = 30) -> int:
    """SIGTERM and the exit status; a tailer that does not stop in time is made to dump every
    thread's stack (faulthandler, SIGABRT) into its stderr, and the test fails showing it."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        proc.wait(10)
        raise AssertionError(f"edge-tail did not stop within {timeout:.0f} s of SIGTERM:\n{stderr()}") from None


def write_lines(path: Path, lines: list[str], mode: str = "ab") -> None:
    with open(path, mode) as f:
        f.write("".join(f"{line}\n" for line in lines).encode())


def send_signal(proc: subprocess.Popen[bytes], signum: int = signal.SIGTERM) -> int:
    proc.send_signal(signum)
    return proc.wait(20)
