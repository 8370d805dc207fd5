"""edge-tail's reader in process, on real files: line cutting, over-long lines, file kinds, truncation and rewrites.

The end-to-end tail tests run `edge-tail` as a child process; these pin each rule of the reader
itself (offsets, partial lines, identities) so that a change to one of them fails here by name.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

import pytest

from edge.tail.checkpoint import FINGERPRINT_BYTES, FileIdentity, fingerprint
from edge.tail.reader import LineCutter, TailedFile, display, file_kind, identity_of


def blocks(cutter: LineCutter, *chunks: bytes) -> list[tuple[bytes, int]]:
    """Feed `chunks` as one stream; every block delivered, as (data, end offset)."""
    out: list[tuple[bytes, int]] = []
    offset = 0
    for chunk in chunks:
        offset += len(chunk)
        out += [(b.data, b.end_offset) for b in cutter.feed(chunk, offset)]
    return out


# -- display and file kinds ---------------------------------------------------------------------------


def test_a_utf8_path_is_displayed_as_it_is() -> None:
    assert display("/var/log/ünïcode.log") == "/var/log/ünïcode.log"


def test_undecodable_bytes_of_a_path_are_displayed_as_replacement_characters() -> None:
    path = os.fsdecode(b"/var/log/app-\xff\xfe.log")
    assert display(path) == "/var/log/app-\ufffd\ufffd.log"


def test_file_kinds_of_real_special_files(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(tmp_path / "sock"))
        kinds = [file_kind(os.stat(p).st_mode) for p in (fifo, tmp_path, tmp_path / "sock", "/dev/null")]
    assert kinds == ["FIFO", "directory", "socket", "character device"]


def test_block_devices_and_other_modes_are_named() -> None:
    assert file_kind(stat.S_IFBLK | 0o600) == "block device"
    assert file_kind(stat.S_IFLNK | 0o777) == "special file"


# -- cutting lines ------------------------------------------------------------------------------------


def test_complete_lines_are_delivered_and_the_partial_last_line_is_held() -> None:
    cutter = LineCutter(max_line=100)
    assert blocks(cutter, b"one\ntwo\nthr") == [(b"one\ntwo\n", 8)]
    assert cutter.pending == b"thr"
    assert cutter.feed(b"ee", 13) == []
    assert [(b.data, b.end_offset) for b in cutter.feed(b"\nfour\n", 19)] == [(b"three\nfour\n", 19)]
    assert cutter.pending == b""


def test_a_partial_line_of_exactly_max_line_bytes_is_still_held() -> None:
    cutter = LineCutter(max_line=5)
    assert blocks(cutter, b"a\n12345") == [(b"a\n", 2)]
    assert cutter.pending == b"12345" and not cutter.in_long_line


def test_complete_lines_over_max_line_are_cut_to_their_first_bytes() -> None:
    cutter = LineCutter(max_line=3)
    assert blocks(cutter, b"abcdef\nxy\nlonger\n") == [(b"abc\nxy\nlon\n", 17)]


def test_a_line_one_byte_over_max_line_is_cut_and_one_of_max_line_is_not() -> None:
    """The edges of the fast path that returns a block untouched when no line can be too long."""
    assert blocks(LineCutter(max_line=3), b"abcd\n") == [(b"abc\n", 5)]
    assert blocks(LineCutter(max_line=3), b"abc\n") == [(b"abc\n", 4)]


def test_a_partial_line_past_max_line_is_cut_and_its_rest_skipped_to_its_newline() -> None:
    """The cut line is delivered at once; the skipped rest still moves the position (empty blocks)."""
    cutter = LineCutter(max_line=5)
    assert blocks(cutter, b"ok\n123456", b"789", b"0\nnext\n") == [
        (b"ok\n", 3),
        (b"12345\n", 9),
        (b"", 12),
        (b"", 14),
        (b"next\n", 19),
    ]
    assert cutter.pending == b"" and not cutter.in_long_line


def test_the_end_of_a_long_line_alone_returns_only_its_skip() -> None:
    cutter = LineCutter(max_line=2)
    assert blocks(cutter, b"abcd", b"e\n") == [(b"ab\n", 4), (b"", 6)]
    assert cutter.feed(b"x", 7) == []
    assert cutter.pending == b"x"


def test_a_long_line_ending_at_the_start_of_a_read_ends_there() -> None:
    cutter = LineCutter(max_line=2)
    assert blocks(cutter, b"abcd", b"\nnx\n") == [(b"ab\n", 4), (b"", 5), (b"nx\n", 8)]
    assert not cutter.in_long_line


def test_take_partial_completes_the_held_line_with_a_newline() -> None:
    cutter = LineCutter(max_line=100)
    assert cutter.take_partial(0) is None
    cutter.feed(b"a\nbc", 4)
    block = cutter.take_partial(4)
    assert (block.data, block.end_offset) == (b"bc\n", 4)
    assert cutter.take_partial(4) is None


def test_take_partial_of_an_over_long_line_only_ends_the_skip() -> None:
    """Its cut head was delivered already: what is left is the position, nothing more."""
    cutter = LineCutter(max_line=2)
    assert blocks(cutter, b"abcdef") == [(b"ab\n", 6)]
    block = cutter.take_partial(6)
    assert (block.data, block.end_offset) == (b"", 6)
    assert not cutter.in_long_line
    assert cutter.take_partial(6) is None


def test_reset_forgets_the_partial_line_and_the_long_line_state() -> None:
    cutter = LineCutter(max_line=2)
    cutter.feed(b"abcdef", 6)
    cutter.reset()
    assert (cutter.pending, cutter.in_long_line) == (b"", False)
    assert blocks(cutter, b"x\n") == [(b"x\n", 2)]


# -- one tailed file ----------------------------------------------------------------------------------


def open_file(path: Path, content: bytes, max_line: int = 100) -> TailedFile:
    path.write_bytes(content)
    return TailedFile.open(str(path), max_line)


def test_open_reads_from_offset_zero_with_the_file_identity(tmp_path: Path) -> None:
    tailed = open_file(tmp_path / "a.log", b"hello\nwor")
    try:
        st = os.stat(tmp_path / "a.log")
        assert tailed.key == (st.st_dev, st.st_ino)
        assert tailed.identity == FileIdentity(st.st_dev, st.st_ino, fingerprint(b"hello\nwor"), 9)
        assert (tailed.offset, tailed.size_seen, tailed.at_eof, tailed.detached_at) == (0, 9, False, None)
        assert tailed.name == str(tmp_path / "a.log")
        assert tailed.head() == b"hello\nwor"
    finally:
        tailed.close()


def test_identity_covers_at_most_the_fingerprint_bytes(tmp_path: Path) -> None:
    head = bytes(range(256)) * 8
    path = tmp_path / "big.log"
    path.write_bytes(head)
    fd = os.open(path, os.O_RDONLY)
    try:
        ident = identity_of(fd, os.fstat(fd))
    finally:
        os.close(fd)
    assert ident.fingerprint_len == FINGERPRINT_BYTES
    assert ident.fingerprint == fingerprint(head[:FINGERPRINT_BYTES])


def test_read_returns_blocks_then_none_at_the_end(tmp_path: Path) -> None:
    tailed = open_file(tmp_path / "a.log", b"one\ntwo\nthree")
    try:
        first = tailed.read(6)
        assert [(b.data, b.end_offset) for b in first] == [(b"one\n", 4)]
        assert (tailed.offset, tailed.at_eof) == (6, False)
        assert [(b.data, b.end_offset) for b in tailed.read(100)] == [(b"two\n", 8)]
        assert tailed.offset == 13 and not tailed.has_unread()
        assert tailed.read(100) is None and tailed.at_eof
        assert tailed.offset == 13
        with open(tmp_path / "a.log", "ab") as f:
            f.write(b"\n")
        assert [(b.data, b.end_offset) for b in tailed.read(100)] == [(b"three\n", 14)]
        assert (tailed.size_seen, tailed.at_eof) == (14, False)
    finally:
        tailed.close()


def test_take_partial_delivers_the_held_line_at_the_current_offset(tmp_path: Path) -> None:
    tailed = open_file(tmp_path / "a.log", b"one\ntw")
    try:
        tailed.read(100)
        block = tailed.take_partial()
        assert (block.data, block.end_offset) == (b"tw\n", 6)
    finally:
        tailed.close()


def test_has_unread_follows_the_size_the_file_was_last_seen_with(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tailed = open_file(path, b"one\n")
    try:
        assert tailed.has_unread()
        tailed.read(100)
        assert not tailed.has_unread()
        with open(path, "ab") as f:
            f.write(b"two\n")
        assert tailed.restart_if_replaced() == ""
        assert tailed.size_seen == 8 and tailed.has_unread()
    finally:
        tailed.close()


def test_a_directory_or_fifo_is_refused_by_kind(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fds_before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(IsADirectoryError) as directory:
        TailedFile.open(str(tmp_path), 100)
    with pytest.raises(IsADirectoryError) as pipe:
        TailedFile.open(str(fifo), 100)
    assert str(directory.value) == f"[Errno 21] not a regular file but a directory: '{tmp_path}'"
    assert str(pipe.value) == f"[Errno 21] not a regular file but a FIFO: '{fifo}'"
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_copytruncate_restarts_at_zero_with_the_new_identity(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tailed = open_file(path, b"0123456789\n")
    try:
        tailed.read(100)
        tailed.cutter.feed(b"held", 15)  # a partial line the restart must forget
        path.write_bytes(b"new\n")
        assert tailed.restart_if_replaced() == "truncated to 4 bytes below offset 11"
        assert (tailed.offset, tailed.cutter.pending, tailed.size_seen) == (0, b"", 4)
        assert tailed.identity.fingerprint == fingerprint(b"new\n") and tailed.identity.fingerprint_len == 4
        assert [(b.data, b.end_offset) for b in tailed.read(100)] == [(b"new\n", 4)]
    finally:
        tailed.close()


def test_a_file_at_exactly_the_offset_is_not_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tailed = open_file(path, b"abc\n")
    try:
        tailed.read(100)
        assert tailed.restart_if_replaced() == ""
        assert tailed.offset == 4
    finally:
        tailed.close()


def test_a_rewritten_head_restarts_at_zero(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tailed = open_file(path, b"abc\n")
    try:
        tailed.read(100)
        with open(path, "r+b") as f:
            f.write(b"xyz\nmore\n")
        assert tailed.restart_if_replaced() == "its first bytes were rewritten"
        assert tailed.offset == 0
        assert tailed.identity.fingerprint == fingerprint(b"xyz\nmore\n") and tailed.identity.fingerprint_len == 9
    finally:
        tailed.close()


def test_a_growing_short_file_extends_its_fingerprint(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    tailed = open_file(path, b"ab\n")
    try:
        tailed.read(100)
        with open(path, "ab") as f:
            f.write(b"cd\n")
        assert tailed.restart_if_replaced() == ""
        assert tailed.offset == 3
        st = os.stat(path)
        assert tailed.identity == FileIdentity(st.st_dev, st.st_ino, fingerprint(b"ab\ncd\n"), 6)
    finally:
        tailed.close()


def test_a_file_past_the_fingerprint_keeps_its_identity_as_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    head = (b"x" * 99 + b"\n") * 11  # 1100 bytes: the fingerprint covers the first 1024
    tailed = open_file(path, head)
    try:
        before = tailed.identity
        assert before.fingerprint_len == FINGERPRINT_BYTES
        tailed.read(4096)
        with open(path, "ab") as f:
            f.write(b"more\n")
        assert tailed.restart_if_replaced() == ""
        assert tailed.identity == before and tailed.offset == 1100
        with open(path, "r+b") as f:
            f.seek(FINGERPRINT_BYTES - 1)
            f.write(b"!")
        assert tailed.restart_if_replaced() == "its first bytes were rewritten"
    finally:
        tailed.close()


def test_close_is_idempotent(tmp_path: Path) -> None:
    tailed = open_file(tmp_path / "a.log", b"a\n")
    fd = tailed.fd
    tailed.close()
    assert tailed.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)
    tailed.close()


def test_a_file_on_descriptor_0_is_closed_too(tmp_path: Path) -> None:
    """edge-tail started with stdin closed gets descriptor 0 for the first file it opens."""
    saved = os.dup(0)
    os.close(0)
    try:
        tailed = open_file(tmp_path / "a.log", b"a\n")
        assert tailed.fd == 0
        tailed.close()
        with pytest.raises(OSError):
            os.fstat(0)
    finally:
        os.dup2(saved, 0)
        os.close(saved)
