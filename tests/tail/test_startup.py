"""edge-tail starts fast: without -p nothing of the policy engine is imported, and exec → first line is timed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.tail.tail_helpers import COMMAND, REPO, clean_env, lines_of, wait_until, write_lines, write_policy

HEAVY = ("hyperscan", "edge.engine", "edge.policy", "yaml", "aiohttp", "re2")


def imported_after(code: str) -> list[str]:
    probe = f"import sys; {code}; print(' '.join(sorted(m for m in sys.modules if m.startswith({HEAVY!r}))))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO,
                            stdin=subprocess.DEVNULL, timeout=60)  # stdin mode reads EOF at once
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_the_command_imports_no_engine_policy_or_http_module() -> None:
    assert imported_after("import edge.tail.cli") == []


def test_only_what_the_options_need_is_imported(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "p.json", [])
    run = ("import threading; from edge.tail.runner import run; from edge.tail.settings import from_command_line; "
           "run(from_command_line([{args}], env={{}}), threading.Event(), env={{}})")
    assert imported_after(run.format(args=f"'-o', '{tmp_path / 'out'}', '-'")) == []
    with_policy = imported_after(run.format(args=f"'-p', '{policy}', '-o', '{tmp_path / 'out'}', '-'"))
    assert "hyperscan" in with_policy and "edge.engine.engine" in with_policy


def test_exec_to_first_line_delivered(tmp_path: Path) -> None:
    """The time is reported (benchmarks/tail.py --startup measures it properly); only a hang fails the test."""
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, ["first line"])
    args = [*COMMAND, str(src), "--read-from", "head", "-o", str(out), "--flush-interval-ms", "1",
            "--state-dir", str(tmp_path / "state")]
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    try:
        assert wait_until(lambda: lines_of(out) == [b"first line"], 30), "no line delivered within 30 s of exec"
        print(f"edge-tail exec to first line delivered: {(time.monotonic() - start) * 1000:.0f} ms")
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
