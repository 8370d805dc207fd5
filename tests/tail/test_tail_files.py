"""edge-tail in file mode: start positions, globs, rotation under active writes, removal, partial lines."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edge import __version__
from tests.tail.tail_helpers import (
    COMMAND,
    Tailer,
    clean_env,
    drop_policy,
    lines_of,
    wait_until,
    write_lines,
    write_policy,
)


def numbered(prefix: str, start: int, count: int) -> list[str]:
    return [f"{prefix} {i:06d}" for i in range(start, start + count)]


def test_read_from_head_reads_existing_lines(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, numbered("a", 0, 100))
    with Tailer(tmp_path, [str(src), "-o", str(out), "--read-from", "head"]) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 100)
        write_lines(src, numbered("a", 100, 5))
        assert wait_until(lambda: len(lines_of(out)) == 105)
        tailer.stop()
    assert lines_of(out) == [line.encode() for line in numbered("a", 0, 105)]


def test_read_from_tail_skips_existing_lines(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, numbered("old", 0, 50))
    with Tailer(tmp_path, [str(src), "-o", str(out)]) as tailer:  # tail is the default
        tailer.wait_tailing(src)
        write_lines(src, numbered("new", 0, 3))
        assert wait_until(lambda: len(lines_of(out)) == 3)
        tailer.stop()
    assert lines_of(out) == [line.encode() for line in numbered("new", 0, 3)]


def test_read_from_checkpoint_resumes_and_new_files_start_at_head(tmp_path: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "in" / "out.log"  # the output matches the glob: never tailed
    inputs.mkdir()
    first = inputs / "a.log"
    write_lines(first, numbered("a", 0, 20))
    args = [str(inputs / "*.log"), "-o", str(out), "--read-from", "checkpoint"]
    with Tailer(tmp_path, args) as tailer:  # no checkpoint yet: from the first byte
        assert wait_until(lambda: len(lines_of(out)) == 20), tailer.stderr()
        tailer.stop()
    write_lines(first, numbered("a", 20, 10))  # written while no tailer runs
    write_lines(inputs / "b.log", numbered("b", 0, 4))  # a file the store does not know
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 34)
        tailer.stop()
    got = lines_of(out)
    assert got[:30] == [line.encode() for line in numbered("a", 0, 30)]  # resumed: no repeat, no gap
    assert sorted(got[30:]) == [line.encode() for line in numbered("b", 0, 4)]


def test_sigterm_flushes_buffered_lines_and_partial_lines_wait_for_their_newline(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    src.write_bytes(b"")
    args = [str(src), "-o", str(out), "--flush-interval-ms", "600000", "--flush-lines", "100000",
            "--write-buf", "10000000"]
    tailer = Tailer(tmp_path, args).start()
    try:
        tailer.wait_tailing(src)
        with open(src, "ab") as f:
            f.write(b"complete 1\ncomplete 2\npart")
        # the lines are read within a few 20 ms poll rounds and must stay in the output buffer: a
        # bounded look for the fault (lines written before a flush); nothing shows when they are read
        assert not wait_until(lambda: lines_of(out), 1.0), "lines were written before a flush"
        tailer.stop()
    finally:
        tailer.kill()
    assert out.read_bytes() == b"complete 1\ncomplete 2\n"  # the partial line is not delivered
    with Tailer(tmp_path, [str(src), "-o", str(out), "--read-from", "checkpoint"]) as tailer:
        tailer.wait_tailing(src)
        with open(src, "ab") as f:
            f.write(b"ial line\n")
        assert wait_until(lambda: len(lines_of(out)) == 3)
        tailer.stop()
    assert lines_of(out) == [b"complete 1", b"complete 2", b"partial line"]


@pytest.mark.parametrize("engine", ["inotify", "poll"])
def test_glob_discovers_new_files_and_applies_policy(tmp_path: Path, engine: str) -> None:
    logs, out = tmp_path / "logs", tmp_path / "out.log"
    logs.mkdir()
    policy = write_policy(tmp_path / "p.json", [drop_policy("drop", {"log_field": "body", "contains": "DROP"})])
    args = [str(logs / "*.log"), "-o", str(out), "-p", str(policy), "--io-engine", engine]
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: "no file matches" in tailer.stderr())
        write_lines(logs / "one.log", ["one keep", "one DROP"])
        write_lines(logs / "ignored.txt", ["not matched by the glob"])
        assert wait_until(lambda: lines_of(out) == [b"one keep"])
        write_lines(logs / "two.log", ["two keep", "two DROP", "two again"])
        write_lines(logs / "one.log", ["one more"])
        assert wait_until(lambda: len(lines_of(out)) == 4)
        tailer.stop()
    assert sorted(lines_of(out)) == [b"one keep", b"one more", b"two again", b"two keep"]


LINES_BETWEEN_ROTATIONS = 5000  # thousands of lines in every rotated file


class Writer(threading.Thread):
    """Appends numbered lines (one write each) to `path` until stopped; `lock` guards rotations."""

    def __init__(self, path: Path, lock: threading.Lock, reopen: bool) -> None:
        super().__init__(daemon=True)
        self.path, self.lock, self.reopen = path, lock, reopen
        self.written = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        inode = os.fstat(fd).st_ino
        while not self.stopping.is_set():
            with self.lock:
                if self.reopen and os.stat(self.path).st_ino != inode:  # rename rotation: follow the new file
                    os.close(fd)
                    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    inode = os.fstat(fd).st_ino
                os.write(fd, f"line {self.written:07d} {'x' * (self.written % 53)}\n".encode())
                self.written += 1
            if self.written % 50 == 0:
                time.sleep(0.001)  # pacing: a steady writer, not a flood (not synchronisation)
        os.close(fd)

    def wait_more(self, lines: int) -> None:
        """Until `lines` more lines are written (what a fixed pause between rotations meant)."""
        target = self.written + lines
        assert wait_until(lambda: self.written >= target), "the writer stalled"

    def expected(self) -> list[bytes]:
        return [f"line {i:07d} {'x' * (i % 53)}".encode() for i in range(self.written)]


def test_rename_rotation_under_active_writes_loses_nothing(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    src.write_bytes(b"")
    lock = threading.Lock()
    with Tailer(tmp_path, [str(src), "-o", str(out), "--read-from", "head"]) as tailer:
        tailer.wait_tailing(src)
        writer = Writer(src, lock, reopen=True)
        writer.start()
        for n in range(1, 5):
            writer.wait_more(LINES_BETWEEN_ROTATIONS)
            with lock:
                os.rename(src, tmp_path / f"app.log.{n}")
                src.write_bytes(b"")
        writer.wait_more(LINES_BETWEEN_ROTATIONS)  # some in the newest file too
        writer.stopping.set()
        writer.join()
        assert wait_until(lambda: len(lines_of(out)) >= writer.written), (len(lines_of(out)), writer.written)
        tailer.stop()
    assert lines_of(out) == writer.expected()  # every line, once, in order (old files drained first)
    assert tailer.stderr().count("draining the old file") == 4


def test_copytruncate_under_active_writes_loses_nothing(tmp_path: Path) -> None:
    """Copies are tailed too (a glob), so a line is either read before the truncation or found in its copy."""
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    src.write_bytes(b"")
    lock = threading.Lock()
    with Tailer(tmp_path, [str(tmp_path / "app.log*"), "-o", str(out), "--read-from", "head"]) as tailer:
        tailer.wait_tailing(src)
        writer = Writer(src, lock, reopen=False)
        writer.start()
        for n in range(1, 4):
            writer.wait_more(LINES_BETWEEN_ROTATIONS)
            with lock:
                shutil.copyfile(src, tmp_path / f"app.log.{n}")
                os.truncate(src, 0)
        writer.wait_more(LINES_BETWEEN_ROTATIONS)  # some after the last truncation too
        writer.stopping.set()
        writer.join()
        last_copy = len(lines_of(tmp_path / "app.log.3"))
        expected = writer.expected()
        assert wait_until(lambda: set(lines_of(out)) >= set(expected)), len(set(expected) - set(lines_of(out)))
        tailer.stop()
    got = lines_of(out)
    assert set(got) == set(expected)
    # lines written after the last truncation exist only in app.log: reading it again from 0 found them
    assert set(expected[last_copy:]) <= set(got)
    assert "truncated" in tailer.stderr() or "rewritten" in tailer.stderr()


def test_truncated_and_rewritten_files_are_read_again_from_the_start(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, numbered("first", 0, 30))
    with Tailer(tmp_path, [str(src), "-o", str(out), "--read-from", "head"]) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 30)
        src.write_bytes(b"short\n")  # truncated below our offset, in place (same inode)
        assert wait_until(lambda: lines_of(out)[-1:] == [b"short"])
        with open(src, "r+b") as f:  # same size or longer, different first bytes
            f.write(b"SHORT\nlonger than before\n")
        assert wait_until(lambda: lines_of(out)[-2:] == [b"SHORT", b"longer than before"])
        tailer.stop()
    got = lines_of(out)
    assert got[:31] == [line.encode() for line in numbered("first", 0, 30)] + [b"short"]
    assert got[-2:] == [b"SHORT", b"longer than before"]
    assert len(got) <= 34  # at most the line read between the rewrite and its detection repeats


def test_delete_and_recreate(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, numbered("before", 0, 10))
    with open(src, "ab") as f:
        f.write(b"unterminated last line")
    with Tailer(tmp_path, [str(src), "-o", str(out), "--read-from", "head", "--removed-expire-ms", "300"]) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 10)
        src.unlink()
        write_lines(src, numbered("after", 0, 10))
        assert wait_until(lambda: len(lines_of(out)) == 21)
        src.unlink()
        # after rotate wait + removed expiry both removed files are forgotten (and it says so)
        assert wait_until(lambda: tailer.stderr().count("stopped tailing the rotated or removed") >= 2), (
            tailer.stderr())
        write_lines(src, numbered("again", 0, 2))
        assert wait_until(lambda: len(lines_of(out)) == 23)
        tailer.stop()
    got = lines_of(out)
    # the deleted file's unterminated last line is delivered (completed) when the file is abandoned
    assert sorted(got) == sorted([line.encode() for line in numbered("before", 0, 10) + numbered("after", 0, 10)
                                  + numbered("again", 0, 2)] + [b"unterminated last line"])


def test_sigterm_at_any_moment_stops_the_tailer(tmp_path: Path) -> None:
    """SIGTERM is always honoured: a handler that set the wakeup event from the main thread
    could land while the loop held that event's lock (in wait/clear) and hang forever."""
    log_file = tmp_path / "app.log"
    write_lines(log_file, ["hello"])
    rng = random.Random(5)
    for attempt in range(25):
        tailer = Tailer(tmp_path, ["--poll-ms", "1", "--io-engine", "poll", "--read-from", "head",
                                   "-o", str(tmp_path / "out.log"), str(log_file)])
        with tailer:
            tailer.wait_tailing(log_file)
            time.sleep(rng.random() * 0.05)  # a random moment is what the test is about (not synchronisation)
            tailer.proc.send_signal(signal.SIGTERM)
            try:
                assert tailer.proc.wait(5) == 0, tailer.stderr()
            except subprocess.TimeoutExpired:
                pytest.fail(f"edge-tail ignored SIGTERM (attempt {attempt})")


def test_over_long_line_written_in_pieces_is_truncated_and_checkpointed_past(tmp_path: Path) -> None:
    """A line that grows past --max-line across reads (64-byte reads) is cut once; a restart resumes after it."""
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    src.write_bytes(b"")
    args = [str(src), "-o", str(out), "--read-from", "checkpoint", "--max-line", "100", "--read-buf", "64"]
    with Tailer(tmp_path, args) as tailer:
        tailer.wait_tailing(src)
        with open(src, "ab") as f:
            for piece in (b"L" * 90, b"M" * 90, b"N" * 90, b"\nafter\n"):
                f.write(piece)
                f.flush()
        assert wait_until(lambda: lines_of(out) == [b"L" * 90 + b"M" * 10, b"after"]), tailer.stderr()
        tailer.stop()
    write_lines(src, ["next"])
    with Tailer(tmp_path, args) as tailer:
        assert wait_until(lambda: len(lines_of(out)) == 3), tailer.stderr()
        tailer.stop()
    assert lines_of(out) == [b"L" * 90 + b"M" * 10, b"after", b"next"]


def test_missing_file_missing_glob_directory_and_unmatched_glob_are_waited_for(tmp_path: Path) -> None:
    """One warning naming all three, then each is tailed from its first byte once it appears."""
    out = tmp_path / "out.log"
    missing, in_new_dir, unmatched = tmp_path / "a.log", tmp_path / "nodir" / "*.log", tmp_path / "*.txt"
    with Tailer(tmp_path, [str(missing), str(in_new_dir), str(unmatched), "-o", str(out)]) as tailer:
        expected = (f"waiting for inputs to appear: {missing}: no such file; {in_new_dir}: no such directory; "
                    f"{unmatched}: no file matches yet")
        assert wait_until(lambda: expected in tailer.stderr()), tailer.stderr()
        write_lines(missing, ["from a"])
        (tmp_path / "nodir").mkdir()
        write_lines(tmp_path / "nodir" / "b.log", ["from b"])
        write_lines(tmp_path / "c.txt", ["from c"])
        assert wait_until(lambda: sorted(lines_of(out)) == [b"from a", b"from b", b"from c"]), tailer.stderr()
        tailer.stop()
    warnings = [line for line in tailer.stderr().splitlines() if '"level":"warn"' in line]
    assert len(warnings) == 1, warnings


def test_one_line_startup_summary_at_the_default_level(tmp_path: Path) -> None:
    src, out = tmp_path / "app.log", tmp_path / "out.log"
    write_lines(src, ["one", "two"])
    args = [*COMMAND, str(src), "-o", str(out), "--state-dir", str(tmp_path / "state"), "-f", "json"]
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, env=clean_env())
    try:
        expected = (f"edge-tail {__version__}: format json, writing to {out}, tailing 1 file(s) of {src} "
                    f"(read-from tail), state dir {tmp_path / 'state'}, start offsets: {src}@8")
        assert proc.stderr is not None
        messages = []
        for line in proc.stderr:
            messages.append(json.loads(line)["msg"])
            if messages[-1].startswith("edge-tail "):
                break
        assert messages[-1] == expected
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
