"""The checkpoint store's on-disk format and its lock file, byte for byte.

State dirs outlive upgrades, so the record and snapshot formats (and the fingerprint they store)
are pinned here; every check that makes a record or snapshot invalid is exercised alone, with
the CRC recomputed so that only that check can refuse it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import time
import zlib
from pathlib import Path

import pytest

from edge.tail.checkpoint import (
    LOCK_NAME,
    RECORD_SIZE,
    SNAPSHOT_NAME,
    WAL_NAME,
    Checkpoint,
    CheckpointStore,
    FileIdentity,
    StateDirInUse,
    decode_record,
    decode_snapshot,
    encode_record,
    encode_snapshot,
    fingerprint,
    scan_wal,
)

CHECKPOINT = Checkpoint(FileIdentity(7, 42, fingerprint(b"head\n"), 5), 1234, 1_700_000_000_000)
QUIET = {"interval_ms": 3_600_000, "snapshot_interval_ms": 3_600_000}


def with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_the_fingerprint_of_a_head_is_stable_across_releases() -> None:
    """Stored fingerprints must still match the same files after an upgrade."""
    assert fingerprint(b"first line\n") == 11542090343601876971


def test_a_record_round_trips_and_a_tombstone_carries_no_checkpoint() -> None:
    assert decode_record(encode_record(CHECKPOINT)) == ((7, 42), CHECKPOINT)
    assert decode_record(encode_record(CHECKPOINT, tombstone=True)) == ((7, 42), None)
    assert len(encode_record(CHECKPOINT)) == RECORD_SIZE


@pytest.mark.parametrize("magic,version", [(b"XTCK", 1), (b"ETCK", 2)])
def test_a_record_with_another_magic_or_version_is_invalid(magic: bytes, version: int) -> None:
    body = bytearray(encode_record(CHECKPOINT)[:-4])
    body[:5] = magic + bytes([version])
    assert decode_record(with_crc(bytes(body))) is None


def test_an_empty_snapshot_is_valid() -> None:
    assert decode_snapshot(encode_snapshot([])) == []


def test_a_snapshot_shorter_than_its_header_is_invalid() -> None:
    assert decode_snapshot(b"ETSN\x01" + bytes(5)) is None


@pytest.mark.parametrize("magic,version", [(b"XTSN", 1), (b"ETSN", 2)])
def test_a_snapshot_with_another_magic_or_version_is_invalid(magic: bytes, version: int) -> None:
    body = bytearray(encode_snapshot([CHECKPOINT])[:-4])
    body[:5] = magic + bytes([version])
    assert decode_snapshot(with_crc(bytes(body))) is None


def test_a_snapshot_holding_a_tombstone_is_invalid() -> None:
    body = encode_snapshot([CHECKPOINT])[:-4 - RECORD_SIZE] + encode_record(CHECKPOINT, tombstone=True)
    assert decode_snapshot(with_crc(body)) is None


def test_a_snapshot_holding_a_bad_record_under_a_good_crc_is_invalid() -> None:
    other = Checkpoint(FileIdentity(7, 43, 0, 0), 1, 1)
    body = bytearray(encode_snapshot([CHECKPOINT, other])[:-4])
    body[-1] ^= 0xFF  # the last record's own CRC no longer matches
    assert decode_snapshot(with_crc(bytes(body))) is None


def test_checkpoints_carry_wall_clock_milliseconds(tmp_path: Path) -> None:
    before = time.time_ns() // 1_000_000
    with CheckpointStore(tmp_path, **QUIET) as store:
        store.update(CHECKPOINT.identity, 10)
        updated = store.lookup(7, 42, b"head\n").updated_ms
    assert before <= updated <= time.time_ns() // 1_000_000


def hold_lock(state_dir: Path, content: bytes) -> int:
    """Another tailer's lock: a second open file description holding the flock, as another process would."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    os.write(fd, content)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


@pytest.mark.parametrize("content,shown", [(b"", "unknown"), (b"\xff\xfe\n", "\ufffd\ufffd"), (b" 4242 \n", "4242")])
def test_the_refusal_names_the_holder_as_its_lock_file_does(tmp_path: Path, content: bytes, shown: str) -> None:
    fd = hold_lock(tmp_path, content)
    try:
        with pytest.raises(StateDirInUse) as refused:
            CheckpointStore(tmp_path, **QUIET)
    finally:
        os.close(fd)
    assert str(refused.value) == (f"state dir {tmp_path} is in use by another edge-tail (pid {shown}); "
                                  "give each tailer its own --state-dir")


def test_the_lock_and_snapshot_files_are_not_executable_and_the_lock_holds_the_pid(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_bytes(b"a much longer previous content\n")
    umask = os.umask(0o022)
    try:
        with CheckpointStore(tmp_path / "new", **QUIET), CheckpointStore(tmp_path, **QUIET):
            modes = [(tmp_path / "new" / name).stat().st_mode & 0o777 for name in (LOCK_NAME, SNAPSHOT_NAME, WAL_NAME)]
            assert (tmp_path / LOCK_NAME).read_bytes() == f"{os.getpid()}\n".encode()
    finally:
        os.umask(umask)
    assert [oct(mode) for mode in modes] == ["0o644", "0o644", "0o644"]


def test_a_lock_file_that_cannot_hold_the_pid_only_costs_a_debug_line(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    os.mkfifo(tmp_path / LOCK_NAME)  # can be locked, not truncated
    with caplog.at_level(logging.DEBUG, logger="edge.tail.checkpoint"), CheckpointStore(tmp_path, **QUIET) as store:
        store.update(CHECKPOINT.identity, 10)
    assert [r.getMessage() for r in caplog.records if "pid" in r.getMessage()] == [
        f"cannot write the pid into {tmp_path / LOCK_NAME}: [Errno 22] Invalid argument"]


def test_a_wal_starting_with_garbage_counts_that_stretch() -> None:
    record = encode_record(CHECKPOINT)
    scan = scan_wal(b"junk" + record)
    assert (len(scan.records), scan.corrupt_stretches, scan.corrupt_bytes) == (1, 1, 4)


def test_a_record_right_after_one_stray_byte_is_found() -> None:
    record = encode_record(CHECKPOINT)
    assert scan_wal(b"E" + record).records == [((7, 42), CHECKPOINT)]


def test_corrupt_bytes_add_up_over_stretches() -> None:
    record = encode_record(CHECKPOINT)
    scan = scan_wal(record + b"xx" + record + b"yyy" + record)
    assert (len(scan.records), scan.corrupt_stretches, scan.corrupt_bytes) == (3, 2, 5)
