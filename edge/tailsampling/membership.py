"""Who the tail-sampling cluster's members are: a static list, or a DNS name re-resolved.

`tail_sampling.peers.static` lists `host:port` members as given. `tail_sampling.peers.dns`
names a DNS record (in Kubernetes the StatefulSet's headless Service) whose every address,
with `peers.port`, is a member; it is resolved again every `peers.interval` seconds, so
instances joining or leaving are seen within that time. Resolution runs through the event
loop's `getaddrinfo`, which asyncio and uvloop both hand to a thread: a slow resolver never
holds the loop. A failed resolution keeps the last members (a resolver hiccup must not
reshuffle every trace's owner) and is logged, at most once a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from edge.config import member_address
from edge.logs import RateLimitedLog

log = logging.getLogger(__name__)
_troubles = RateLimitedLog(log, interval=60.0)

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""A DNS name and a port to the `host:port` members it stands for; raises OSError on failure."""


class Membership(Protocol):
    """The current members, as `host:port` strings, sorted and without duplicates."""

    def members(self) -> tuple[str, ...]:
        """The members now (an empty tuple before a first successful resolution)."""
        ...

    async def start(self) -> None:
        """Learn the members a first time and keep them current (called on the sampler's loop)."""
        ...

    async def close(self) -> None:
        """Stop keeping them current."""
        ...


def normalised(members: Iterable[str]) -> tuple[str, ...]:
    """Sorted, stripped, without empty entries or duplicates: the same set gives the same tuple."""
    return tuple(sorted({m.strip() for m in members if m.strip()}))


async def resolve(name: str, port: int) -> list[str]:
    """Every address `name` resolves to, as members on `port` (getaddrinfo runs in a thread)."""
    infos = await asyncio.get_running_loop().getaddrinfo(name, port, type=socket.SOCK_STREAM)
    return [member_address(str(info[4][0]), port) for info in infos]


class StaticMembers:
    """`peers.static`: the members never change."""

    def __init__(self, members: Iterable[str]) -> None:
        self._members = normalised(members)

    def members(self) -> tuple[str, ...]:
        return self._members

    async def start(self) -> None:
        """Nothing to learn: the list is the configuration."""

    async def close(self) -> None:
        """Nothing runs."""


class DnsMembers:
    """`peers.dns`: the addresses of a DNS name on `peers.port`, resolved every `interval` seconds."""

    def __init__(self, name: str, port: int, interval: float, resolver: Resolver = resolve) -> None:
        self.name = name
        self.port = port
        self.interval = interval
        self._resolver = resolver
        self._members: tuple[str, ...] = ()
        self._task: asyncio.Task[None] | None = None

    def members(self) -> tuple[str, ...]:
        return self._members

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._every_interval(), name="tail-sampling-peers-dns")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def refresh(self) -> bool:
        """Resolve once; True when the members changed. A failure (or no address) keeps the last ones."""
        try:
            found = normalised(await self._resolver(self.name, self.port))
        except (OSError, UnicodeError) as exc:  # UnicodeError: a name with an empty or overlong label
            found, reason = (), str(exc)
        else:
            reason = "no address"
        if not found:
            _troubles.log(logging.WARNING, f"dns:{self.name}",
                          "tail sampling: resolving peers %s failed (%s); keeping the last %d members",
                          self.name, reason, len(self._members))
            return False
        if found == self._members:
            return False
        added, removed = sorted(set(found) - set(self._members)), sorted(set(self._members) - set(found))
        log.info("tail sampling: %s has %d members (added %s, removed %s)", self.name, len(found),
                 ", ".join(added) or "none", ", ".join(removed) or "none")
        self._members = found
        return True

    async def _every_interval(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.refresh()
