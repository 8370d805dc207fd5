"""edge-tail throughput, file to file, raw format: MB/s and lines/s next to `cat`.

    python benchmarks/tail.py [--mb 200] [--runs 3]

Writes a log file of realistic lines (~100 bytes: timestamp, severity, service, request,
status, latency), then for each case starts the real `edge-tail` command
(`--read-from head FILE -o OUT`) and waits until the output holds everything that
should survive; `cat FILE > OUT` on the same file is the floor, measured the same way in
the same run. Cases: no policy, and a regex drop policy (`\\bDEBUG\\b` on the body, about
a quarter of the lines).

While a case runs, the benchmark samples, at the same instants, the bytes the process
has read (`rchar` of /proc/PID/io: the input, as nothing else is read once it runs; for
`cat`, which may copy inside the kernel unseen by that counter, its output, which is its
input) and the size of the output. Reported per case, as the median of --runs (headline) and the best:

- steady MB/s: input bytes read between two samples divided by the time between those
  same two samples, the window running from when the output holds 10% of what it will
  hold to the last sample before 90% (startup and the drain at the end are outside it):
  the rate a long-running tailer keeps;
- wall MB/s: the whole input over the time from process start to the last output byte
  (startup included);
- MB per CPU-second of the process (user + system, startup included), i.e. per core;
- lines/s: the steady rate in lines, at the input's mean line length.

Then two more tables. Parse to OTLP (one core, in process): the cost of turning lines into
OTLP records as `--forward-url` does, per format, in MB of input per CPU-second: `-f json`
(JSON lines with time, level, message, trace context and attributes) and `-f regex` (the
default text patterns), each batch of 1,000 lines parsed and encoded to protobuf; targets
json >= 60 MB/s, regex >= 40 MB/s. Start-up: from exec of `edge-tail --read-from head FILE -o
OUT` to the first line in OUT (median and best of --runs x 5).

Everything stays in a temporary directory on the local disk; nothing is left behind.
An input too small for samples inside the window shows "-" as its steady rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import median_best  # noqa: E402

SCRIPT = Path(sys.executable).with_name("edge-tail")
COMMAND = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edge.tail.cli"]
LEVELS = ["INFO"] * 5 + ["DEBUG"] * 2 + ["WARN", "ERROR"]
SERVICES = ["checkout", "payments", "catalog", "search", "auth"]
PATHS = ["/api/users", "/api/orders", "/api/cart", "/static/app.js", "/healthz", "/api/search"]
DROP_DEBUG = {"policies": [{"id": "drop-debug", "name": "drop debug",
                            "log": {"match": [{"log_field": "body", "regex": r"\bDEBUG\b"}], "keep": "none"}}]}
TICKS = os.sysconf("SC_CLK_TCK")


WINDOW = (0.10, 0.90)  # the steady window, as shares of the expected output
POLL_S = 0.002


@dataclass
class Result:
    wall_s: float  # process start to the last output byte
    steady_mb_s: float | None  # input read per second inside the window; None when too few samples
    cpu_s: float


@dataclass
class Sample:
    at: float  # monotonic seconds
    read: int  # bytes the process has read so far
    written: int  # bytes in the output so far


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


def bytes_read(pid: int) -> int | None:
    """`rchar` of the process: every byte its read calls returned; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/io").read_text()
    except OSError:
        return None
    return int(re.search(r"^rchar:\s+(\d+)", text, re.M).group(1))


def follow(proc: subprocess.Popen, out: Path, expected: int, what: str) -> tuple[list[Sample], float]:
    """Sample reads and output size until the output holds `expected` bytes; (samples, that instant)."""
    samples: list[Sample] = []
    while True:
        now = time.monotonic()
        read = bytes_read(proc.pid)
        written = out.stat().st_size if out.exists() else 0
        if read is not None:
            samples.append(Sample(now, read, written))
        if written >= expected:
            return samples, now
        if proc.poll() is not None and (out.stat().st_size if out.exists() else 0) < expected:
            detail = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} after {written} of {expected} bytes: {detail}")
        time.sleep(POLL_S)


def steady_rate(samples: list[Sample], expected: int, input_is_output: bool = False) -> float | None:
    """Input MB/s between the first and the last sample inside the window, both at the same two instants.

    `input_is_output`: count the input by the output, for a copy that writes every byte it
    reads (cat, which may copy inside the kernel where read counters do not see it).
    """
    low, high = (expected * share for share in WINDOW)
    inside = [s for s in samples if low <= s.written < high]
    if len(inside) < 2 or inside[-1].at <= inside[0].at:
        return None
    first, last = inside[0], inside[-1]
    moved = last.written - first.written if input_is_output else last.read - first.read
    return moved / 1e6 / (last.at - first.at)


def run_cat(src: Path, out: Path, expected: int) -> Result:
    out.unlink(missing_ok=True)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with open(out, "wb") as f:
        start = time.monotonic()
        proc = subprocess.Popen(["cat", str(src)], stdout=f)
        samples, done = follow(proc, out, expected, "cat")
        proc.wait(30)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # cat is the only child reaped in between
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return Result(done - start, steady_rate(samples, expected, input_is_output=True), cpu)


def run_tail(src: Path, out: Path, expected: int, work: Path, extra: list[str]) -> Result:
    out.unlink(missing_ok=True)
    shutil.rmtree(work / "state", ignore_errors=True)
    args = [*COMMAND, "--read-from", "head", str(src), "-o", str(out), "--state-dir", str(work / "state"), *extra]
    start = time.monotonic()
    proc = subprocess.Popen(args, stderr=subprocess.PIPE)
    try:
        samples, done = follow(proc, out, expected, "edge-tail")
        cpu = cpu_seconds(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    if out.stat().st_size != expected:
        raise RuntimeError(f"output is {out.stat().st_size} bytes, expected {expected}")
    return Result(done - start, steady_rate(samples, expected), cpu)


def _cell(values: list[float | None], width: int) -> tuple[str, str]:
    """Median and best of the values that exist, formatted; "-" where none do."""
    present = [v for v in values if v is not None]
    if not present:
        return f"{'-':>{width}}", f"{'-':>{width}}"
    median, best = median_best(present)
    return f"{median:{width},.0f}", f"{best:{width},.0f}"


def report(name: str, results: list[Result], size: int, lines: int) -> None:
    steady, steady_best = _cell([r.steady_mb_s for r in results], 12)
    wall, _ = _cell([size / 1e6 / r.wall_s for r in results], 10)
    per_cpu, _ = _cell([size / 1e6 / r.cpu_s if r.cpu_s > 0 else None for r in results], 9)
    line_rates = [r.steady_mb_s * 1e6 * lines / size if r.steady_mb_s is not None else None for r in results]
    lines_s, _ = _cell(line_rates, 17)
    print(f"{name:24} {steady} {steady_best} {wall} {per_cpu} {lines_s}")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=200, help="input size in MB")
    parser.add_argument("--runs", type=int, default=3, help="runs per case (median and best are shown)")
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
        cases = [("cat (floor)", lambda: run_cat(src, out, size)),
                 ("edge-tail, no policy", lambda: run_tail(src, out, size, work, [])),
                 ("edge-tail, regex drop", lambda: run_tail(src, out, kept_bytes, work, ["-p", str(policy)]))]
        print(f"input: {size / 1e6:.0f} MB, {lines:,} lines ({size / lines:.0f} bytes/line); "
              f"drop policy keeps {kept_bytes / size:.0%} of the bytes; {args.runs} run(s) per case")
        print(f"{'case':24} {'steady MB/s':>12} {'(best)':>12} {'wall MB/s':>10} {'MB/CPU-s':>9} "
              f"{'lines/s (steady)':>17}")
        for name, case in cases:
            report(name, [case() for _ in range(args.runs)], size, lines)
        parse_to_otlp(args.mb, args.runs)
        startup(work, args.runs * 5)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def structured_lines(fmt: str, count: int, seed: int = 11) -> list[bytes]:
    """Lines as a service would log them in `fmt`: json objects, or text in the default patterns' layouts."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        level, service, path = rng.choice(LEVELS), rng.choice(SERVICES), rng.choice(PATHS)
        trace, span = f"{rng.getrandbits(128):032x}", f"{rng.getrandbits(64):016x}"
        if fmt == "json":
            out.append(json.dumps({"timestamp": f"2024-05-01T12:00:{i % 60:02d}.123Z", "level": level,
                                   "message": f"GET {path} done", "service": service, "status": 200,
                                   "took_ms": rng.randrange(999), "trace_id": trace, "span_id": span}).encode())
        elif i % 2:
            out.append(f"2024-05-01 12:00:{i % 60:02d}.123 {level} [{trace},{span}] --- GET {path} done "
                       f"service={service}".encode())
        else:
            out.append(f"[2024-05-01T12:00:{i % 60:02d}Z] {level}: GET {path} done service={service}".encode())
    return out


def parse_to_otlp(megabytes: int, runs: int) -> None:
    """MB of input per CPU-second turned into OTLP protobuf records, per format (one core, in process)."""
    from edge.formats.lines.patterns import fields_parser
    from edge.tail.otlp import encoder, record_parser

    print(f"\n{'parse to OTLP (1 core)':24} {'MB/CPU-s':>12} {'(best)':>12} {'records/s':>12}")
    for fmt in ("raw", "json", "regex"):
        lines = structured_lines(fmt if fmt != "raw" else "regex", 100_000)
        size = sum(len(line) + 1 for line in lines)
        repeat = max(1, megabytes * 1_000_000 // 4 // size)
        parse = record_parser(fmt, fields=fields_parser(fmt) if fmt == "regex" else None)
        encode_protobuf, _ = encoder("protobuf")
        rates = []
        for _ in range(runs):
            start = time.process_time()
            for _ in range(repeat):
                for at in range(0, len(lines), 1000):
                    encode_protobuf([("/var/log/app.log", parse(lines[at:at + 1000]))], {"service.name": "x"}, 1)
            rates.append(size * repeat / 1e6 / (time.process_time() - start))
        median, best = median_best(rates)
        print(f"{'-f ' + fmt:24} {median:12,.1f} {best:12,.1f} {median * 1e6 / (size / len(lines)):12,.0f}")
        sys.stdout.flush()


def startup(work: Path, runs: int) -> None:
    """Milliseconds from exec to the first line in the output."""
    src, out = work / "one.log", work / "one.out"
    src.write_bytes(b"first line\n")
    times = []
    for _ in range(runs):
        out.unlink(missing_ok=True)
        shutil.rmtree(work / "state", ignore_errors=True)
        args = [*COMMAND, "--read-from", "head", str(src), "-o", str(out), "--flush-interval-ms", "1",
                "--state-dir", str(work / "state")]
        start = time.monotonic()
        proc = subprocess.Popen(args, stderr=subprocess.DEVNULL)
        try:
            while not (out.exists() and out.stat().st_size):
                if proc.poll() is not None or time.monotonic() - start > 30:
                    raise RuntimeError("edge-tail delivered nothing within 30 s")
                time.sleep(POLL_S)
            times.append((time.monotonic() - start) * 1000)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    median, best = statistics.median(times), min(times)
    print(f"\nstart-up, exec to first line delivered: {median:.0f} ms median, {best:.0f} ms best ({runs} runs)")


if __name__ == "__main__":
    sys.exit(main())
