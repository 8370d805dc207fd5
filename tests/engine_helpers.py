"""Shared test helper: an Engine over policy dicts that must all compile cleanly."""

from __future__ import annotations

import random

from edge.engine.engine import Engine
from edge.engine.ratelimit import LocalRateLimiter
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document


def clean_engine(policies: list[dict], *, clock=None, seed: int | None = None) -> Engine:
    """Compile `policies` (asserting no decode or compile error) into an Engine.

    `clock` drives the rate limiter, `seed` the sampling RNG; both default to the real ones.
    """
    loaded = load_document({"policies": policies})
    assert loaded.errors == []
    snapshot = compile_policies(loaded.policies)
    assert snapshot.errors() == {}, snapshot.errors()
    limiter = LocalRateLimiter(clock=clock) if clock is not None else None
    return Engine(snapshot, limiter=limiter, rng=random.Random(seed) if seed is not None else None)
