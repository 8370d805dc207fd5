"""Tail sampling end to end: a real edge (supervisor, 2 workers, the sampler) and a recording upstream.

Every test uses a short `decision_wait` (1 s) and rollup interval (1 s). Spans are sent
one request per span on fresh connections, so one trace's spans go through different
workers; what the upstream receives must be whole traces, and every acknowledged span
must be exported or counted in a rollup.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format

from tests.tailsampling.harness import (
    ALWAYS,
    ERRORS,
    PB,
    TailEdge,
    Upstream,
    accounted,
    log_bodies,
    log_request,
    span,
    tail_config,
)
from tests.waiting import wait_for


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream().start()
    yield up
    up.stop()


def started(tmp: Path, upstream: Upstream, policies: list[dict], **keys: object) -> TailEdge:
    return TailEdge(tmp, upstream.url, tail_config(tmp, policies, **keys)).start()


def test_a_trace_sent_through_different_workers_arrives_whole_or_not_at_all(tmp_path: Path,
                                                                           upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS])
    try:
        traces = range(1, 41)
        for t in traces:  # each span in a request of its own, on a fresh connection: the workers share a trace
            for n in range(6):
                reply = edge.post_spans([span(t, n, error=(t % 4 == 0 and n == 5))])
                assert reply.status == 200, reply.body
        kept = {t for t in traces if t % 4 == 0}
        assert wait_for(lambda: set(upstream.traces()) == kept, 20, 0.1), upstream.traces().keys()
        assert all(len(ids) == 6 for ids in upstream.traces().values())
        for export in upstream.exports():  # each trace in one request: decided and sent as a whole
            assert all(len(ids) == 6 for ids in export.spans.values())
        assert accounted(upstream, sent=40 * 6)
        assert upstream.rolled_up_calls() == 30 * 6
        assert wait_for(lambda: edge.metric('edge_tail_decisions_total{outcome=sampled,policy=errors}') == 10, 10)
        assert edge.metric("edge_tail_decisions_total{outcome=not_sampled") == 30
    finally:
        assert edge.stop() == 0


def test_errors_are_all_kept_while_probabilistic_keeps_ten_percent(tmp_path: Path, upstream: Upstream) -> None:
    ten_percent = {"name": "ten", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}}
    edge = started(tmp_path, upstream, [ERRORS, ten_percent])
    try:
        errors = set(range(1, 2001, 50))  # 40 error traces among 2,000
        for first in range(1, 2001, 100):
            batch = [span(t, n, error=(t in errors and n == 2)) for t in range(first, first + 100) for n in range(3)]
            assert edge.post_spans(batch).status == 200
        assert accounted(upstream, sent=2000 * 3)
        kept = set(upstream.traces())
        assert errors <= kept
        share = len(kept - errors) / (2000 - len(errors))
        assert 0.07 <= share <= 0.13, share
    finally:
        assert edge.stop() == 0


def test_late_spans_follow_the_cached_decision(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS],
                   decision_cache={"sampled_cache_size": 100, "non_sampled_cache_size": 100})
    try:
        edge.post_spans([span(1, 0, error=True), span(2, 0)])
        assert wait_for(lambda: 1 in upstream.traces(), 10, 0.05)
        edge.post_spans([span(1, 1), span(2, 1)])  # late: trace 1 was sampled, trace 2 was not
        assert wait_for(lambda: len(upstream.traces()[1]) == 2, 10, 0.05)
        assert accounted(upstream, sent=4)
        assert 2 not in upstream.traces()
        assert wait_for(lambda: edge.metric("edge_tail_late_spans_total{outcome=sampled}") == 1, 5)
        assert edge.metric("edge_tail_late_spans_total{outcome=not_sampled}") == 1
    finally:
        assert edge.stop() == 0


def test_without_a_cache_a_late_span_starts_a_new_trace_counted(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS])
    try:
        edge.post_spans([span(1, 0, error=True)])
        assert wait_for(lambda: 1 in upstream.traces(), 10, 0.05)
        edge.post_spans([span(1, 1)])  # decided again on its own: no error in it, not sampled
        assert accounted(upstream, sent=2)
        assert len(upstream.traces()[1]) == 1
        assert wait_for(lambda: edge.metric("edge_tail_late_spans_total{outcome=new_trace}") == 1, 5)
    finally:
        assert edge.stop() == 0


def test_buffer_bounds_decide_early_counted_and_nothing_is_missing(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS], num_traces=10, decision_wait="30s")
    try:
        for t in range(1, 51):
            assert edge.post_spans([span(t, 0, error=t % 2 == 0), span(t, 1)]).status == 200
        # 40 traces decided early (the first 40): long before their 30 s
        assert accounted(upstream, sent=40 * 2, timeout=15)
        assert set(upstream.traces()) == {t for t in range(1, 41) if t % 2 == 0}
        assert wait_for(lambda: edge.metric("edge_tail_early_decisions_total{bound=num_traces}") == 40, 5)
        assert edge.metric("edge_tail_buffered_traces") == 10
    finally:
        assert edge.stop() == 0


def test_a_killed_sampler_loses_no_acknowledged_span(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ALWAYS], decision_wait="2s")
    try:
        for t in range(1, 101):
            assert edge.post_spans([span(t, 0), span(t, 1)]).status == 200
        old = edge.kill_sampler()  # mid-wait: every trace undecided, only in the log
        assert wait_for(lambda: edge.sampler_pid() not in (None, old) and edge.sampler_listening(), 15)
        assert accounted(upstream, sent=200)
        spans = upstream.spans()
        assert len(spans) == 200
        assert set(upstream.traces()) == set(range(1, 101))
        assert edge.metric("edge_tail_replayed_traces_total{state=undecided}") == 100
        print(f"duplicates after the sampler's SIGKILL: {sum(spans.values()) - len(spans)}")
    finally:
        assert edge.stop() == 0


def test_a_killed_instance_brings_its_traces_back_after_a_restart(tmp_path: Path, upstream: Upstream) -> None:
    tail = tail_config(tmp_path, [ALWAYS], decision_wait="3s")
    edge = TailEdge(tmp_path / "a", upstream.url, tail).start()
    for t in range(1, 101):
        assert edge.post_spans([span(t, 0), span(t, 1), span(t, 2)]).status == 200
    edge.kill_all()
    assert upstream.spans() == {}
    again = TailEdge(tmp_path / "b", upstream.url, tail).start()  # the same wal_dir
    try:
        assert accounted(upstream, sent=300)
        spans = upstream.spans()
        assert len(spans) == 300 and set(upstream.traces()) == set(range(1, 101))
        print(f"duplicates after the instance's SIGKILL: {sum(spans.values()) - len(spans)}")
    finally:
        assert again.stop() == 0


def test_an_upstream_down_leaves_a_backlog_in_the_log_delivered_when_it_returns(tmp_path: Path,
                                                                               upstream: Upstream) -> None:
    """The upstream answers 503 for 30 s: exports are retried with backoff while the log holds the traces."""
    edge = started(tmp_path, upstream, [ALWAYS])
    try:
        upstream.reset(status=503, headers={"Retry-After": "1"})
        for t in range(1, 51):
            assert edge.post_spans([span(t, 0), span(t, 1)]).status == 200
        assert wait_for(lambda: len(upstream.received("/v1/traces")) >= 2, 10, 0.1)  # tried, refused
        assert edge.metric("edge_tail_wal_bytes") > 0
        time.sleep(30)  # the outage itself, not a wait for something to happen
        upstream.reset()  # forgets the refused attempts: from here on only what is delivered counts
        assert wait_for(lambda: len(upstream.spans()) == 100, 60, 0.2)
        assert wait_for(lambda: edge.metric("edge_tail_buffered_traces") == 0, 5)
    finally:
        assert edge.stop() == 0


def test_a_full_log_answers_503_with_retry_after(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ALWAYS], max_wal_bytes=64 << 10, decision_wait="30s")
    try:
        statuses = []
        for t in range(1, 400):
            reply = edge.post_spans([span(t, n) for n in range(5)])
            statuses.append(reply.status)
            if reply.status == 503:
                assert reply.header("Retry-After") == "5"
                break
        assert statuses[0] == 200 and statuses[-1] == 503
        assert edge.metric("edge_tail_wal_full_total") >= 1
    finally:
        assert edge.stop() == 0


def test_otlp_json_is_sampled_like_protobuf_and_answered_in_json(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ALWAYS])
    try:
        spans = [json_format.MessageToDict(span(t, 0)) for t in (1, 2)]
        for s in spans:  # OTLP/JSON spells ids in hex, not protobuf JSON's base64
            s["traceId"], s["spanId"] = (base64.b64decode(s[k]).hex() for k in ("traceId", "spanId"))
        body = {"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}
        reply = edge.request("POST", "/v1/traces", json.dumps(body), {"Content-Type": "application/json"})
        assert (reply.status, reply.body) == (200, b"{}")
        assert wait_for(lambda: set(upstream.traces()) == {1, 2}, 10, 0.05)
    finally:
        assert edge.stop() == 0


def test_exports_carry_the_configured_headers(tmp_path: Path, upstream: Upstream) -> None:
    """The senders' headers stay with their requests; the backend's key for exports is configured."""
    tail = tail_config(tmp_path, [ERRORS], export_headers={"DD-API-KEY": "${EXPORT_KEY}"})
    edge = TailEdge(tmp_path, upstream.url, tail, env={"EXPORT_KEY": "k-123"}).start()
    try:
        assert edge.post_spans([span(1, 0, error=True), span(2, 0)]).status == 200
        assert wait_for(lambda: upstream.received("/v1/traces") and upstream.received("/v1/metrics"), 15, 0.05)
        for path in ("/v1/traces", "/v1/metrics"):
            assert {r.header("dd-api-key") for r in upstream.received(path)} == {"k-123"}
    finally:
        assert edge.stop() == 0


def test_the_ready_line_names_tail_sampling(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS, ALWAYS])
    try:
        assert wait_for(lambda: " ready on " in edge.log(), 10)
        assert f"; tail sampling: 2 policies, decision_wait 1 s, write-ahead log in {tmp_path / 'wal'}" in edge.log()
    finally:
        assert edge.stop() == 0


def test_logs_follow_their_traces(tmp_path: Path, upstream: Upstream) -> None:
    edge = started(tmp_path, upstream, [ERRORS], logs={"follow_traces": True}, decision_wait="2s",
                   decision_cache={"non_sampled_cache_size": 100})
    try:
        assert edge.post_spans([span(1, 0, error=True), span(2, 0)]).status == 200
        reply = edge.request("POST", "/v1/logs", log_request((1, "kept with 1"), (2, "dropped with 2"),
                                                             (3, "no such trace"), (0, "no trace id")), PB)
        assert (reply.status, reply.body) == (200, b"")
        assert wait_for(lambda: sorted(log_bodies(upstream)) == ["no such trace", "no trace id"], 10, 0.05)
        assert "kept with 1" not in log_bodies(upstream)  # held while trace 1 waits for its decision
        assert wait_for(lambda: "kept with 1" in log_bodies(upstream), 10, 0.05)
        edge.request("POST", "/v1/logs", log_request((2, "late for 2")), PB)  # trace 2: decided not sampled
        reply = edge.request("POST", "/v1/logs", log_request((0, "alone")), PB)  # no trace id: forwarded as usual
        assert reply.header("X-Upstream") == "recorder"
        assert wait_for(lambda: "alone" in log_bodies(upstream), 10, 0.05)
        assert wait_for(lambda: edge.metric("edge_tail_logs_total{outcome=dropped}") == 2, 5)
        assert sorted(log_bodies(upstream)) == ["alone", "kept with 1", "no such trace", "no trace id"]
        assert edge.metric("edge_tail_logs_total{outcome=held}") == 2
        assert edge.metric("edge_tail_logs_total{outcome=sampled}") == 1
    finally:
        assert edge.stop() == 0
