"""Every format's batch views provide the batch interface the engine is written against.

`edge.engine.batch` declares what the engine, matching, transforms and extension dispatch
ask of a batch; nothing checks it on the request path, so this test is where a view that
loses or renames a member (or takes different arguments) is caught. It also checks that
the layers tell views apart: a metric view is no `LogBatch`, a Prometheus view no `Batch`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, Protocol

import pytest

from edge.engine.batch import Batch, LogBatch, Matchable, TraceBatch
from edge.formats.datadog.batch import DatadogLogs, DatadogSeries
from edge.formats.datadog.proto_series import DatadogProtoSeries, parse_payload
from edge.formats.lines.batch import LineBatch
from edge.formats.otlp.json_batch import JsonLogs, JsonMetrics, JsonTraces
from edge.formats.otlp.proto_batch import REQUESTS, ProtoLogs, ProtoMetrics, ProtoTraces
from edge.formats.prometheus.policies import ContextBatch, SampleBatch

# view name -> (an empty view, the most specific protocol it must satisfy)
VIEWS: dict[str, tuple[Callable[[], Any], type]] = {
    "JsonLogs": (lambda: JsonLogs({}), LogBatch),
    "JsonMetrics": (lambda: JsonMetrics({}), Batch),
    "JsonTraces": (lambda: JsonTraces({}), TraceBatch),
    "ProtoLogs": (lambda: ProtoLogs(REQUESTS["log"]()), LogBatch),
    "ProtoMetrics": (lambda: ProtoMetrics(REQUESTS["metric"]()), Batch),
    "ProtoTraces": (lambda: ProtoTraces(REQUESTS["trace"]()), TraceBatch),
    "DatadogLogs": (lambda: DatadogLogs([]), LogBatch),
    "DatadogSeries": (lambda: DatadogSeries({"series": []}), Batch),
    "DatadogProtoSeries": (lambda: DatadogProtoSeries(parse_payload(b"")), Batch),
    "LineBatch": (lambda: LineBatch([], [], "raw"), LogBatch),
    "ContextBatch": (lambda: ContextBatch([]), Matchable),
    "SampleBatch": (lambda: SampleBatch([], {}), Matchable),
}

_DATA_TYPES = {"int": int, "bool": bool}


def _layers(protocol: type) -> list[type]:
    """The protocol and the layers it extends, all declared in edge.engine.batch (not Protocol, object)."""
    return [c for c in protocol.__mro__ if c.__module__ == Matchable.__module__]


def _methods(protocol: type) -> dict[str, Callable[..., Any]]:
    return {name: member for layer in _layers(protocol) for name, member in vars(layer).items()
            if inspect.isfunction(member) and not name.startswith("_")}


def _data(protocol: type) -> dict[str, str]:
    return {name: kind for layer in _layers(protocol)
            for name, kind in vars(layer).get("__annotations__", {}).items()}


def _positional(signature: inspect.Signature) -> int:
    return sum(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in signature.parameters.values())


def test_layers_cover_what_the_engine_uses():
    """The member lists the checks below walk (a typo in `_layers` would make them vacuous)."""
    assert set(_methods(Matchable)) == {"column", "strings"}
    assert set(_data(Matchable)) == {"n", "full"}
    assert set(_methods(Batch)) == {"column", "strings", "keep_only", "export"}
    assert set(_data(Batch)) == {"n", "full", "changed"}
    assert set(_methods(LogBatch)) - set(_methods(Batch)) == {"get", "set", "delete", "string_value", "string_of"}
    assert set(_methods(TraceBatch)) - set(_methods(Batch)) == {"trace_id", "trace_state", "set_trace_state"}
    assert all(issubclass(p, Protocol) for p in (Matchable, Batch, LogBatch, TraceBatch))


@pytest.mark.parametrize("name", VIEWS)
def test_view_provides_its_interface(name: str):
    make, protocol = VIEWS[name]
    view = make()
    assert isinstance(view, protocol), f"{name} is not a {protocol.__name__}"
    for member, kind in _data(protocol).items():
        assert type(getattr(view, member)) is _DATA_TYPES[kind], (name, member)
    for member, declared in _methods(protocol).items():
        provided = getattr(view, member)
        assert callable(provided), (name, member)
        # the declared function includes `self`; the view's member is bound (or a staticmethod)
        expected = _positional(inspect.signature(declared)) - 1
        assert _positional(inspect.signature(provided)) == expected, (name, member)


@pytest.mark.parametrize("name", VIEWS)
def test_view_is_no_more_than_its_layer_says(name: str):
    """The layers discriminate: only log views transform, only trace views sample spans."""
    make, protocol = VIEWS[name]
    view = make()
    assert isinstance(view, LogBatch) == (protocol is LogBatch), name
    assert isinstance(view, TraceBatch) == (protocol is TraceBatch), name
    assert isinstance(view, Batch) == (protocol is not Matchable), name
