"""The trace buffer and decision caches: arrival order, due traces, bounds, late spans."""

from __future__ import annotations

from edge.tailsampling.buffer import Arrival, Bound, TraceBuffer
from edge.tailsampling.decisions import DecisionCache
from edge.tailsampling.interfaces import TraceFragment


def tid(n: int) -> bytes:
    return n.to_bytes(16, "big")


def frag(n: int, size: int = 10, spans: int = 1) -> TraceFragment:
    return TraceFragment(tid(n), bytes(size), spans)


def buffer(num_traces: int = 100, max_bytes: int = 10_000, sampled: int = 0, non_sampled: int = 0) -> TraceBuffer:
    return TraceBuffer(num_traces, max_bytes, DecisionCache(sampled, non_sampled, num_traces))


def test_fragments_of_a_trace_are_held_together_and_due_in_order_of_first_arrival() -> None:
    b = buffer()
    assert b.add(frag(1), now=10.0) is Arrival.BUFFERED
    assert b.add(frag(2, spans=3), now=11.0) is Arrival.BUFFERED
    assert b.add(frag(1, size=5), now=12.0) is Arrival.BUFFERED  # joins trace 1: its arrival stays 10.0
    assert (len(b), b.spans, b.bytes) == (2, 5, 25)
    assert b.next_due(wait=5.0) == 15.0
    assert b.due(deadline_arrival=9.9) == []
    (trace_id, trace), = b.due(deadline_arrival=10.0)
    assert trace_id == tid(1) and trace.payloads == [bytes(10), bytes(5)] and trace.spans == 2
    assert [t for t, _ in b.due(deadline_arrival=100.0)] == [tid(2)]
    assert (len(b), b.spans, b.bytes, b.next_due(5.0)) == (0, 0, 0, None)


def test_beyond_num_traces_or_max_bytes_the_oldest_are_taken_out_with_the_bound_reached() -> None:
    b = buffer(num_traces=2, max_bytes=100)
    for n in range(3):
        b.add(frag(n), now=float(n))
    assert [(t, bound) for t, _, bound in b.over_bounds()] == [(tid(0), Bound.NUM_TRACES)]
    b.add(frag(7, size=95), now=5.0)  # 3 traces (one too many) and 115 bytes (15 too many)
    taken = b.over_bounds()
    assert [(t, bound) for t, _, bound in taken] == [(tid(1), Bound.NUM_TRACES), (tid(2), Bound.MAX_BUFFER_BYTES)]
    assert (len(b), b.bytes) == (1, 95)


def test_late_spans_follow_a_cached_decision() -> None:
    b = buffer(sampled=10, non_sampled=10)
    b.cache.record(tid(1), True)
    b.cache.record(tid(2), False)
    assert b.add(frag(1), now=1.0) is Arrival.FOLLOWS_SAMPLED
    assert b.add(frag(2), now=1.0) is Arrival.FOLLOWS_NOT_SAMPLED
    assert len(b) == 0


def test_without_caches_a_late_span_starts_a_new_entry_and_is_known_late() -> None:
    b = buffer()
    b.cache.record(tid(1), True)
    assert b.add(frag(1), now=1.0) is Arrival.LATE_NEW
    assert tid(1) in b
    assert b.add(frag(1), now=2.0) is Arrival.BUFFERED  # the new entry's own fragments are not late
    assert b.add(frag(3), now=2.0) is Arrival.BUFFERED


def test_caches_forget_the_least_recently_used_and_a_re_decided_trace_keeps_the_newest_outcome() -> None:
    cache = DecisionCache(sampled_size=2, non_sampled_size=1, remembered=3)
    for n in (1, 2, 3):
        cache.record(tid(n), True)
    assert [cache.follow(tid(n)) for n in (1, 2, 3)] == [None, True, True]
    cache.record(tid(3), False)
    assert cache.follow(tid(3)) is False
    cache.record(tid(4), False)
    assert cache.follow(tid(3)) is None  # non-sampled cache of one: 4 pushed 3 out
    assert not cache.was_decided(tid(1)) and cache.was_decided(tid(4))  # remembered: the last 3 decisions


def test_restored_traces_keep_their_arrival() -> None:
    b = buffer()
    b.restore(tid(5), arrived=3.0, payloads=[b"ab", b"c"], spans=4)
    b.add(frag(6), now=10.0)
    assert (b.spans, b.bytes) == (5, 13)
    assert [t for t, _ in b.due(deadline_arrival=3.0)] == [tid(5)]
