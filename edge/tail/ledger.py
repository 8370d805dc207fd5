"""Which file positions forwarded records have reached, when batches are acknowledged out of order.

Error records jump the queue (`edge.tail.priority`), so the target acknowledges batches
out of file order. A checkpoint must still never pass a record that is not acknowledged:
every block the tailer hands over opens a `Ticket` holding its position and how many of
its records are not acknowledged yet, and a ticket's position is released only when it
and every ticket before it are complete. Positions are released in the order they were
written (across files, as the sinks always did), so a restart loses nothing.

Urgent records acknowledged beyond a file's released position would be sent again by a
restart from that position. Each report therefore also says, per file, how many of the
urgent records after the position are acknowledged without a gap from the first one on
(`ahead`); the checkpoint stores the count and a restart skips exactly that many urgent
records before sending any (`ForwardSink.resume`). Each batch lane goes out oldest first,
so within a ticket the acknowledged urgent records come first; the count stops at the first
ticket with an urgent record still unacknowledged, and at a ticket that goes back in the
file (it was truncated and is read again from 0: the new content's records are not counted
against the old position).
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from edge.tail.output import Position
from edge.tail.reader import FileKey


class AheadDelivered(Protocol):
    """Reported positions, and per file the urgent records acknowledged beyond its position."""

    def __call__(self, positions: list[Position], ahead: Mapping[FileKey, int] | None = None) -> None: ...


@dataclass(eq=False, slots=True)
class Ticket:
    """One block handed to the sink: the position it reaches and its records not yet acknowledged."""

    position: Position | None
    outstanding: int  # records not acknowledged yet
    urgent: int  # its urgent records, skipped ones included
    urgent_acked: int  # of those, acknowledged (or skipped: acknowledged before a restart)

    @property
    def key(self) -> FileKey | None:
        return self.position[0].key if self.position is not None else None


class Ledger:
    """Releases positions in order as acknowledgements complete tickets (see the module doc)."""

    def __init__(self, on_delivered: AheadDelivered) -> None:
        self.on_delivered = on_delivered
        self.lock = threading.Lock()
        self.tickets: collections.deque[Ticket] = collections.deque()
        self.released: dict[FileKey, Position] = {}  # per file, the last position released

    def start(self, position: Position) -> None:
        """A file is read from `position` (nothing before it needs delivering)."""
        with self.lock:
            self.released[position[0].key] = position

    def open(self, position: Position | None, outstanding: int, urgent: int, skipped_urgent: int) -> Ticket:
        """A ticket for a block of `outstanding` records to send, `urgent` of them urgent, after
        `skipped_urgent` urgent records acknowledged before a restart."""
        ticket = Ticket(position, outstanding, urgent + skipped_urgent, skipped_urgent)
        with self.lock:
            self.tickets.append(ticket)
            self._report(self._release({ticket.key} if skipped_urgent else set()))
        return ticket

    def acknowledged(self, parts: Mapping[Ticket, tuple[int, int]]) -> None:
        """A batch is acknowledged or set aside; `parts`: ticket → (its records, its urgent records) in it."""
        with self.lock:
            touched: set[FileKey | None] = set()
            for ticket, (count, urgent) in parts.items():
                ticket.outstanding -= count
                ticket.urgent_acked += urgent
                if urgent:
                    touched.add(ticket.key)
            self._report(self._release(touched))

    def _release(self, touched: set[FileKey | None]) -> dict[FileKey, Position]:
        """Pop complete tickets from the front; the files whose report changed, with their positions."""
        while self.tickets and self.tickets[0].outstanding <= 0:
            ticket = self.tickets.popleft()
            if ticket.position is not None:
                self.released[ticket.key] = ticket.position  # type: ignore[index]
                touched.add(ticket.key)
        return {key: self.released[key] for key in touched if key is not None and key in self.released}

    def _ahead(self, key: FileKey, position: Position) -> int:
        count, offset = 0, position[1]
        for ticket in self.tickets:
            if ticket.key != key:
                continue
            if ticket.position[1] < offset:  # type: ignore[index]
                break  # the file is read again from 0 from here on
            offset = ticket.position[1]  # type: ignore[index]
            count += ticket.urgent_acked
            if ticket.urgent_acked < ticket.urgent:
                break
        return count

    def _report(self, report: dict[FileKey, Position]) -> None:
        """Called with the lock held, so that reports reach the checkpoints in the order they were made."""
        if report:
            ahead = {key: self._ahead(key, position) for key, position in report.items()}
            self.on_delivered(list(report.values()), ahead)
