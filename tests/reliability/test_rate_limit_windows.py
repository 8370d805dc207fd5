"""An "N/s" rate limit across two workers, over several windows: N per window for the instance.

The windows live in shared memory and are spent by every worker. Two faults would go unseen
by a single-window test: a window that never rolls over (after the first second the policy
drops everything) and windows that are per worker (the instance lets N per worker through).
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.reliability.harness import EdgeProcess, FaultUpstream, otlp_document, records_of

RATE = 20
SECONDS = 6.5  # spans six whole windows and part of a seventh
CAP = {"id": "cap-acme", "name": "cap acme",
       "log": {"match": [{"log_attribute": "tenant", "exact": "acme"}], "keep": f"{RATE}/s"}}


def _post(edge: EdgeProcess, body: bytes) -> int:
    return edge.request("POST", "/v1/logs", body, {"Content-Type": "application/json", "Connection": "close"}).status


def test_rate_limit_grants_rate_per_window_shared_by_workers(tmp_path: Path) -> None:
    upstream = FaultUpstream().start()
    edge = EdgeProcess(tmp_path, upstream.url, policies=[CAP], workers=2)
    try:
        edge.start()
        records = [{"body": {"stringValue": f"r{i}"},
                    "attributes": [{"key": "tenant", "value": {"stringValue": "acme"}}]} for i in range(5)]
        body = json.dumps(otlp_document("log", records)).encode()
        started = time.monotonic()
        sent = 0
        with ThreadPoolExecutor(4) as pool:  # new connections, so both workers take requests
            while time.monotonic() - started < SECONDS:
                statuses = list(pool.map(lambda _: _post(edge, body), range(4)))
                assert statuses == [200] * 4
                sent += 4 * len(records)
                time.sleep(0.05)  # pacing the load across the windows under test (not synchronisation)
        elapsed = time.monotonic() - started
        delivered = sum(len(records_of("log", r.body, False)) for r in upstream.received("/v1/logs"))
        # Windows last at least a second and the first may have begun when the policy loaded, so
        # the run touches between int(elapsed) and int(elapsed) + 2 of them; per-worker windows
        # would let about twice that through, a window that never rolls over only RATE.
        assert sent > 3 * RATE * (int(elapsed) + 2), "the load did not exceed the rate: nothing was tested"
        assert RATE * int(elapsed) <= delivered <= RATE * (int(elapsed) + 2), (
            f"{delivered} records passed in {elapsed:.1f} s at {RATE}/s")
    finally:
        edge.stop()
        upstream.stop()
