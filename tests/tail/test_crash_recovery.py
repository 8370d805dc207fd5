"""Crash safety of the real `edge-tail` command: SIGKILL at random points, corrupted checkpoint
files, TTL and slot pressure through the CLI flags.

Every check reads what a user would: the output file. At-least-once means every line
written to an input shows up in the output, and per input file the lines come in order
except that a restart may go back and repeat some (never skip ahead).
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.tail.checkpoint import RECORD_SIZE, SNAPSHOT_NAME, WAL_NAME, decode_snapshot, scan_wal
from tests.tail.tail_helpers import terminate, wait_until

_SCRIPT = Path(sys.executable).with_name("edge-tail")
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "edge.tail.cli"]
REPO = Path(__file__).parents[2]
FAST = ["--read-from", "checkpoint", "--poll-ms", "20", "--flush-interval-ms", "20", "--glob-interval-ms", "200",
        "--checkpoint-interval-ms", "50", "--checkpoint-sync-batch", "8"]
LINE = re.compile(rb"(f\d) (\d{7}) (x*)")
STARTED = "start offsets:"  # in edge-tail's start-up line, logged once it takes SIGTERM itself


def line(name: str, seq: int) -> bytes:
    """Input lines of varying length, so reads and partial lines fall at different places."""
    return f"{name} {seq:07d} {'x' * (seq * 7 % 41)}\n".encode()


class Inputs:
    """Input files with numbered lines; `append` may split a line over two writes (a partial line)."""

    def __init__(self, directory: Path, names: list[str]) -> None:
        self.paths = {name: directory / f"{name}.log" for name in names}
        self.written = dict.fromkeys(names, 0)
        self.fds = {name: os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) for name, p in self.paths.items()}

    def append(self, name: str, count: int, rng: random.Random | None = None) -> None:
        for _ in range(count):
            data = line(name, self.written[name])
            if rng is not None and rng.random() < 0.05:
                cut = rng.randrange(1, len(data))
                os.write(self.fds[name], data[:cut])
                time.sleep(0.002)  # a writer pausing mid-line: the partial line under test (not synchronisation)
                data = data[cut:]
            os.write(self.fds[name], data)
            self.written[name] += 1

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)


class Tailer:
    """One `edge-tail` process over `inputs`, its output in `out`, its state in `state_dir`."""

    def __init__(self, tmp: Path, inputs: Inputs, extra: list[str] | None = None) -> None:
        self.out = tmp / "out.log"
        self.state_dir = tmp / "state"
        self.stderr_path = tmp / "stderr.log"
        self.args = [*COMMAND, *map(str, inputs.paths.values()), "-o", str(self.out), "--state-dir",
                     str(self.state_dir), *FAST, *(extra or [])]
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.started_at = 0  # length of the stderr log when the current process started

    def start(self) -> None:
        self.started_at = len(self.stderr())
        with open(self.stderr_path, "ab") as stderr:
            self.proc = subprocess.Popen(self.args, cwd=REPO, stdin=subprocess.DEVNULL, stderr=stderr)

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, self.stderr()
        self.proc.send_signal(signal.SIGKILL)
        assert self.proc.wait(10) == -signal.SIGKILL
        self.kills += 1

    def stop(self) -> None:
        """SIGTERM once the tailer is running (its start-up line logged): a SIGTERM while the interpreter
        is still starting, before edge-tail takes the signal, ends it by the signal's default action."""
        assert self.proc is not None
        assert wait_until(lambda: STARTED in self.stderr()[self.started_at:]), self.stderr()
        assert terminate(self.proc, self.stderr) == 0, self.stderr()

    def ensure_dead(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def delivered(self) -> dict[str, list[int]]:
        """Per input file, the sequence numbers in the output, in output order (complete lines only)."""
        seen: dict[str, list[int]] = {}
        data = self.out.read_bytes() if self.out.exists() else b""
        for raw in data.split(b"\n")[:-1]:
            match = LINE.fullmatch(raw)
            if match and len(match[3]) == int(match[2]) * 7 % 41:
                seen.setdefault(match[1].decode(), []).append(int(match[2]))
        return seen

    def output_size(self) -> int:
        return self.out.stat().st_size if self.out.exists() else 0

    def wait_output_beyond(self, size: int, timeout: float = 20) -> None:
        assert wait_until(lambda: self.output_size() > size, timeout), self.stderr()

    def torn_lines(self) -> int:
        data = self.out.read_bytes() if self.out.exists() else b""
        return sum(1 for raw in data.split(b"\n")[:-1] if not LINE.fullmatch(raw))

    def caught_up(self, inputs: Inputs) -> bool:
        seen = self.delivered()
        return all(inputs.written[n] == 0 or max(seen.get(n, [-1])) == inputs.written[n] - 1 for n in inputs.written)

    def wait_caught_up(self, inputs: Inputs, timeout: float = 20) -> None:
        assert wait_until(lambda: self.caught_up(inputs), timeout), (inputs.written, self.stderr())

    def wait_checkpointed(self, inputs: Inputs, names: list[str] | None = None) -> None:
        """Until the state dir's checkpoints hold the end of the named input files (default: all):
        a kill from then on repeats nothing of them."""
        paths = [inputs.paths[n] for n in names or inputs.paths]
        assert wait_until(lambda: all(checkpointed(self.state_dir).get(os.stat(p).st_ino) == os.stat(p).st_size
                                      for p in paths)), (checkpointed(self.state_dir), self.stderr())


def checkpointed(state_dir: Path) -> dict[int, int]:
    """inode -> offset as a restart would find it: the snapshot, then the WAL's records over it.
    Read while the tailer writes, it can only lag behind (every record in it was written)."""
    offsets: dict[int, int] = {}
    try:
        for checkpoint in decode_snapshot((state_dir / SNAPSHOT_NAME).read_bytes()) or []:
            offsets[checkpoint.identity.inode] = checkpoint.offset
    except FileNotFoundError:
        pass
    try:
        records = scan_wal((state_dir / WAL_NAME).read_bytes()).records
    except FileNotFoundError:
        records = []
    for (_, inode), checkpoint in records:
        if checkpoint is None:
            offsets.pop(inode, None)
        else:
            offsets[inode] = checkpoint.offset
    return offsets


@pytest.fixture
def files(tmp_path: Path):
    made: list[tuple[Inputs, Tailer]] = []

    def make(names: list[str], extra: list[str] | None = None) -> tuple[Inputs, Tailer]:
        inputs = Inputs(tmp_path, names)
        made.append((inputs, Tailer(tmp_path, inputs, extra)))
        return made[-1]

    yield make
    for inputs, tailer in made:
        tailer.ensure_dead()
        inputs.close()


def assert_at_least_once_in_order(seen: dict[str, list[int]], written: dict[str, int], restarts: int) -> None:
    """Every line present; per file each line follows its predecessor or goes back (a replay after a
    restart, at most one per restart), never forward."""
    for name, count in written.items():
        sequence = seen.get(name, [])
        assert sorted(set(sequence)) == list(range(count)), f"{name}: missing {set(range(count)) - set(sequence)}"
        assert sequence[0] == 0
        backward = 0
        for before, after in zip(sequence, sequence[1:], strict=False):
            assert after <= before + 1, f"{name}: skipped from {before} to {after}"
            backward += after <= before
        assert backward <= restarts, f"{name}: {backward} replays for {restarts} restarts"


def repeated(seen: dict[str, list[int]]) -> dict[str, int]:
    return {name: len(sequence) - len(set(sequence)) for name, sequence in seen.items()}


# -- SIGKILL at random points ----------------------------------------------------------------------


def test_sigkill_at_random_points_never_loses_a_line(files) -> None:
    """How far a restart goes back depends on where the kill lands in the checkpoint window (a kill
    during a catch-up burst may repeat the whole burst); that checkpoints are used at all is the next
    test's deterministic check."""
    seed = int.from_bytes(os.urandom(4))
    print(f"random kill points: seed {seed}")  # shown with a failure
    rng = random.Random(seed)
    # a wide checkpoint window (200 ms or 64 updates) so that most kills lose some checkpoint updates
    inputs, tailer = files(["f1", "f2", "f3"], ["--checkpoint-interval-ms", "200", "--checkpoint-sync-batch", "64",
                                                "--checkpoint-snapshot-interval-ms", "500"])
    stop_writing = threading.Event()

    def write() -> None:  # about 300 lines/s per file, in small bursts, until told to stop
        while not stop_writing.is_set():
            for name in inputs.written:
                inputs.append(name, rng.randrange(1, 12), rng)
            time.sleep(0.02)  # pacing the writer (not synchronisation)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for attempt in range(7):
            size = tailer.output_size()
            tailer.start()
            # random kill points are what the test is about: these sleeps place them (not synchronisation)
            if attempt % 3:  # wait until it delivers, then kill it mid-stream
                tailer.wait_output_beyond(size)
                time.sleep(rng.uniform(0.0, 0.4))
            else:  # kill it during startup, replay or its first reads
                time.sleep(rng.uniform(0.05, 0.8))
            tailer.kill()
    finally:
        stop_writing.set()
        writer.join()
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()
    assert_at_least_once_in_order(tailer.delivered(), inputs.written, restarts=tailer.kills)
    assert tailer.torn_lines() <= tailer.kills  # a write cut by SIGKILL, its lines delivered again after
    assert "Traceback" not in tailer.stderr()


def test_clean_stop_and_a_quiet_sigkill_repeat_nothing(files) -> None:
    """Checkpoints are exact after SIGTERM, and after SIGKILL once the checkpoint interval has passed."""
    inputs, tailer = files(["f1", "f2"])
    inputs.append("f1", 500)
    inputs.append("f2", 300)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()
    inputs.append("f1", 50)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.wait_checkpointed(inputs)  # --checkpoint-interval-ms later the WAL has the last offsets
    tailer.kill()
    inputs.append("f2", 50)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()
    seen = tailer.delivered()
    assert seen == {name: list(range(count)) for name, count in inputs.written.items()}


# -- corrupted checkpoint files --------------------------------------------------------------------


def flip_a_bit_mid_wal(state_dir: Path) -> None:
    wal = state_dir / WAL_NAME
    data = bytearray(wal.read_bytes())
    assert len(data) >= 4 * RECORD_SIZE, len(data)
    data[len(data) // 2] ^= 0x10
    wal.write_bytes(bytes(data))


def append_garbage_to_wal(state_dir: Path) -> None:
    with open(state_dir / WAL_NAME, "ab") as wal:
        wal.write(os.urandom(3 * RECORD_SIZE + 11))


def tear_the_last_wal_record(state_dir: Path) -> None:
    wal = state_dir / WAL_NAME
    os.truncate(wal, wal.stat().st_size - RECORD_SIZE // 2)


def scramble_the_snapshot(state_dir: Path) -> None:
    snapshot = state_dir / SNAPSHOT_NAME
    snapshot.write_bytes(os.urandom(snapshot.stat().st_size))


@pytest.mark.parametrize(("damage", "max_repeats"), [
    (flip_a_bit_mid_wal, 40),  # that file falls back to its record before (within the last 40-line burst)
    (append_garbage_to_wal, 0),  # every record survives
    (tear_the_last_wal_record, 40),
    (scramble_the_snapshot, 0),  # it held only offsets the WAL has newer records for
])
def test_damaged_checkpoints_still_start_and_lose_nothing(files, damage: Callable[[Path], None],
                                                          max_repeats: int) -> None:
    inputs, tailer = files(["f1", "f2"], ["--checkpoint-sync-batch", "1",
                                          "--checkpoint-snapshot-interval-ms", "3600000"])
    inputs.append("f1", 100)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()  # the snapshot now holds f1 at 100 lines
    tailer.start()
    for _ in range(4):  # several WAL records per file
        inputs.append("f1", 40)
        inputs.append("f2", 40)
        tailer.wait_caught_up(inputs)
        tailer.wait_checkpointed(inputs)
    tailer.kill()
    damage(tailer.state_dir)
    inputs.append("f1", 30)
    inputs.append("f2", 30)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()
    assert_at_least_once_in_order(tailer.delivered(), inputs.written, restarts=2)
    assert sum(repeated(tailer.delivered()).values()) <= max_repeats
    assert "corrupt" in tailer.stderr()
    assert "Traceback" not in tailer.stderr()


# -- TTL and slot pressure through the flags -------------------------------------------------------


def test_expired_checkpoints_reread_files_from_the_start(files) -> None:
    inputs, tailer = files(["f1", "f2"], ["--checkpoint-ttl-ms", "400"])
    inputs.append("f1", 100)
    inputs.append("f2", 100)
    tailer.start()
    tailer.wait_caught_up(inputs)
    tailer.stop()
    # the TTL passing while no tailer runs is what is tested (the default TTL resumes: see above)
    time.sleep(0.5)
    inputs.append("f2", 1)
    tailer.start()
    tailer.wait_caught_up(inputs)
    assert wait_until(lambda: repeated(tailer.delivered()) == {"f1": 100, "f2": 100}, 10), repeated(
        tailer.delivered())
    tailer.stop()
    assert_at_least_once_in_order(tailer.delivered(), inputs.written, restarts=1)


def test_slot_pressure_evicts_the_least_recently_updated_files(files) -> None:
    inputs, tailer = files(["f1", "f2", "f3", "f4"], ["--checkpoint-max-slots", "2"])
    tailer.start()
    for name in inputs.written:  # f1 delivered first, f4 last: f3 and f4 keep their slots
        inputs.append(name, 50)
        tailer.wait_caught_up(inputs)
        tailer.wait_checkpointed(inputs, [name])  # each one's checkpoint updated before the next one's
    tailer.stop()
    for name in inputs.written:
        inputs.append(name, 1)
    tailer.start()
    tailer.wait_caught_up(inputs)
    assert wait_until(lambda: repeated(tailer.delivered()) == {"f1": 50, "f2": 50, "f3": 0, "f4": 0}, 10), (
        repeated(tailer.delivered()))
    tailer.stop()
    assert_at_least_once_in_order(tailer.delivered(), inputs.written, restarts=1)


# -- one state dir, one tailer ---------------------------------------------------------------------


def test_second_tailer_on_the_same_state_dir_is_refused(files, tmp_path: Path) -> None:
    inputs, tailer = files(["f1"])
    inputs.append("f1", 3)
    tailer.start()
    tailer.wait_caught_up(inputs)
    second = subprocess.run([*COMMAND, str(inputs.paths["f1"]), "-o", str(tmp_path / "second.log"),
                             "--state-dir", str(tailer.state_dir), "--read-from", "checkpoint"],
                            cwd=REPO, capture_output=True, timeout=20)
    assert second.returncode == 2
    assert b"in use by another edge-tail" in second.stderr and b"Traceback" not in second.stderr
    assert second.stderr.count(b"\n") == 1
    tailer.stop()
