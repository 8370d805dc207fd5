"""edge-tail throughput, file to file, raw format: MB/s and lines/s next to `cat`.

    python benchmarks/tail.py [--mb 200] [--runs 3]

Writes a log file of realistic lines (~110 bytes: timestamp, severity, service, request,
status, latency), then for each case starts the real `edge-tail` command
(`--read-from head FILE -o OUT`) and waits until the output holds everything that
should survive; `cat FILE > OUT` on the same file is the baseline. Cases: no policy, and
a regex drop policy (`\\bDEBUG\\b` on the body, about a quarter of the lines).

Reported per case (best of --runs): wall MB/s from process start (startup included),
steady MB/s from the first output byte to the last (the rate a long-running tailer
keeps), and MB per CPU-second of the process (user + system, from /proc), i.e. per
core. Everything stays on the local disk; nothing is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("edge-tail")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edge.tail.cli"]
LEVELS = ["INFO"] * 5 + ["DEBUG"] * 2 + ["WARN", "ERROR"]
SERVICES = ["checkout", "payments", "catalog", "search", "auth"]
PATHS = ["/api/users", "/api/orders", "/api/cart", "/static/app.js", "/healthz", "/api/search"]
DROP_DEBUG = {"policies": [{"id": "drop-debug", "name": "drop debug",
                            "log": {"match": [{"log_field": "body", "regex": r"\bDEBUG\b"}], "keep": "none"}}]}
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    wall_s: float
    steady_s: float
    cpu_s: float


def make_input(path: Path, megabytes: int, seed: int = 7) -> int:
    """A log file of about `megabytes` MB; returns its line count."""
    rng = random.Random(seed)
    target = megabytes * 1_000_000
    lines = 0
    with open(path, "wb") as f:
        size = 0
        while size < target:
            chunk = "".join(
                f"2024-05-01T12:{rng.randrange(60):02d}:{rng.randrange(60):02d}.{rng.randrange(1000):03d}Z "
                f"{rng.choice(LEVELS)} service={rng.choice(SERVICES)} req={rng.getrandbits(32):08x} "
                f"GET {rng.choice(PATHS)} status={rng.choice((200, 200, 200, 404, 500))} "
                f"took={rng.randrange(1, 999)}ms\n" for _ in range(10_000)).encode()
            f.write(chunk)
            size += len(chunk)
            lines += 10_000
    return lines


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_cat(src: Path, out: Path) -> Result:
    out.unlink(missing_ok=True)
    start = time.monotonic()
    with open(out, "wb") as f:
        subprocess.run(["cat", str(src)], stdout=f, check=True)
    wall = time.monotonic() - start
    return Result(wall, wall, float("nan"))


def run_tail(src: Path, out: Path, expected: int, work: Path, extra: list[str]) -> Result:
    out.unlink(missing_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    args = [*COMMAND, "--read-from", "head", str(src), "-o", str(out), "--state-dir", str(work / "state"), *extra]
    start = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    first = None
    try:
        while True:
            size = out.stat().st_size if out.exists() else 0
            if size and first is None:
                first = time.monotonic()
            if size >= expected:
                break
            if proc.poll() is not None:
                raise RuntimeError(f"edge-tail exited early: {proc.stderr.read().decode()}")
            time.sleep(0.005)
        done = time.monotonic()
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    if out.stat().st_size != expected:
        raise RuntimeError(f"output is {out.stat().st_size} bytes, expected {expected}")
    return Result(done - start, done - (first or start), cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="input size in MB")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (best is reported)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="edge-tail-bench-"))
    try:
        src, out = work / "input.log", work / "output.log"
        lines = make_input(src, args.mb)
        size = src.stat().st_size
        policy = work / "drop-debug.json"
        policy.write_text(json.dumps(DROP_DEBUG))
        debug = re.compile(rb"\bDEBUG\b")
        kept_bytes = sum(len(line) + 1 for line in src.read_bytes().split(b"\n")[:-1] if not debug.search(line))
        cases = [("cat (baseline)", lambda: run_cat(src, out)),
                 ("edge-tail, no policy", lambda: run_tail(src, out, size, work, [])),
                 ("edge-tail, regex drop", lambda: run_tail(src, out, kept_bytes, work, ["-p", str(policy)]))]
        print(f"input: {size / 1e6:.0f} MB, {lines:,} lines ({size / lines:.0f} bytes/line); "
              f"drop policy keeps {kept_bytes / size:.0%} of the bytes")
        print(f"{'case':24} {'wall MB/s':>10} {'steady MB/s':>12} {'MB/CPU-s':>9} {'lines/s (steady)':>17}")
        for name, case in cases:
            best = min((case() for _ in range(args.runs)), key=lambda r: r.steady_s)
            per_cpu = f"{size / 1e6 / best.cpu_s:9.0f}" if best.cpu_s == best.cpu_s else f"{'-':>9}"
            print(f"{name:24} {size / 1e6 / best.wall_s:10.0f} {size / 1e6 / best.steady_s:12.0f} {per_cpu} "
                  f"{lines / best.steady_s:17,.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
