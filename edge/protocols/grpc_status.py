"""gRPC statuses and their HTTP equivalents, both ways, as the OTLP specification maps them.

An HTTP upstream's answer becomes a gRPC status for gRPC clients (`http_failure`): 429,
502, 503 and 504 are `UNAVAILABLE` with a `google.rpc.RetryInfo` (the upstream's
`Retry-After`, else 1 s) so SDKs retry. A gRPC upstream's status becomes an HTTP answer for
OTLP/HTTP clients (`http_status`, `error_body`, `retry_after_header`): `UNAVAILABLE` 503,
`RESOURCE_EXHAUSTED` 429, `INVALID_ARGUMENT` 400, `DEADLINE_EXCEEDED` 504, any other 502,
with `Retry-After` from the status's RetryInfo when it has one.

The few `google.rpc` messages involved (`Status`, `RetryInfo`) are written and read by hand:
their generated classes are not a runtime dependency, and three fields need no schema.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import orjson
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError

DEFAULT_RETRY_SECONDS = 1
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRYABLE_UPSTREAM = frozenset({429, 502, 503, 504})
UPSTREAM_CODES = {400: grpc.StatusCode.INVALID_ARGUMENT, 401: grpc.StatusCode.UNAUTHENTICATED,
                  403: grpc.StatusCode.PERMISSION_DENIED, 404: grpc.StatusCode.UNIMPLEMENTED,
                  413: grpc.StatusCode.RESOURCE_EXHAUSTED}
HTTP_STATUSES = {grpc.StatusCode.UNAVAILABLE: 503, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
                 grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.DEADLINE_EXCEEDED: 504}
OTHER_HTTP_STATUS = 502
Metadata = tuple[tuple[str, str | bytes], ...]


@dataclass(frozen=True, slots=True)
class Failure:
    """A call answered with a non-OK status instead of a response message."""

    code: grpc.StatusCode
    details: str
    trailing: Metadata = ()  # the trailing metadata sent with the status (its RetryInfo, relayed ones)

    def status_details(self) -> bytes | None:
        """The serialised `google.rpc.Status` that came with the status, if any."""
        for key, value in self.trailing:
            if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
                return value
        return None


def retryable(code: grpc.StatusCode, details: str, retry_seconds: int) -> Failure:
    """A Failure whose RetryInfo tells the client to retry after `retry_seconds`."""
    return Failure(code, details, ((STATUS_DETAILS_KEY, status_details(code, details, retry_seconds)),))


# ── writing ──


def _field(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def status_message(code: grpc.StatusCode, details: str) -> bytes:
    """`google.rpc.Status{code, message}`."""
    return _varint(1 << 3) + _varint(code.value[0]) + _field(2, details.encode())


def status_details(code: grpc.StatusCode, details: str, retry_seconds: int) -> bytes:
    """`google.rpc.Status{code, message, details: [Any(RetryInfo{retry_delay})]}`, as SDKs read it."""
    retry_info = _field(1, Duration(seconds=retry_seconds).SerializeToString())
    any_message = _field(1, RETRY_INFO_TYPE.encode()) + _field(2, retry_info)
    return status_message(code, details) + _field(3, any_message)


# ── reading ──


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _length_delimited(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(field number, bytes) of a message's length-delimited fields; the others are skipped.
    Raises IndexError or ValueError on a malformed message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield key >> 3, data[pos:pos + length]
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")


def retry_delay(details: bytes | None) -> int | None:
    """The RetryInfo delay of a serialised `google.rpc.Status`, in whole seconds rounded up; None
    when it has none (or cannot be read: a malformed detail is no reason to fail the answer)."""
    if not details:
        return None
    try:
        for number, any_message in _length_delimited(details):
            if number != 3:
                continue
            fields = dict(_length_delimited(any_message))
            if fields.get(1) == RETRY_INFO_TYPE.encode():
                delay = Duration.FromString(dict(_length_delimited(fields.get(2, b""))).get(1, b""))
                return max(0, math.ceil(delay.seconds + delay.nanos / 1e9))
    except (IndexError, ValueError, ArithmeticError, DecodeError):
        return None
    return None


# ── HTTP upstream -> gRPC client ──


def http_retry_after(headers: list[tuple[bytes, bytes]]) -> int:
    """An HTTP upstream's `Retry-After` in whole seconds (a date or nonsense: the default)."""
    for name, value in headers:
        if name.lower() == b"retry-after" and value.strip().isdigit():
            return max(1, int(value))
    return DEFAULT_RETRY_SECONDS


def http_failure(status: int, headers: list[tuple[bytes, bytes]]) -> Failure:
    """The gRPC answer to an HTTP upstream's non-2xx status."""
    details = f"upstream answered {status}"
    if status in RETRYABLE_UPSTREAM:
        return retryable(grpc.StatusCode.UNAVAILABLE, details, http_retry_after(headers))
    return Failure(UPSTREAM_CODES.get(status, grpc.StatusCode.UNKNOWN), details)


# ── gRPC upstream -> HTTP client ──


def http_status(code: grpc.StatusCode) -> int:
    return HTTP_STATUSES.get(code, OTHER_HTTP_STATUS)


def retry_after_header(failure: Failure) -> tuple[bytes, bytes] | None:
    """`Retry-After` for a 429 or 503 whose status carried a RetryInfo."""
    if http_status(failure.code) not in (429, 503):
        return None
    seconds = retry_delay(failure.status_details())
    return None if seconds is None else (b"retry-after", str(seconds).encode())


def error_body(failure: Failure, protobuf: bool) -> bytes:
    """The OTLP/HTTP error body: a `google.rpc.Status`, the upstream's own when it sent one (protobuf),
    or its code and message as JSON."""
    if protobuf:
        return failure.status_details() or status_message(failure.code, failure.details)
    return orjson.dumps({"code": failure.code.value[0], "message": failure.details})
