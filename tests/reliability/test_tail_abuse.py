"""Adversarial input for the real `edge-tail`: binary files, a 100 MB line, a tailed path replaced
by a FIFO or a directory, and a state dir on a full disk.

Each test runs the `edge-tail` command on real files and reads what a user would: the output
file, the process's stderr and its resident memory. Whatever comes, the tailer does not crash,
hang or log a traceback, delivers every line it should byte for byte (at-least-once across
restarts), keeps memory bounded and says what went wrong in one clear line, once.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import random
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from edge.tail.reader import TailedFile
from tests.proxy_fixtures import RecordingUpstream
from tests.tail.tail_helpers import Tailer, drop_policy, lines_of, wait_until, write_lines, write_policy

DROP = drop_policy("drop-marked", {"log_field": "body", "regex": "DROPME"})


def peak_rss(proc: subprocess.Popen[bytes], stop: threading.Event, peak: list[int]) -> None:
    """Sample `proc`'s resident memory into `peak[0]` until `stop` is set."""
    while not stop.is_set():
        with contextlib.suppress(psutil.Error):
            peak[0] = max(peak[0], psutil.Process(proc.pid).memory_info().rss)
        time.sleep(0.02)  # the sampling rate of the measurement, not synchronisation


@contextlib.contextmanager
def rss_sampler(tailer: Tailer) -> Iterator[list[int]]:
    assert tailer.proc is not None
    peak = [0]
    stop = threading.Event()
    thread = threading.Thread(target=peak_rss, args=(tailer.proc, stop, peak), daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()


# ── binary files ──


def binary_line(rng: random.Random, tag: bytes) -> bytes:
    """A line of random bytes (NULs, CRs, invalid UTF-8 and all) that holds no newline, tagged for checking."""
    body = rng.randbytes(rng.randrange(0, 300)).replace(b"\n", b"")
    return tag + body + rng.choice([b"", b"\x00", b"\r", b"\xff\xfe", b"\xe2\x82", b"\xc3"])


def test_binary_files_are_delivered_byte_exact(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out.log"
    inputs.mkdir()
    policy = write_policy(tmp_path / "policy.json", [DROP])
    rng = random.Random(7)
    expected: dict[str, list[bytes]] = {}
    for name in ("random", "nuls", "mixed"):
        lines = [binary_line(rng, b"%s-%05d:" % (name.encode(), i)) for i in range(2000)]
        if name == "nuls":
            lines = [line[:11] + b"\x00" * rng.randrange(0, 500) for line in lines]
        if name == "mixed":  # lines a policy drops, among binary lines a policy must leave alone
            lines = [line + (b" DROPME" if i % 5 == 0 else b"") for i, line in enumerate(lines)]
        (inputs / f"{name}.log").write_bytes(b"".join(line + b"\n" for line in lines))
        expected[name] = [line for line in lines if b"DROPME" not in line]
    # Ends without a newline: held until it gets one, like any partial line.
    (inputs / "tail.log").write_bytes(b"tail-00000:" + bytes(range(256)).replace(b"\n", b"") + b"\nno newline \xff")
    expected["tail"] = [b"tail-00000:" + bytes(range(256)).replace(b"\n", b"")]
    total = sum(map(len, expected.values()))
    with Tailer(tmp_path, [str(inputs / "*.log"), "-o", str(out), "--read-from", "head", "-p", str(policy)]) as tailer:
        assert wait_until(lambda: len(lines_of(out)) >= total), tailer.stderr()
        assert not wait_until(lambda: len(lines_of(out)) > total, 0.2)  # and nothing more comes
        tailer.stop()
    got: dict[str, list[bytes]] = {}
    for line in lines_of(out):
        got.setdefault(line.split(b"-", 1)[0].decode(), []).append(line)
    assert got == expected  # per file, every kept line in order, byte for byte


@pytest.mark.parametrize("fmt", ["protobuf", "json"])
def test_binary_lines_and_a_file_name_that_is_not_utf8_are_forwarded(tmp_path: Path, fmt: str) -> None:
    """A file whose name is not UTF-8 matches the glob like any other: its path goes out as valid
    text, and binary lines are forwarded byte for byte (protobuf bytes bodies; JSON has only text)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    bad = os.path.join(os.fsencode(inputs), b"bad\xff\xfe.log")
    rng = random.Random(3)
    lines = [binary_line(rng, b"bad-%05d:" % i) for i in range(300)] + [b"plain text", "caf\u00e9".encode()]
    with open(bad, "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))
    write_lines(inputs / "good.log", ["good 1"])
    policy = write_policy(tmp_path / "policy.json", [
        drop_policy("drop-by-path", {"log_attribute": "log.file.path", "ends_with": "nothing-here.log"})])
    server = RecordingUpstream().start()
    try:
        args = [str(inputs / "*.log"), "--read-from", "head", "-p", str(policy), "--forward-url",
                f"{server.url}/v1/logs", "--forward-format", fmt, "--batch-interval-ms", "50"]
        with Tailer(tmp_path, args) as tailer:
            assert wait_until(lambda: len(forwarded(server)) == len(lines) + 1, 10), tailer.stderr()
            tailer.stop()
        records = forwarded(server)
    finally:
        server.stop()
    by_path: dict[str, list[bytes | str]] = {}
    for path, body in records:
        by_path.setdefault(path, []).append(body)
    bad_text = str(inputs / "bad\ufffd\ufffd.log")
    assert set(by_path) == {bad_text, str(inputs / "good.log")}
    if fmt == "protobuf":
        assert [b if isinstance(b, bytes) else b.encode() for b in by_path[bad_text]] == lines
    else:
        assert by_path[bad_text] == [line.decode("utf-8", "replace") for line in lines]


def forwarded(server: RecordingUpstream) -> list[tuple[str, bytes | str]]:
    """(log.file.path, body) of every record received: bytes bodies as bytes, string bodies as text."""
    out: list[tuple[str, bytes | str]] = []
    for request in server.received("/v1/logs"):
        raw = gzip.decompress(request.body)
        if request.header("Content-Type") == "application/json":
            for rl in json.loads(raw)["resourceLogs"]:
                for sl in rl["scopeLogs"]:
                    out += [(rec["attributes"][0]["value"]["stringValue"], rec["body"]["stringValue"])
                            for rec in sl["logRecords"]]
            continue
        for rl in ExportLogsServiceRequest.FromString(raw).resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    body = rec.body.bytes_value if rec.body.WhichOneof("value") == "bytes_value" else \
                        rec.body.string_value
                    out.append((rec.attributes[0].value.string_value, body))
    return out


# ── a 100 MB line ──


def test_a_100_mb_line_is_cut_in_bounded_memory_and_the_lines_after_it_flow(tmp_path: Path) -> None:
    """--max-line (default 256 KiB) keeps the first bytes of the line, as Tero's edge-tail does; the rest is skipped."""
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    src.write_bytes(b"")
    policy = write_policy(tmp_path / "policy.json", [DROP])
    size, max_line = 100 << 20, 262144
    piece = (b"0123456789abcdef" * 4096)  # 64 KiB, no newline
    expected = b"before 1\n" + (piece * 4)[:max_line] + b"\nafter 1\n"
    with Tailer(tmp_path, [str(src), "-o", str(out), "-p", str(policy)]) as tailer:
        tailer.wait_tailing(src)
        assert tailer.proc is not None
        baseline = psutil.Process(tailer.proc.pid).memory_info().rss
        with rss_sampler(tailer) as peak:
            with open(src, "ab") as f:
                f.write(b"before 1\nbefore DROPME\n")
                for _ in range(size // len(piece)):
                    f.write(piece)
                f.write(b"\nafter DROPME\nafter 1\n")
            assert wait_until(lambda: out.exists() and out.stat().st_size >= len(expected), 60), tailer.stderr()
        tailer.stop()
    growth = peak[0] - baseline
    assert growth < 40 << 20, f"RSS grew by {growth >> 20} MiB for a {size >> 20} MiB line"
    assert out.read_bytes() == expected


# ── a tailed path replaced by a FIFO or a directory ──


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_tailed_file_replaced_by_a_fifo_or_directory_is_skipped_with_one_warning(tmp_path: Path, kind: str) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out.log"
    inputs.mkdir()
    a, b = inputs / "a.log", inputs / "b.log"
    write_lines(a, ["a 0"])
    write_lines(b, ["b 0"])
    stand_in = inputs / "stand-in"  # not matched by the glob until renamed into place
    if kind == "fifo":
        os.mkfifo(stand_in)
    else:
        stand_in.mkdir()
    with Tailer(tmp_path, [str(inputs / "*.log"), "-o", str(out), "--read-from", "head"]) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 2), tailer.stderr()
        write_lines(a, ["a 1"])  # written to the old file just before it is replaced: still delivered
        if kind == "fifo":
            os.rename(stand_in, a)  # atomically replaces the tailed file
        else:
            os.rename(a, inputs / "a.log.1")
            os.rename(stand_in, a)
        for i in range(1, 11):  # the other file keeps flowing meanwhile, for several glob rounds
            write_lines(b, [f"b {i}"])
            time.sleep(0.05)
        assert wait_until(lambda: len(lines_of(out)) == 13), tailer.stderr()
        # more discovery rounds: the warning must not repeat
        assert not wait_until(lambda: tailer.stderr().count("not a regular file") > 1, 0.5), tailer.stderr()
        assert tailer.proc is not None and tailer.proc.poll() is None
        warnings = [line for line in tailer.stderr().splitlines() if "not a regular file" in line]
        assert len(warnings) == 1, tailer.stderr()
        assert str(a) in warnings[0] and ("FIFO" in warnings[0] if kind == "fifo" else "directory" in warnings[0])
        # A regular file put back is tailed again, from its first line.
        if kind == "fifo":
            a.unlink()
        else:
            a.rmdir()
        write_lines(inputs / "new.tmp", ["a again 0", "a again 1"])
        os.rename(inputs / "new.tmp", a)
        assert wait_until(lambda: len(lines_of(out)) == 15), tailer.stderr()
        write_lines(b, ["b 11"])
        assert wait_until(lambda: len(lines_of(out)) == 16), tailer.stderr()
        tailer.stop()
    got = lines_of(out)
    assert [line for line in got if line.startswith(b"a")] == [b"a 0", b"a 1", b"a again 0", b"a again 1"]
    assert [line for line in got if line.startswith(b"b")] == [f"b {i}".encode() for i in range(12)]


def test_opening_a_path_that_became_a_fifo_does_not_block(tmp_path: Path) -> None:
    """Discovery checks that a path is a regular file, then opens it: a FIFO renamed into place in
    between must be refused at once, not wait for a writer that never comes."""
    fifo = tmp_path / "a.log"
    os.mkfifo(fifo)
    outcome: list[BaseException | None] = []

    def open_it() -> None:
        try:
            TailedFile.open(str(fifo), 1024).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=open_it, daemon=True)
    thread.start()
    thread.join(2)
    if thread.is_alive():
        with open(fifo, "wb"):  # a writer releases the blocked open; the test then fails
            pass
        thread.join(2)
        pytest.fail("opening a FIFO blocked until a writer came")
    assert isinstance(outcome[0], OSError) and "not a regular file" in str(outcome[0])


# ── the state dir on a full disk ──


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs: filling it makes every new page of the state dir fail with ENOSPC."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    """Take every free byte of `disk`; the filler file is returned so that space can come back."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    with pytest.raises(OSError) as info:
        (disk / "probe").write_bytes(b"x" * 8192)
    assert info.value.errno == errno.ENOSPC
    return filler


def numbered(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix} {i:06d}" for i in range(start, start + count)]


FULL_DISK_ARGS = ["--read-from", "checkpoint", "--checkpoint-interval-ms", "20", "--checkpoint-sync-batch", "1",
                  "--checkpoint-snapshot-interval-ms", "100"]


@pytest.mark.parametrize("full_at_start", [False, True], ids=["fills-while-running", "full-at-start"])
def test_a_full_state_disk_does_not_stop_delivery_and_checkpoints_recover(tmp_path: Path, small_disk: Path,
                                                                          full_at_start: bool) -> None:
    src, out, state = tmp_path / "app.log", tmp_path / "out.log", small_disk / "state"
    write_lines(src, numbered("a", 0, 10))
    args = [str(src), "-o", str(out), "--state-dir", str(state), *FULL_DISK_ARGS]
    filler = None
    if full_at_start:
        state.mkdir()
        filler = fill(small_disk)
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 10), tailer.stderr()
        if filler is None:
            filler = fill(small_disk)
        for i in range(10, 60, 5):  # many checkpoint writes fail meanwhile
            write_lines(src, numbered("a", i, 5))
            time.sleep(0.1)  # pacing the writer: several separate writes, not synchronisation
        assert wait_until(lambda: len(lines_of(out)) == 60), tailer.stderr()

        def failure_lines() -> list[str]:
            return [line for line in tailer.stderr().splitlines() if "checkpoint" in line and "fail" in line]

        assert not wait_until(lambda: len(failure_lines()) > 1, 0.5), tailer.stderr()  # logged once, not per write
        failures = [line for line in tailer.stderr().splitlines() if "checkpoint" in line and "fail" in line]
        assert len(failures) == 1, tailer.stderr()
        assert "No space left" in failures[0]
        filler.unlink()  # space comes back
        (small_disk / "probe").unlink(missing_ok=True)
        write_lines(src, numbered("a", 60, 5))
        assert wait_until(lambda: len(lines_of(out)) == 65), tailer.stderr()
        assert wait_until(lambda: "checkpoint writes" in tailer.stderr() and "again" in tailer.stderr(), 5), \
            tailer.stderr()
        tailer.stop()
    write_lines(src, numbered("a", 65, 5))
    with Tailer(tmp_path, args) as tailer:  # resumes from the checkpoint written once space came back
        assert wait_until(lambda: len(lines_of(out)) >= 70), tailer.stderr()
        assert not wait_until(lambda: len(lines_of(out)) > 70, 0.3)  # nothing is delivered twice
        tailer.stop()
    assert lines_of(out) == [line.encode() for line in numbered("a", 0, 70)]  # nothing lost, nothing repeated
