"""The forwarding ledger in process: positions released in order, and the urgent records counted ahead."""

from __future__ import annotations

from collections.abc import Mapping

from edge.tail.checkpoint import FileIdentity
from edge.tail.ledger import Ledger
from edge.tail.output import Position
from edge.tail.reader import FileKey

FILE = FileIdentity(1, 7, 0, 0)
OTHER = FileIdentity(1, 8, 0, 0)


class Reports:
    def __init__(self) -> None:
        self.seen: list[tuple[list[Position], dict[FileKey, int]]] = []

    def __call__(self, positions: list[Position], ahead: Mapping[FileKey, int] | None = None) -> None:
        self.seen.append((positions, dict(ahead or {})))


def ledger() -> tuple[Ledger, Reports]:
    reports = Reports()
    book = Ledger(reports)
    book.start((FILE, 0))
    book.start((OTHER, 0))
    return book, reports


def test_a_position_waits_for_every_record_before_it() -> None:
    book, reports = ledger()
    first = book.open((FILE, 100), 3, 0, 0)
    second = book.open((FILE, 200), 2, 0, 0)
    book.acknowledged({second: (2, 0)})  # the later block first: nothing can be released yet
    assert reports.seen == []
    book.acknowledged({first: (2, 0)})
    assert reports.seen == []
    book.acknowledged({first: (1, 0)})
    assert reports.seen == [([(FILE, 200)], {(1, 7): 0})]


def test_urgent_records_acknowledged_ahead_are_counted_up_to_the_first_gap() -> None:
    book, reports = ledger()
    first = book.open((FILE, 100), 4, 1, 0)  # one urgent record among four, its others still waiting
    second = book.open((FILE, 200), 3, 2, 0)
    third = book.open((FILE, 300), 2, 1, 0)
    book.acknowledged({first: (1, 1), second: (2, 2)})  # the urgent batch: both blocks' urgent records
    assert reports.seen == [([(FILE, 0)], {(1, 7): 3})]  # the third block's urgent record is not sent yet
    book.acknowledged({first: (3, 0), second: (1, 0)})
    assert reports.seen[-1] == ([(FILE, 200)], {(1, 7): 0})
    book.acknowledged({third: (1, 1)})
    assert reports.seen[-1] == ([(FILE, 200)], {(1, 7): 1})


def test_a_gap_in_the_urgent_records_stops_the_count() -> None:
    book, reports = ledger()
    first = book.open((FILE, 100), 2, 2, 0)
    second = book.open((FILE, 200), 1, 1, 0)
    book.acknowledged({first: (1, 1), second: (1, 1)})  # one urgent record of the first block still out
    assert reports.seen == [([(FILE, 0)], {(1, 7): 1})]


def test_the_count_stops_where_the_file_is_read_again_from_zero_and_other_files_wait_in_order() -> None:
    book, reports = ledger()
    before = book.open((FILE, 100), 1, 0, 0)
    book.open((OTHER, 50), 0, 0, 0)  # nothing to send, but after `before`: released with it
    book.open((FILE, 0), 0, 0, 0)  # truncated: read again from 0
    again = book.open((FILE, 80), 1, 1, 0)
    book.acknowledged({again: (1, 1)})
    assert reports.seen == [([(FILE, 0)], {(1, 7): 0})]  # not counted: it belongs to the new content
    book.acknowledged({before: (1, 0)})
    positions, ahead = reports.seen[-1]
    assert sorted(positions, key=lambda p: p[0].inode) == [(FILE, 80), (OTHER, 50)]
    assert ahead == {(1, 7): 0, (1, 8): 0}


def test_records_skipped_after_a_restart_count_as_acknowledged() -> None:
    book, reports = ledger()
    ticket = book.open((FILE, 100), 1, 0, 2)  # two urgent records skipped, one record to send
    assert reports.seen == [([(FILE, 0)], {(1, 7): 2})]
    book.acknowledged({ticket: (1, 0)})
    assert reports.seen[-1] == ([(FILE, 100)], {(1, 7): 0})
