"""Small batches take other paths than big ones, and must come out the same.

A batch of a few records is matched value by value and its attribute columns are read
record by record; a big one probes for repeated values and reads columns in C passes.
Keep decisions look only at the matched policies that can drop, and `keep_only` deletes
whole scopes and resources where every record goes. Each property below holds one path
to another on the same records: one big batch against the same records sent one at a
time, and `keep_only` against a plain rebuild of the document.
"""

from __future__ import annotations

import copy
import random

import orjson
from hypothesis import given
from hypothesis import strategies as st

from edge.engine.engine import Engine
from edge.engine.ratelimit import LocalRateLimiter
from edge.formats.otlp.body import evaluate
from edge.formats.otlp.json_batch import JsonLogs
from edge.formats.otlp.proto_batch import ProtoLogs, parse_request
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document
from tests.test_otlp_proto import JSON_TYPE, PROTO_TYPE, proto_body, to_message
from tests.test_properties import LOGS, SETTINGS, policy_body, with_ids

# ── keep_only against a rebuild ────────────────────────────────────────────

# resources -> scopes -> record count; empty scopes and resources included (they stay)
LAYOUT = st.lists(st.lists(st.integers(0, 4), max_size=3), min_size=1, max_size=4)


def _layout_doc(layout: list[list[int]]) -> dict:
    counter = iter(range(10**6))
    return {"resourceLogs": [
        {"resource": {"attributes": [{"key": "r", "value": {"intValue": str(rpos)}}]},
         "scopeLogs": [{"scope": {"name": f"s{spos}"},
                        "logRecords": [{"body": {"stringValue": f"rec-{next(counter)}"}} for _ in range(count)]}
                       for spos, count in enumerate(scopes)]}
        for rpos, scopes in enumerate(layout)]}


def _rebuilt(doc: dict, alive: int) -> dict:
    """The document keep_only must leave: kept records; scopes and resources that drops emptied go."""
    position = 0
    resources = []
    for rl in doc["resourceLogs"]:
        scopes = []
        for sl in rl["scopeLogs"]:
            records = sl["logRecords"]
            kept = [r for i, r in enumerate(records, position) if alive >> i & 1]
            position += len(records)
            if kept or not records:
                scopes.append({**sl, "logRecords": kept})
        if scopes or not rl["scopeLogs"]:
            resources.append({**rl, "scopeLogs": scopes})
    return {"resourceLogs": resources}


@SETTINGS
@given(layout=LAYOUT, seed=st.integers(0, 2**32))
def test_keep_only_leaves_what_a_rebuild_leaves(layout, seed):
    doc = _layout_doc(layout)
    n = sum(map(sum, layout))
    alive = random.Random(seed).getrandbits(n) if n else 0
    expected = _rebuilt(doc, alive)

    proto = ProtoLogs(to_message("log", doc))
    proto.keep_only(alive)
    assert proto.message == to_message("log", expected)

    json = JsonLogs(copy.deepcopy(doc))
    json.keep_only(alive)
    assert json.doc == expected


# ── one big batch against the same records one by one ──────────────────────


def _engine(policies: list[dict]) -> Engine:
    loaded = load_document({"policies": policies})
    snapshot = compile_policies(loaded.policies, load_errors=loaded.errors)
    return Engine(snapshot, rng=random.Random(0), limiter=LocalRateLimiter(clock=lambda: 1000.0))


def _singles(doc: dict) -> list[dict]:
    """Each record as a request of its own, with its resource and scope."""
    out = []
    for rl in doc["resourceLogs"]:
        for sl in rl["scopeLogs"]:
            for record in sl["logRecords"]:
                out.append({"resourceLogs": [{**rl, "scopeLogs": [{**sl, "logRecords": [record]}]}]})
    return out


def _records(doc: dict) -> list[dict]:
    return [r for rl in doc.get("resourceLogs", []) for sl in rl["scopeLogs"] for r in sl["logRecords"]]


def _counts(engine: Engine) -> dict[str, tuple[int, int]]:
    return {pid: (c.hits, c.misses) for pid, c in engine.stats.snapshot().items()}


def _without_transforms(body: dict) -> dict:
    """Transforms of a resource attribute touch the resource once per record: a big batch shares it."""
    return {"log": {k: v for k, v in body["log"].items() if k != "transform"}}


@SETTINGS
@given(doc=LOGS, bodies=st.lists(policy_body("log", deterministic=True).map(_without_transforms),
                                 min_size=1, max_size=6),
       encoding=st.sampled_from([JSON_TYPE, PROTO_TYPE]))
def test_a_big_batch_decides_as_its_records_one_by_one(doc, bodies, encoding):
    """Repeated up to 64+ records, the big batch takes the probing and C-pass paths; one record, the small ones."""
    copies = -(-64 // len(_records(doc)))
    big = {"resourceLogs": doc["resourceLogs"] * copies}
    policies = with_ids(bodies)
    encode = orjson.dumps if encoding == JSON_TYPE else (lambda d: proto_body("log", d))

    big_engine = _engine(policies)
    together = evaluate(big_engine, "log", encode(big), encoding)
    one_engine = _engine(policies)
    apart = [evaluate(one_engine, "log", encode(single), encoding) for single in _singles(big)]

    assert not together.failed and not any(single.failed for single in apart)
    assert together.outcome.kept == sum(single.outcome.kept for single in apart)
    assert _counts(big_engine) == _counts(one_engine)
    kept_apart = [r for single in apart for r in _kept(single.body, encoding)]
    assert _kept(together.body, encoding) == kept_apart


def _kept(body: bytes, encoding: str) -> list:
    """The records a forwarded body holds (JSON dicts, or protobuf LogRecords)."""
    if encoding == JSON_TYPE:
        return _records(orjson.loads(body)) if body else []
    request = parse_request("log", body)
    return [r for rl in request.resource_logs for sl in rl.scope_logs for r in sl.log_records]
