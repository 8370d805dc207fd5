"""Client side of the policy sync protocol (docs/policies.md §10), JSON or protobuf on the wire.

`SyncClient.sync()` posts a SyncRequest carrying the drained match statistics and
returns the decoded policies. JSON responses go through the lenient policy reader, so
a server may answer with the same shorthands a policy file allows. Statistics are only
consumed when the server accepted the request; on any failure the caller merges them
back (`MatchStats.merge`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import orjson
from google.protobuf import json_format

from edge import __version__
from edge.engine.stats import PolicyCounters
from edge.policy.loader import PolicyFileError, decode_policies
from edge.policy.sync_transport import MAX_RESPONSE_BYTES, ReplyTooLarge, TransportError, post
from edge.proto.tero.policy.v1 import policy_pb2 as pb

JSON = "application/json"
PROTOBUF = "application/x-protobuf"
WORKSPACE_ATTRIBUTE = "workspace.id"  # the config's `workspace_id`, in client_metadata.resource_attributes
STAGES = [pb.POLICY_STAGE_LOG_FILTER, pb.POLICY_STAGE_LOG_TRANSFORM, pb.POLICY_STAGE_METRIC_FILTER,
          pb.POLICY_STAGE_TRACE_SAMPLING]


class SyncError(Exception):
    """The sync failed (network, HTTP status, undecodable answer or error_message)."""


@dataclass
class SyncResult:
    policies: list[pb.Policy]
    hash: str
    interval_s: int
    decode_errors: list[str] = field(default_factory=list)
    unchanged: bool = False


def statuses(counts: Mapping[str, PolicyCounters], errors: Mapping[str, list[str]]) -> list[pb.PolicySyncStatus]:
    """One PolicySyncStatus per policy with counts or errors, sorted by id."""
    out = []
    for pid in sorted(set(counts) | set(errors)):
        c = counts.get(pid) or PolicyCounters()
        status = pb.PolicySyncStatus(id=pid, match_hits=c.hits, match_misses=c.misses,
                                     errors=errors.get(pid, []))
        for stage, (hits, misses) in c.stages.items():
            if hits or misses:
                getattr(status, stage).CopyFrom(pb.TransformStageStatus(hits=hits, misses=misses))
        out.append(status)
    return out


class SyncClient:
    def __init__(self, url: str, *, headers: Mapping[str, str] | None = None, wire: str = JSON,
                 timeout: float = 10.0, service: Mapping[str, str] | None = None,
                 extensions: list[str] | None = None, max_response_bytes: int = MAX_RESPONSE_BYTES,
                 workspace_id: str = "") -> None:
        self.url = url
        self.headers = dict(headers or {})
        self.wire = wire
        self.timeout = timeout  # for the whole exchange, redirects and a dripping server included
        self.max_response_bytes = max_response_bytes
        self.oversized_replies = 0  # replies refused for their size since start
        self.service = dict(service or {})
        self.workspace_id = workspace_id  # tells a multi-tenant policy server whose policies to answer
        self.extensions = extensions or []
        self.last_hash = ""
        self.last_sync_ns = 0

    def _request(self, status_list: list[pb.PolicySyncStatus]) -> pb.SyncRequest:
        metadata = pb.ClientMetadata(supported_policy_stages=STAGES)
        for key in ("name", "namespace", "version", "instance_id"):
            value = self.service.get(key) or (__version__ if key == "version" else "")
            if value:
                attr = metadata.resource_attributes.add(key="service." + key.replace("_", "."))
                attr.value.string_value = value
        if self.workspace_id:
            attr = metadata.resource_attributes.add(key=WORKSPACE_ATTRIBUTE)
            attr.value.string_value = self.workspace_id
        for ext in self.extensions:
            metadata.supported_extensions.add(type=ext)
        return pb.SyncRequest(client_metadata=metadata, full_sync=not self.last_hash,
                              last_sync_timestamp_unix_nano=self.last_sync_ns,
                              last_successful_hash=self.last_hash, policy_statuses=status_list)

    def _post(self, body: bytes) -> tuple[bytes, str]:
        headers = {**self.headers, "Content-Type": self.wire, "Accept": self.wire}
        try:
            reply = post(self.url, body, headers, deadline_s=self.timeout, max_response_bytes=self.max_response_bytes)
        except ReplyTooLarge as exc:
            self.oversized_replies += 1
            raise SyncError(f"policy server {exc} (refused {self.oversized_replies} time(s) so far)") from None
        except TransportError as exc:
            raise SyncError(f"policy server {exc}") from None
        if reply.status >= 400:
            raise SyncError(f"policy server answered HTTP {reply.status}")
        return reply.body, reply.content_type or self.wire

    def sync(self, status_list: list[pb.PolicySyncStatus]) -> SyncResult:
        request = self._request(status_list)
        if self.wire == PROTOBUF:
            body = request.SerializeToString()
        else:
            body = json_format.MessageToJson(request, indent=None).encode()
        raw, content_type = self._post(body)
        result = self._decode(raw, content_type)
        self.last_sync_ns = time.time_ns()
        if result.hash:
            result.unchanged = result.hash == self.last_hash
            self.last_hash = result.hash
        return result

    def _decode(self, raw: bytes, content_type: str) -> SyncResult:
        if "protobuf" in content_type.lower():
            response = pb.SyncResponse()
            try:
                response.ParseFromString(raw)
            except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
                raise SyncError(f"undecodable protobuf sync response: {exc}") from None
            if response.error_message:
                raise SyncError(f"policy server error: {response.error_message}")
            return SyncResult(list(response.policies), response.hash, response.recommended_sync_interval_seconds)
        try:
            doc = orjson.loads(raw or b"{}")
        except orjson.JSONDecodeError as exc:
            raise SyncError(f"undecodable JSON sync response: {exc}") from None
        if not isinstance(doc, dict):
            raise SyncError("sync response is not a JSON object")
        message = doc.get("errorMessage") or doc.get("error_message")
        if message:
            raise SyncError(f"policy server error: {message}")
        try:
            loaded = decode_policies(doc.get("policies") or [], "sync response")
        except PolicyFileError as exc:  # e.g. duplicate ids: the whole answer is refused
            raise SyncError(str(exc)) from None
        interval = doc.get("recommendedSyncIntervalSeconds", doc.get("recommended_sync_interval_seconds", 0))
        try:
            interval = int(interval or 0)
        except (TypeError, ValueError):
            interval = 0
        return SyncResult(loaded.policies, str(doc.get("hash") or ""), interval, loaded.errors)
