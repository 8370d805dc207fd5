"""The sampler core with recorders for its parts: log before ack, decisions, exports, rollups, routing, replay."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from edge.tailsampling.buffer import TraceBuffer
from edge.tailsampling.decisions import DecisionCache
from edge.tailsampling.grouping import UNTRACED
from edge.tailsampling.interfaces import (
    Ack,
    Decision,
    Replayed,
    ReplayedTrace,
    Signal,
    TraceFragment,
    TraceId,
    WalFull,
)
from edge.tailsampling.routing import Routing
from edge.tailsampling.sampler import LOGS_PREFIX, TailSampler, is_logs, is_untraced
from edge.tailsampling.stats import SamplerStats

WAIT = 10.0


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def frag(n: int, payload: bytes = b"x", spans: int = 1) -> TraceFragment:
    return TraceFragment(tid(n), payload, spans)


@dataclass
class Wal:
    appended: list[tuple[list[TraceFragment], float]] = field(default_factory=list)
    decisions: list[tuple[TraceId, bool]] = field(default_factory=list)
    finished: list[TraceId] = field(default_factory=list)
    full: bool = False

    def append(self, fragments: Sequence[TraceFragment], arrived: float) -> None:
        if self.full:
            raise WalFull("full")
        self.appended.append((list(fragments), arrived))

    def decided(self, trace_id: TraceId, sampled: bool) -> None:
        self.decisions.append((trace_id, sampled))

    def done(self, trace_ids: Sequence[TraceId]) -> None:
        self.finished.extend(trace_ids)

    def replay(self) -> Replayed:
        return Replayed([], [], [])

    @property
    def bytes_used(self) -> int:
        return 0


class Decider:
    """Samples odd trace ids; traces without an id pass as the real decider passes them."""

    def decide(self, trace_id: TraceId, payloads: Sequence[bytes]) -> Decision:
        if trace_id == UNTRACED:
            return Decision(True, "(no trace id)")
        return Decision(True, "odd") if trace_id[-1] % 2 else Decision(False, "")


@dataclass
class Rollup:
    added: list[bytes] = field(default_factory=list)

    def add(self, payloads: Sequence[bytes]) -> None:
        self.added.extend(payloads)

    def collect(self) -> bytes | None:
        out, self.added = b"".join(self.added), []
        return out or None


@dataclass
class Exporter:
    submitted: list[tuple[list[TraceId], bytes, int]] = field(default_factory=list)
    refuse: bool = False

    def submit(self, trace_ids: Sequence[TraceId], payload: bytes, items: int = 0) -> bool:
        if self.refuse:
            return False
        self.submitted.append((list(trace_ids), payload, items))
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Parts:
    sampler: TailSampler
    wal: Wal
    rollup: Rollup
    exporter: Exporter
    rollup_exporter: Exporter
    logs_exporter: Exporter
    clock: Clock


def parts(num_traces: int = 100, max_bytes: int = 1 << 20, sampled_cache: int = 0, routing: Routing | None = None
          ) -> Parts:
    wal, rollup, clock = Wal(), Rollup(), Clock()
    exporter, rollup_exporter, logs_exporter = Exporter(), Exporter(), Exporter()
    buffer = TraceBuffer(num_traces, max_bytes, DecisionCache(sampled_cache, sampled_cache, num_traces))
    sampler = TailSampler(wal=wal, decider=Decider(), rollup=rollup, exporter=exporter,
                          rollup_exporter=rollup_exporter, logs_exporter=logs_exporter, buffer=buffer,
                          decision_wait=WAIT, stats=SamplerStats(CollectorRegistry()), routing=routing, clock=clock)
    return Parts(sampler, wal, rollup, exporter, rollup_exporter, logs_exporter, clock)


def submit(p: Parts, fragments: list[TraceFragment], forwarded: bool = False) -> Ack:
    return asyncio.run(p.sampler.submit(fragments, forwarded))


def test_fragments_are_logged_before_the_ack_and_decided_once_due() -> None:
    p = parts()
    assert submit(p, [frag(1, b"a"), frag(2, b"b")]) is Ack.ACCEPTED
    assert p.wal.appended == [([frag(1, b"a"), frag(2, b"b")], 1000.0)]
    p.clock.now += 5
    assert submit(p, [frag(1, b"c")]) is Ack.ACCEPTED
    p.clock.now += WAIT - 5 - 0.01
    p.sampler.tick()
    assert p.wal.decisions == []
    p.clock.now += 0.01
    p.sampler.tick()
    assert p.wal.decisions == [(tid(1), True), (tid(2), False)]
    assert p.exporter.submitted == [([tid(1)], b"ac", 2)]  # the whole trace, both fragments
    assert p.rollup.added == [b"b"]
    p.sampler.exported([tid(1)])
    assert p.wal.finished == [tid(1)]


def test_a_full_log_refuses_and_nothing_is_buffered() -> None:
    p = parts()
    p.wal.full = True
    assert submit(p, [frag(1)]) is Ack.WAL_FULL
    assert len(p.sampler.buffer) == 0


def test_a_sampler_that_stops_accepting_answers_unavailable() -> None:
    p = parts()
    p.sampler.accepting = False
    assert submit(p, [frag(1)]) is Ack.UNAVAILABLE
    assert p.wal.appended == []


def test_rollups_leave_every_interval_and_their_traces_are_done_once_sent() -> None:
    p = parts()
    submit(p, [frag(2, b"r1"), frag(4, b"r2")])
    p.clock.now += WAIT
    p.sampler.tick()
    p.sampler.send_rollup()
    assert p.rollup_exporter.submitted == [([tid(2), tid(4)], b"r1r2", 0)]
    assert p.wal.finished == []  # not before the metrics upstream acknowledged
    p.sampler.rolled_up([tid(2), tid(4)])
    assert p.wal.finished == [tid(2), tid(4)]


def test_a_refused_rollup_is_offered_again_with_the_same_traces() -> None:
    p = parts()
    submit(p, [frag(2, b"r1")])
    p.clock.now += WAIT
    p.sampler.tick()
    p.rollup_exporter.refuse = True
    p.sampler.send_rollup()
    submit(p, [frag(4, b"r2")])
    p.clock.now += WAIT
    p.sampler.tick()
    p.rollup_exporter.refuse = False
    p.sampler.send_rollup()  # first the refused interval, as collected
    p.sampler.send_rollup()  # then the next
    assert p.rollup_exporter.submitted == [([tid(2)], b"r1", 0), ([tid(4)], b"r2", 0)]


def test_a_full_export_queue_keeps_the_sampled_traces_for_the_next_tick() -> None:
    p = parts()
    submit(p, [frag(1, b"s")])
    p.clock.now += WAIT
    p.exporter.refuse = True
    p.sampler.tick()
    assert p.exporter.submitted == []
    p.exporter.refuse = False
    p.sampler.tick()
    assert p.exporter.submitted == [([tid(1)], b"s", 1)]


def test_a_refusing_exporter_keeps_the_order_of_the_traces_it_refused() -> None:
    p = parts()
    submit(p, [frag(1, b"a"), frag(3, b"b"), frag(5, b"c")])
    p.clock.now += WAIT
    p.exporter.refuse = True
    p.sampler.tick()
    p.exporter.refuse = False
    p.sampler.flush()
    assert [(ids, payload) for ids, payload, _ in p.exporter.submitted] == [
        ([tid(1)], b"a"), ([tid(3)], b"b"), ([tid(5)], b"c")]


def test_bounds_decide_the_oldest_early() -> None:
    p = parts(num_traces=2)
    submit(p, [frag(1)])
    submit(p, [frag(3)])
    submit(p, [frag(5)])
    assert [t for t, _ in p.wal.decisions] == [tid(1)]
    p.sampler.flush()
    assert p.exporter.submitted[0][0] == [tid(1)]


def test_late_spans_follow_the_cached_decision() -> None:
    p = parts(sampled_cache=10)
    submit(p, [frag(1, b"a"), frag(2, b"b")])
    p.clock.now += WAIT
    p.sampler.tick()
    submit(p, [frag(1, b"late-s"), frag(2, b"late-n")])
    assert len(p.sampler.buffer) == 0
    p.sampler.flush()
    assert p.exporter.submitted[-1] == ([tid(1)], b"late-s", 1)
    assert p.rollup.added == [b"b", b"late-n"]


def test_a_late_span_keeps_its_trace_in_the_log_until_its_own_export_is_acknowledged() -> None:
    """The first export's acknowledgement must not let the log drop a late span still on its way."""
    p = parts(sampled_cache=10)
    submit(p, [frag(1, b"a"), frag(2, b"b")])
    p.clock.now += WAIT
    p.sampler.tick()
    submit(p, [frag(1, b"late-s"), frag(2, b"late-n")])
    p.sampler.flush()
    p.sampler.exported([tid(1)])  # the first export of trace 1 is acknowledged, the late span's is not
    assert tid(1) not in p.wal.finished
    p.sampler.exported([tid(1)])
    assert p.wal.finished.count(tid(1)) == 1
    p.sampler.send_rollup()  # both parts of trace 2 are in this rollup
    assert tid(2) not in p.wal.finished
    p.sampler.rolled_up(p.rollup_exporter.submitted[-1][0])
    assert p.wal.finished.count(tid(2)) == 1


def test_spans_without_a_trace_id_pass_through_at_once_each_fragment_logged_apart() -> None:
    p = parts()
    submit(p, [TraceFragment(UNTRACED, b"u", 3)])
    submit(p, [TraceFragment(UNTRACED, b"v", 1)])
    p.sampler.flush()
    assert [(payload, spans) for _, payload, spans in p.exporter.submitted] == [(b"u", 3), (b"v", 1)]
    (first,), (second,) = (ids for ids, _, _ in p.exporter.submitted)
    assert is_untraced(first) and is_untraced(second) and first != second
    assert [f.trace_id for fragments, _ in p.wal.appended for f in fragments] == [first, second]
    p.sampler.exported([first])  # one acknowledged: the log lets go of that fragment only
    assert p.wal.finished == [first]
    assert len(p.sampler.buffer) == 0


def test_replayed_traces_keep_their_wait_and_decided_ones_leave() -> None:
    p = parts()
    p.sampler.restore(Replayed(undecided=[ReplayedTrace(tid(1), 995.0, [b"u"])],
                               to_export=[ReplayedTrace(tid(3), 990.0, [b"e"])],
                               to_rollup=[ReplayedTrace(tid(2), 990.0, [b"r"])]))
    p.sampler.flush()
    assert p.exporter.submitted == [([tid(3)], b"e", 0)]
    assert p.rollup.added == [b"r"]
    p.clock.now = 995.0 + WAIT - 0.1
    p.sampler.tick()
    assert len(p.sampler.buffer) == 1
    p.clock.now = 995.0 + WAIT
    p.sampler.tick()
    assert p.exporter.submitted[-1][0] == [tid(1)]


class Router:
    def __init__(self, unreachable: bool = False) -> None:
        self.routed: list[list[TraceFragment]] = []
        self.got: list[TraceFragment] = []
        self.signals: list[Signal] = []
        self.unreachable = unreachable

    async def route(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> list[TraceFragment]:
        """Trace ids above 100 belong to a peer."""
        local = [f for f in fragments if f.trace_id[-1] <= 100]
        remote = [f for f in fragments if f.trace_id[-1] > 100]
        self.routed.append(remote)
        self.signals.append(signal)
        return local + remote if self.unreachable else local

    def received(self, fragments: Sequence[TraceFragment], signal: Signal = Signal.TRACES) -> None:
        self.got.extend(fragments)
        self.signals.append(signal)


def test_fragments_owned_elsewhere_are_forwarded_unless_buffered_here_or_forwarded_already() -> None:
    router = Router()
    p = parts(routing=Routing(router))
    submit(p, [frag(1), frag(101)])
    assert p.wal.appended[-1][0] == [frag(1)]
    submit(p, [frag(102)], forwarded=True)  # from a peer: kept, counted
    assert router.got == [frag(102)] and tid(102) in p.sampler.buffer
    submit(p, [frag(102, b"again"), frag(103)])  # 102 is buffered here: it stays; 103 moves
    assert router.routed[-1] == [frag(103)]
    assert p.wal.appended[-1][0] == [frag(102, b"again")]


def test_spans_without_a_trace_id_are_never_routed() -> None:
    router = Router()
    p = parts(routing=Routing(router))
    submit(p, [TraceFragment(UNTRACED, b"u", 1), frag(101)])
    assert router.routed == [[frag(101)]]
    p.sampler.flush()
    assert [payload for _, payload, _ in p.exporter.submitted] == [b"u"]


def test_fragments_whose_owner_is_unreachable_are_kept_here() -> None:
    p = parts(routing=Routing(Router(unreachable=True)))
    submit(p, [frag(101)])
    assert tid(101) in p.sampler.buffer


# ── logs following their traces ──


def logs(n: int, payload: bytes = b"L", records: int = 1) -> TraceFragment:
    return TraceFragment(tid(n) if n else UNTRACED, payload, records)


def test_log_records_of_a_buffered_trace_leave_with_it_and_are_dropped_with_it() -> None:
    p = parts()
    submit(p, [frag(1), frag(2)])
    assert p.sampler.submit_logs([logs(1, b"l1"), logs(2, b"l2", 2)]) is Ack.ACCEPTED
    assert [f.payload for fragments, _ in p.wal.appended[1:] for f in fragments] == [tid(1) + b"l1", tid(2) + b"l2"]
    p.sampler.flush()
    assert p.logs_exporter.submitted == []  # held
    p.clock.now += WAIT
    p.sampler.tick()
    (key, ), payload, records = p.logs_exporter.submitted[0]
    assert (payload, records) == (b"l1", 1) and is_logs(key)
    assert len(p.logs_exporter.submitted) == 1  # trace 2 was not sampled: its records are gone
    dropped = [f.trace_id for fragments, _ in p.wal.appended for f in fragments if f.payload == tid(2) + b"l2"]
    assert dropped[0] in p.wal.finished  # and gone from the log at once
    p.sampler.logs_exported([key])
    assert key in p.wal.finished


def test_log_records_without_a_buffered_trace_pass_at_once_unless_their_trace_was_dropped() -> None:
    p = parts(sampled_cache=10)
    submit(p, [frag(2)])
    p.clock.now += WAIT
    p.sampler.tick()  # trace 2: not sampled, remembered
    assert p.sampler.submit_logs([logs(0, b"untraced"), logs(7, b"unknown"), logs(2, b"late")]) is Ack.ACCEPTED
    p.sampler.flush()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"untraced", b"unknown"]


def route_logs(p: Parts, fragments: list[TraceFragment], forwarded: bool = False) -> Ack:
    return asyncio.run(p.sampler.route_logs(fragments, forwarded))


def test_log_records_owned_elsewhere_go_to_the_owner_unless_their_trace_is_buffered_here() -> None:
    router = Router()
    p = parts(routing=Routing(router))
    submit(p, [frag(1), frag(104)], forwarded=True)  # both traces buffered here, 104 though a peer owns it
    router.signals.clear()
    assert route_logs(p, [logs(1, b"l1"), logs(104, b"l104"), logs(102, b"l102"), logs(0, b"u")]) is Ack.ACCEPTED
    assert (router.routed[-1], router.signals) == ([logs(102, b"l102")], [Signal.LOGS])  # only 102 moves
    p.sampler.flush()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"u"]  # no trace id: passed at once
    p.clock.now += WAIT
    p.sampler.tick()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"u", b"l1"]  # held with 1, dropped with 104


def test_log_records_a_peer_forwarded_are_never_routed_again() -> None:
    router = Router()
    p = parts(routing=Routing(router))
    submit(p, [frag(102)], forwarded=True)
    router.signals.clear()
    assert route_logs(p, [logs(102, b"held"), logs(103, b"passed")], forwarded=True) is Ack.ACCEPTED
    assert router.routed == [] and router.got[-2:] == [logs(102, b"held"), logs(103, b"passed")]
    assert router.signals == [Signal.LOGS]
    p.sampler.flush()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"passed"]


def test_log_records_whose_owner_is_unreachable_pass_here() -> None:
    p = parts(routing=Routing(Router(unreachable=True)))
    assert route_logs(p, [logs(101, b"l101")]) is Ack.ACCEPTED
    p.sampler.flush()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"l101"]


def test_held_log_records_come_back_with_their_trace_after_a_restart() -> None:
    p = parts()
    key, other = LOGS_PREFIX + bytes(8), LOGS_PREFIX + bytes(7) + b"\x01"
    p.sampler.restore(Replayed(undecided=[ReplayedTrace(tid(1), 995.0, [b"s"]),
                                          ReplayedTrace(key, 996.0, [tid(1) + b"held"]),
                                          ReplayedTrace(other, 996.0, [tid(9) + b"orphan"])],
                               to_export=[], to_rollup=[]))
    p.sampler.flush()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"orphan"]  # its trace is not buffered
    p.clock.now = 995.0 + WAIT
    p.sampler.tick()
    assert [payload for _, payload, _ in p.logs_exporter.submitted] == [b"orphan", b"held"]
