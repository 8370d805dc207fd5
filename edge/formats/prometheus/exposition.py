"""Metric policies on a Prometheus / OpenMetrics text exposition, filtered chunk by chunk.

Every sample line is one record: NAME is the sample name as written (`http_seconds_bucket`),
DESCRIPTION, UNIT and metric_type come from the `# HELP` / `# UNIT` / `# TYPE` lines of the
family the sample belongs to (`_bucket`, `_sum`, `_count`, `_total`, `_created`... samples
belong to the family they extend), and `datapoint_attribute: [label]` is that label's value
(an empty value is an absent label, as in Prometheus). `# HELP` / `# TYPE` / `# UNIT` are
held and written just before the family's first kept sample, so a family whose every sample
was dropped leaves no trace.

Per-line Python would eat the whole budget (about 1 µs a line), so the complete lines of a
chunk are split once and every sample name is found with one regex pass. Decisions are made
per distinct name in a family context (`prometheus_policies`), cached for the snapshot's
lifetime, and applied to the lines with C-level passes. Lines that a policy testing labels
may match first get the outcome their name has without labels; one Hyperscan scan
(`prometheus_labels`) then finds the lines where a tested label, or a literal a condition
looks for, occurs, and only those are evaluated again, together. Lines longer than the 4 KiB
line buffer pass unfiltered, so does anything whose name or label set cannot be read, and
after an internal error the rest of the scrape.
"""

from __future__ import annotations

import logging
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate, compress, count
from operator import add, and_
from typing import Any

from edge.engine.engine import Engine
from edge.formats.prometheus.labels import unescape
from edge.formats.prometheus.policies import PASS, Context, Verdict, add_rows, scrape_policies

log = logging.getLogger(__name__)

LINE_MAX = 4096  # the line buffer: longer lines pass through unfiltered
EOF_LINE = b"# EOF\n"

# TYPE -> (metric_type, aggregation_temporality) as OTLP carries such a family.
GAUGE, SUM, HISTOGRAM, SUMMARY = 1, 2, 3, 5
CUMULATIVE = 2
_TYPES: dict[bytes, tuple[int, int | None]] = {
    b"counter": (SUM, CUMULATIVE),
    b"gauge": (GAUGE, None),
    b"histogram": (HISTOGRAM, CUMULATIVE),
    b"gaugehistogram": (HISTOGRAM, None),
    b"summary": (SUMMARY, None),
}
# Sample names that belong to a family besides the family name itself.
_SUFFIXES: dict[bytes, frozenset[bytes]] = {
    b"counter": frozenset({b"_total", b"_created"}),
    b"histogram": frozenset({b"_bucket", b"_sum", b"_count", b"_created"}),
    b"gaugehistogram": frozenset({b"_bucket", b"_gsum", b"_gcount"}),
    b"summary": frozenset({b"_sum", b"_count", b"_created"}),
    b"info": frozenset({b"_info"}),
}

# One match per line of b"\n" + text: "#" for a comment, else the sample name (b"" when none).
_LINE_NAMES = re.compile(rb"\n[ \t]*(#|[^{ \t\n#]*)")
_VALID_NAME = re.compile(rb"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_HEADER = re.compile(rb"[ \t]*#[ \t]+(HELP|TYPE|UNIT)[ \t]+([^ \t\r]+)(?:[ \t]+(.*?))?[ \t\r]*\Z", re.S)
_LONG = b"\n"  # stands for the name of a line over LINE_MAX: no real name contains a newline
_COMMENT = b"#"
_FAMILY_NAMES_MAX = 10_000


class LineCut(Exception):
    """A byte limit fell inside a line already partly forwarded (only a >4 KiB line can be)."""


@dataclass(slots=True, eq=False)
class Family:
    """The family the latest headers describe, and its headers not written yet."""

    name: bytes = b""
    kind: bytes = b""
    help: bytes | None = None
    unit: bytes | None = None
    held: list[bytes] = field(default_factory=list)
    # per sample name, valid until the headers change: its verdict, and whether it belongs here
    verdicts: dict[bytes, Verdict] = field(default_factory=dict)
    members: dict[bytes, bool] = field(default_factory=dict)

    def is_member(self, sample: bytes) -> bool:
        name = self.name
        if not name or not sample.startswith(name):
            return False
        return sample == name or sample[len(name):] in _SUFFIXES.get(self.kind, ())

    def context(self, sample: bytes, member: bool) -> tuple[tuple[bytes, Any], Context]:
        """Cache key and fields of a sample of this name here (a non-member knows only its name)."""
        text = sample.decode("ascii")
        if not member:
            return (sample, None), Context(text)
        metric_type, temporality = _TYPES.get(self.kind, (None, None))
        description = unescape(self.help).decode("utf-8", "replace") if self.help else None
        unit = self.unit.decode("utf-8", "replace") if self.unit else None
        key = (sample, (self.kind, self.help, self.unit))
        return key, Context(text, description, unit, metric_type, temporality)


@dataclass(slots=True)
class SampleRun:
    """Lines start..stop-1 are samples (or blank); `members`: which of their names belong to the family."""

    start: int
    stop: int
    members: dict[bytes, bool]


@dataclass(slots=True)
class Header:
    """A HELP / TYPE / UNIT line, held until its family's first kept sample."""

    line: bytes
    family: Family


@dataclass(slots=True)
class Comment:
    """Any other comment: forwarded where it stands."""

    line: bytes


Step = SampleRun | Header | Comment


@dataclass(slots=True)
class ChunkPlan:
    """Pass one over a chunk: the steps in order, and which lines labels may decide.

    `dynamic[i]` is set for line i when a policy testing labels may match it; `run_starts`,
    `run_stops` and `run_verdicts` hold the bounds of every sample run with such lines and the
    verdicts of their names there.
    """

    steps: list[Step] = field(default_factory=list)
    dynamic: bytearray | None = None
    dynamic_count: int = 0
    run_starts: list[int] = field(default_factory=list)
    run_stops: list[int] = field(default_factory=list)
    run_verdicts: list[dict[bytes, Verdict]] = field(default_factory=list)

    def verdict_at(self, line: int, name: bytes) -> Verdict:
        return self.run_verdicts[bisect_right(self.run_starts, line) - 1][name]


@dataclass(slots=True)
class Records:
    """Sample lines evaluated and kept, for the proxy's own metrics."""

    evaluated: int = 0
    kept: int = 0


class ScrapeFilter:
    """Filters one exposition fed in chunks of any size; the output is whole lines.

    `feed()` returns the filtered bytes of every line completed so far and `finish()` the
    rest. Byte limits (0 = unlimited) and `stop()` end the output at a line boundary:
    `truncated` then names the limit ("input", "output" or the stop's reason), `done` is set
    and further input is ignored.
    An OpenMetrics exposition cut short still ends with `# EOF`.
    """

    def __init__(self, engine: Engine, *, max_input: int = 0, max_output: int = 0,
                 openmetrics: bool = False) -> None:
        self.engine = engine
        self.policies = scrape_policies(engine.snapshot)
        self.max_input = max_input
        self.max_output = max_output
        self.openmetrics = openmetrics
        self.family = Family()
        self.carry = b""  # the incomplete last line, at most LINE_MAX bytes
        self.in_long_line = False  # passing a line longer than LINE_MAX through
        self.line_open = False  # the output so far ends inside a line
        self.eof_written = False
        self.bytes_in = 0
        self.bytes_out = 0
        self.done = False
        self.unfiltered = False  # an internal error happened: the rest goes through as it is
        self.truncated: str | None = None
        self.records = Records()
        self._stats: dict[str, list[int]] = {}

    # ── public ──

    def feed(self, data: bytes) -> bytes:
        if self.done or not data:
            return b""
        input_cut = bool(self.max_input) and self.bytes_in + len(data) > self.max_input
        if input_cut:
            data = data[:self.max_input - self.bytes_in]
        self.bytes_in += len(data)
        out: list[bytes] = []
        if self.in_long_line:
            end = data.find(b"\n") + 1
            if not end:
                return self._emit([data], "input" if input_cut else None)
            out.append(data[:end])
            data = data[end:]
            self.in_long_line = False
        buffer = self.carry + data if self.carry else data
        cut = buffer.rfind(b"\n") + 1
        self.carry = buffer[cut:]
        if cut:
            out.append(self._complete_lines(buffer[:cut] if cut < len(buffer) else buffer))
        if input_cut:
            self.carry = b""
        elif len(self.carry) > LINE_MAX:
            out.append(self._long_line_start(self.carry))
            self.carry = b""
        return self._emit(out, "input" if input_cut else None)

    def stop(self, reason: str) -> bytes:
        """End the scrape now, before its body ended (`reason` names what ended it, e.g. "time").

        The incomplete last line is dropped, never sent cut, like at the input limit; an
        OpenMetrics exposition still gets its `# EOF`. LineCut when the output so far ends
        inside a line over LINE_MAX: that line cannot be ended cleanly.
        """
        if self.done:
            return b""
        self.carry = b""
        return self._emit([], reason)

    def finish(self) -> bytes:
        """The upstream body ended: a last line without a newline is filtered too."""
        if self.done:
            return b""
        out = []
        if self.carry:
            out.append(self._complete_lines(self.carry + b"\n")[:-1])
            self.carry = b""
        self.done = True
        return self._emit(out)

    def drain(self) -> Records:
        """Records evaluated and kept since the last call; match statistics go to the engine."""
        if self._stats:
            self.engine.stats.add_many([(pid, hits, misses) for pid, (hits, misses) in self._stats.items()
                                        if hits or misses])
            self._stats = {}
        records, self.records = self.records, Records()
        return records

    # ── output and limits ──

    def _emit(self, pieces: list[bytes], cut_by: str | None = None) -> bytes:
        """Output within the output limit; when a limit ends the scrape, the one reached first is named."""
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        tail = EOF_LINE if self.openmetrics and not self.eof_written else b""
        limit = self.max_output
        if limit and self.bytes_out + len(data) + (len(tail) if cut_by else 0) > limit:
            room = max(0, limit - self.bytes_out - len(tail))
            data = data[:data.rfind(b"\n", 0, room) + 1]
            cut_by = "output"  # it cut what came before the input limit or the stop
        if data:
            self.line_open = not data.endswith(b"\n")
        if cut_by:
            self.truncated = cut_by
            self.done = True
            if self.line_open:
                raise LineCut(f"the {self.truncated} limit fell inside a line longer than {LINE_MAX} bytes")
            data += tail
        self.bytes_out += len(data)
        return data

    def _long_line_start(self, head: bytes) -> bytes:
        """A line over LINE_MAX with no end yet: forwarded as it comes, after held headers if a sample."""
        self.in_long_line = True
        if head.lstrip()[:1] == b"#":
            return head
        held, self.family.held = self.family.held, []
        return b"".join(line + b"\n" for line in held) + head

    # ── complete lines ──

    def _complete_lines(self, text: bytes) -> bytes:
        """The lines to forward for `text` (whole lines); after an internal error, all of them (fail-open)."""
        if self.unfiltered:
            return text
        held = list(self.family.held)
        try:
            return self._filter(text)
        except Exception:  # noqa: BLE001 - never lose or corrupt the exposition over a bug here
            log.exception("filtering a Prometheus exposition failed; forwarding the rest of it unfiltered")
            self.unfiltered = True
            return b"".join(line + b"\n" for line in held) + text

    def _filter(self, text: bytes) -> bytes:
        """Complete lines (`text` ends with a newline) -> the lines to forward."""
        lines = text.split(b"\n")
        lines.pop()
        names = _LINE_NAMES.findall(b"\n" + text)
        names.pop()
        if max(map(len, lines)) > LINE_MAX:
            for i, line in enumerate(lines):
                if len(line) > LINE_MAX and names[i] != _COMMENT:
                    names[i] = _LONG  # a long comment stays a comment, forwarded where it stands
        keep = bytearray(len(lines))
        first_family = self.family
        plan = self._plan(lines, names, keep)
        if plan.dynamic_count:
            self._relabel(text, lines, names, keep, plan)
        return self._assemble(lines, names, keep, plan.steps, first_family)

    def _relabel(self, text: bytes, lines: list[bytes], names: list[bytes], keep: bytearray,
                 plan: ChunkPlan) -> None:
        """Lines labels may decide got their label-less outcome in pass one: correct those with labels.

        When most lines are such lines the chunk itself is scanned, else only they are, joined.
        """
        dynamic = plan.dynamic
        assert dynamic is not None and self.policies.locator is not None
        index: list[int] | None = None
        wanted: bytearray | None = dynamic
        region = text
        selected = lines
        if plan.dynamic_count * 2 < len(lines):
            index = list(compress(range(len(lines)), dynamic))
            selected = list(map(lines.__getitem__, index))
            region = b"\n".join(selected) + b"\n"
            wanted = None
        next_starts = list(map(add, accumulate(map(len, selected)), count(1)))
        located = self.policies.locator.locate(region, selected, next_starts, wanted,
                                               self._wanted_keys(plan, names, index))
        touched = sorted(located.malformed.union(located.lines))
        if not touched:
            return
        where = touched if index is None else list(map(index.__getitem__, touched))
        verdict_of = dict(zip(touched, map(plan.verdict_at, where, map(names.__getitem__, where)), strict=True))
        records, stats = self.records, self._stats
        for verdict, times in Counter(verdict_of.values()).items():  # undo their label-less outcome
            add_rows(stats, verdict.rows, -times)
            records.evaluated -= times
            records.kept -= times * verdict.keep
        for i in where:
            keep[i] = 1  # malformed lines pass; the others are set below
        evaluated = located.lines
        if not evaluated:
            return
        position = dict(zip(evaluated, range(len(evaluated)), strict=True))
        labels = [dict(zip(map(position.__getitem__, values), values.values(), strict=True))
                  for values in located.values]
        holds = None
        if located.holds is not None:
            holds = {ci: list(map(position.__getitem__, filter(position.__contains__, found)))
                     for ci, found in located.holds.items()}
        flags = self.policies.evaluate(list(map(verdict_of.__getitem__, evaluated)), labels, stats, holds,
                                       [position[i] for i in located.exact if i in position])
        for i, flag in zip(evaluated if index is None else map(index.__getitem__, evaluated), flags, strict=True):
            keep[i] = flag
        records.evaluated += len(evaluated)
        records.kept += len(evaluated) - flags.count(0)

    def _wanted_keys(self, plan: ChunkPlan, names: list[bytes], index: list[int] | None
                     ) -> list[bytearray | None] | None:
        """Per label key looked for by every occurrence: the lines where it can change an outcome.

        None for a key that matters on every line labels may decide (and for all keys when no
        key is looked for that way): a value found where no policy can use it is only work.
        """
        locator = self.policies.locator
        assert locator is not None and plan.dynamic is not None
        if not locator.dense:
            return None
        out: list[bytearray | None] = []
        runs = list(zip(plan.run_starts, plan.run_stops, plan.run_verdicts, strict=True))
        for k in range(len(locator.keys)):
            needing = [{name for name, v in verdicts.items() if v.label_keys >> k & 1} for _, _, verdicts in runs]
            if k not in locator.dense or all(len(need) == len(run[2]) for need, run in zip(needing, runs, strict=True)):
                out.append(None)
                continue
            wanted = bytearray(len(names))
            for (a, b, verdicts), need in zip(runs, needing, strict=True):
                if len(need) == len(verdicts):
                    wanted[a:b] = plan.dynamic[a:b]
                elif need:
                    wanted[a:b] = bytes(map(need.__contains__, names[a:b]))
            out.append(wanted if index is None else bytearray(map(wanted.__getitem__, index)))
        return out

    def _plan(self, lines: list[bytes], names: list[bytes], keep: bytearray) -> ChunkPlan:
        """Pass one: family headers, the static keep flag of every line, the lines that need labels."""
        plan = ChunkPlan()
        n = len(names)
        start = 0
        while start < n:
            try:
                stop = names.index(_COMMENT, start)
            except ValueError:
                stop = n
            if stop > start:
                self._plan_samples(start, stop, names, keep, plan)
            if stop < n:
                plan.steps.append(self._comment(lines[stop]))
            start = stop + 1
        return plan

    def _plan_samples(self, a: int, b: int, names: list[bytes], keep: bytearray, plan: ChunkPlan) -> None:
        family = self.family
        if len(family.verdicts) > _FAMILY_NAMES_MAX:
            family.verdicts.clear()
            family.members.clear()
        run = names[a:b]
        counts = Counter(run)
        verdicts = family.verdicts
        unknown = [name for name in counts if name not in verdicts]
        if unknown:
            self._resolve(unknown)
        if len(counts) == 1:
            keep[a:b] = (b"\x01" if verdicts[run[0]].keep else b"\x00") * len(run)
        else:
            flag_of = {name: verdicts[name].keep for name in counts}
            keep[a:b] = bytes(map(flag_of.__getitem__, run))
        records = self.records
        dynamic: dict[bytes, Verdict] = {}
        for name, times in counts.items():
            verdict = verdicts[name]
            if verdict is PASS:
                continue
            if verdict.dynamic:
                dynamic[name] = verdict
            records.evaluated += times
            records.kept += times if verdict.keep else 0
            add_rows(self._stats, verdict.rows, times)
        if dynamic:
            if plan.dynamic is None:
                plan.dynamic = bytearray(len(names))
            plan.dynamic[a:b] = (b"\x01" * len(run) if len(dynamic) == len(counts)
                                 else bytes(map(dynamic.__contains__, run)))
            plan.dynamic_count += sum(counts[name] for name in dynamic)
            plan.run_starts.append(a)
            plan.run_stops.append(b)
            plan.run_verdicts.append(dynamic)
        plan.steps.append(SampleRun(a, b, {name: family.members[name] for name in counts}))

    def _resolve(self, names: list[bytes]) -> None:
        """Verdicts for names new in this family context: from the snapshot's cache, else evaluated."""
        family = self.family
        cache = self.policies.verdicts
        keys, contexts, pending = [], [], []
        for name in names:
            if name == _LONG or not _VALID_NAME.match(name):
                family.verdicts[name] = PASS
                family.members[name] = name == _LONG  # a long sample line takes the held headers
                continue
            member = family.members[name] = family.is_member(name)
            key, context = family.context(name, member)
            verdict = cache.get(key)
            if verdict is None:
                keys.append(key)
                contexts.append(context)
                pending.append(name)
            else:
                family.verdicts[name] = verdict
        if keys:
            for name, verdict in zip(pending, self.policies.resolve(keys, contexts), strict=True):
                family.verdicts[name] = verdict

    def _comment(self, line: bytes) -> Step:
        """HELP / TYPE / UNIT set the family context and are held; other comments stay where they are."""
        m = _HEADER.match(line) if len(line) <= LINE_MAX else None
        if m is None:
            return Comment(line)
        what, name, value = m.group(1), m.group(2), m.group(3) or b""
        family = self.family
        if name != family.name:
            self.family = family = Family(name)
        else:
            family.verdicts = {}
            family.members = {}
        if what == b"TYPE":
            family.kind = value
        elif what == b"HELP":
            family.help = value
        else:
            family.unit = value
        return Header(line, family)

    def _assemble(self, lines: list[bytes], names: list[bytes], keep: bytearray, steps: list[Step],
                  family: Family) -> bytes:
        """Pass two: kept lines in order, each family's held headers just before its first kept sample."""
        out: list[bytes] = []
        for step in steps:
            if step.__class__ is SampleRun:
                a, b = step.start, step.stop
                flags = keep[a:b]
                if family.held:
                    first = _first_kept_member(flags, names[a:b], step.members)
                    if first >= 0:
                        kept = list(compress(lines[a:b], flags))
                        before = flags.count(1, 0, first)
                        out.extend(kept[:before])
                        out.extend(family.held)
                        family.held = []
                        out.extend(kept[before:])
                        continue
                out.extend(compress(lines[a:b], flags) if 0 in flags else lines[a:b])
            elif step.__class__ is Header:
                if step.family is not family:
                    family.held = []  # a new family begins: the old one's unwritten headers go
                    family = step.family
                family.held.append(step.line)
            else:
                out.append(step.line)
                if step.line.strip() == b"# EOF":
                    self.eof_written = True
        if not out:
            return b""
        out.append(b"")
        return b"\n".join(out)


def _first_kept_member(flags: bytearray, run: list[bytes], members: dict[bytes, bool]) -> int:
    """Index of the first kept line of a run that belongs to the family, or -1."""
    if all(members.values()):
        return flags.find(1)
    return bytes(map(and_, flags, map(members.__getitem__, run))).find(1)
