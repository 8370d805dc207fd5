from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MetricPayload(_message.Message):
    __slots__ = ("series",)
    class MetricType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[MetricPayload.MetricType]
        COUNT: _ClassVar[MetricPayload.MetricType]
        RATE: _ClassVar[MetricPayload.MetricType]
        GAUGE: _ClassVar[MetricPayload.MetricType]
    UNSPECIFIED: MetricPayload.MetricType
    COUNT: MetricPayload.MetricType
    RATE: MetricPayload.MetricType
    GAUGE: MetricPayload.MetricType
    class MetricPoint(_message.Message):
        __slots__ = ("value", "timestamp")
        VALUE_FIELD_NUMBER: _ClassVar[int]
        TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
        value: float
        timestamp: int
        def __init__(self, value: _Optional[float] = ..., timestamp: _Optional[int] = ...) -> None: ...
    class Resource(_message.Message):
        __slots__ = ("type", "name")
        TYPE_FIELD_NUMBER: _ClassVar[int]
        NAME_FIELD_NUMBER: _ClassVar[int]
        type: str
        name: str
        def __init__(self, type: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...
    class MetricSeries(_message.Message):
        __slots__ = ("resources", "metric", "tags", "points", "type", "unit", "source_type_name", "interval")
        RESOURCES_FIELD_NUMBER: _ClassVar[int]
        METRIC_FIELD_NUMBER: _ClassVar[int]
        TAGS_FIELD_NUMBER: _ClassVar[int]
        POINTS_FIELD_NUMBER: _ClassVar[int]
        TYPE_FIELD_NUMBER: _ClassVar[int]
        UNIT_FIELD_NUMBER: _ClassVar[int]
        SOURCE_TYPE_NAME_FIELD_NUMBER: _ClassVar[int]
        INTERVAL_FIELD_NUMBER: _ClassVar[int]
        resources: _containers.RepeatedCompositeFieldContainer[MetricPayload.Resource]
        metric: str
        tags: _containers.RepeatedScalarFieldContainer[str]
        points: _containers.RepeatedCompositeFieldContainer[MetricPayload.MetricPoint]
        type: MetricPayload.MetricType
        unit: str
        source_type_name: str
        interval: int
        def __init__(self, resources: _Optional[_Iterable[_Union[MetricPayload.Resource, _Mapping]]] = ..., metric: _Optional[str] = ..., tags: _Optional[_Iterable[str]] = ..., points: _Optional[_Iterable[_Union[MetricPayload.MetricPoint, _Mapping]]] = ..., type: _Optional[_Union[MetricPayload.MetricType, str]] = ..., unit: _Optional[str] = ..., source_type_name: _Optional[str] = ..., interval: _Optional[int] = ...) -> None: ...
    SERIES_FIELD_NUMBER: _ClassVar[int]
    series: _containers.RepeatedCompositeFieldContainer[MetricPayload.MetricSeries]
    def __init__(self, series: _Optional[_Iterable[_Union[MetricPayload.MetricSeries, _Mapping]]] = ...) -> None: ...
