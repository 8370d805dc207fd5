"""Process-wide settings for processes that evaluate telemetry.

Parsing one OTLP request allocates tens of thousands of short-lived, acyclic objects.
With CPython's default cyclic-GC thresholds (700 allocations) that triggers several
collections per request, each walking every live container: about a quarter of the
engine's time in `benchmarks/engine.py`. Raising the first-generation threshold keeps
collection for real garbage cycles while taking it off the per-request path.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc

GC_THRESHOLDS = (50_000, 20, 20)
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or None)
_MALLOC_TRIM = getattr(_LIBC, "malloc_trim", None)


def tune_gc() -> None:
    """Freeze start-up objects out of the collector's view and raise its thresholds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def release_free_memory() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them after a burst of large bodies).

    A worker that parsed a few 1 MB batches at once otherwise keeps its peak RSS for
    good; trimming once a second costs well under a millisecond when there is nothing to do.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
