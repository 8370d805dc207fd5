"""Match statistics handed from worker processes to the supervisor through a spool directory.

Each worker drains its counters about once a second into a small JSON file (written to
a temp name, then renamed, so a reader never sees half a file). The supervisor
collects and deletes the files when it syncs; what a failed sync could not deliver it
keeps in memory and merges into the next one. Files survive a worker crash, and a file
is only deleted after its counts have been read.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import orjson

from edge.engine.stats import MatchStats, PolicyCounters

_sequence = itertools.count()


def _encode(counts: dict[str, PolicyCounters]) -> bytes:
    return orjson.dumps({pid: [c.hits, c.misses, c.stages] for pid, c in counts.items()})


def _decode(data: bytes) -> dict[str, PolicyCounters]:
    return {pid: PolicyCounters(hits, misses, {s: list(v) for s, v in stages.items()})
            for pid, (hits, misses, stages) in orjson.loads(data).items()}


class StatsSpool:
    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def write(self, counts: dict[str, PolicyCounters]) -> None:
        if not counts:
            return
        name = f"{os.getpid()}-{next(_sequence)}"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(_encode(counts))
        tmp.rename(self.directory / f"{name}.json")

    def flush(self, stats: MatchStats) -> None:
        """Drain a worker's counters into the spool (put them back if the write fails)."""
        counts = stats.drain()
        try:
            self.write(counts)
        except OSError:
            stats.merge(counts)
            raise

    def collect(self) -> dict[str, PolicyCounters]:
        """Read and delete every complete file; unreadable files are left for inspection."""
        total = MatchStats()
        for path in sorted(self.directory.glob("*.json")):
            try:
                total.merge(_decode(path.read_bytes()))
            except (OSError, ValueError):
                continue
            path.unlink(missing_ok=True)
        return total.drain()
