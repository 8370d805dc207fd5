"""Errors every wire format raises the same way, so callers handle them once.

`BatchShapeError` comes from a batch view that finds the document is not the shape its
format promises; `UndecodableBody` from a body codec that cannot read the bytes at all.
Both mean the same to the HTTP side: forward the body raw (fail-open).
"""

from __future__ import annotations


class BatchShapeError(ValueError):
    """The decoded document is not a batch of this format (wrong types where records should be)."""


class UndecodableBody(ValueError):
    """The body is not this format in the declared encoding: the caller forwards it raw (fail-open)."""


class NestedTooDeep(UndecodableBody):
    """The body nests deeper than its parser goes (JSON over orjson's depth limit)."""
