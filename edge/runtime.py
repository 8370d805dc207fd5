"""Process-wide settings for processes that evaluate telemetry.

Parsing one OTLP request allocates tens of thousands of short-lived, acyclic objects.
With CPython's default cyclic-GC thresholds (700 allocations) that triggers several
collections per request, each walking every live container: about a quarter of the
engine's time in `benchmarks/engine.py`. Raising the first-generation threshold keeps
collection for real garbage cycles while taking it off the per-request path.
"""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 20)


def tune_gc() -> None:
    """Freeze start-up objects out of the collector's view and raise its thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
