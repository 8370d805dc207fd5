"""Putting one NDJSON batch into an S3-compatible bucket with boto3.

boto3 is imported on first use, so processes that never dump pay nothing for it (import
and client creation cost about half a second of CPU and 20-40 MB). Every call is bounded: short connect/read timeouts
and no retries inside botocore, because the caller owns the retry policy (a failed
batch goes back to its queue with a backoff instead of blocking the upload thread).

Credentials come from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`
when set, else from boto3's usual chain (profile, container or instance role). They are
never logged: botocore's debug logging, which prints request headers, is capped at WARNING.

Object keys: `<prefix>/<signal>/<yyyy>/<mm>/<dd>/<HH>/<pid>-<token>-<seq>.ndjson`, the
date being the UTC time the batch was opened, `token` a random value per process start
(process ids repeat across hosts and Lambda environments) and `seq` a counter.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from edge.config import S3Target
from edge.extensions.batching import Batch

CONNECT_TIMEOUT_S = 2.0
READ_TIMEOUT_S = 5.0
DEFAULT_REGION = "us-east-1"
CONTENT_TYPE = "application/x-ndjson"
_QUIET_LOGGERS = ("boto3", "botocore", "s3transfer", "urllib3")


def object_key(prefix: str, signal: str, opened_wall: float, name: str) -> str:
    """`<prefix>/<signal>/<yyyy>/<mm>/<dd>/<HH>/<name>.ndjson` (no leading slash without a prefix)."""
    hour = time.strftime("%Y/%m/%d/%H", time.gmtime(opened_wall))
    path = f"{signal}/{hour}/{name}.ndjson"
    return f"{prefix}/{path}" if prefix else path


class S3Uploader:
    """One boto3 client per target, created lazily in the upload thread."""

    def __init__(self, targets: tuple[S3Target, ...], env: Mapping[str, str] | None = None) -> None:
        self.targets = {t.name: t for t in targets}
        self.env = os.environ if env is None else env
        self._clients: dict[str, Any] = {}
        self._token = uuid.uuid4().hex[:8]
        self._seq = itertools.count()

    def key_for(self, batch: Batch) -> str:
        target = self.targets[batch.target]
        name = f"{os.getpid()}-{self._token}-{next(self._seq):06d}"
        return object_key(target.prefix, batch.signal, batch.opened_wall, name)

    def put(self, batch: Batch) -> str:
        """Upload the batch as one object; returns its key. Raises on any failure."""
        target = self.targets[batch.target]
        key = self.key_for(batch)
        self._client(target).put_object(Bucket=target.bucket, Key=key, Body=batch.body(), ContentType=CONTENT_TYPE)
        return key

    def prepare(self) -> None:
        """Create the clients ahead of the first batch (imports boto3 in the calling, background thread)."""
        for target in self.targets.values():
            self._client(target)

    def _client(self, target: S3Target) -> Any:
        client = self._clients.get(target.name)
        if client is None:
            client = self._clients[target.name] = self._make_client(target)
        return client

    def _make_client(self, target: S3Target) -> Any:
        import boto3  # lazy: see the module docstring
        from botocore.config import Config as BotoConfig

        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(max(logging.getLogger(name).level, logging.WARNING))
        env = self.env
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        )
        region = target.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        config = BotoConfig(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                            retries={"total_max_attempts": 1}, max_pool_connections=1,
                            # custom endpoints (MinIO, Ceph, moto...) rarely resolve bucket subdomains
                            s3={"addressing_style": "path" if target.endpoint else "auto"})
        return session.client("s3", endpoint_url=target.endpoint or None, region_name=region, config=config)
