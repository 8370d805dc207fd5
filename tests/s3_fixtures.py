"""A real S3-compatible server on loopback for the s3-dump tests: moto's `moto_server`, as a subprocess.

`MotoServer` starts it on a free port; `create_bucket`, `objects` and `wait_objects` talk to it
with boto3 using the test credentials that the edge processes get in their environment too.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3

from tests.proxy_fixtures import free_port
from tests.waiting import wait_for

BIN = Path(sys.executable).parent
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "edge-test-key", "AWS_SECRET_ACCESS_KEY": "edge-test-secret-do-not-log",
               "AWS_SESSION_TOKEN": "edge-test-token", "AWS_EC2_METADATA_DISABLED": "true"}


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    def listening() -> bool:
        assert proc is None or proc.poll() is None, "the server exited early"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False

    assert wait_for(listening, timeout, 0.05), f"nothing listens on port {port}"


class MotoServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoServer:
        self.proc = subprocess.Popen([str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


def s3_client(url: str) -> Any:
    return boto3.session.Session(aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                 aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"]).client(
        "s3", endpoint_url=url, region_name="us-east-1")


def create_bucket(url: str) -> str:
    name = f"dump-{uuid.uuid4().hex[:10]}"
    s3_client(url).create_bucket(Bucket=name)
    return name


def objects(url: str, bucket: str) -> dict[str, bytes]:
    client = s3_client(url)
    listing = client.list_objects_v2(Bucket=bucket).get("Contents", [])
    return {o["Key"]: client.get_object(Bucket=bucket, Key=o["Key"])["Body"].read() for o in listing}


def wait_objects(url: str, bucket: str, count: int, timeout: float = 10.0) -> dict[str, bytes]:
    """The bucket's objects once there are at least `count` (or whatever is there after `timeout`)."""
    wait_for(lambda: len(objects(url, bucket)) >= count, timeout, 0.1)
    return objects(url, bucket)


def ndjson(found: dict[str, bytes]) -> list[dict[str, Any]]:
    """Every line of every object, parsed; each object must end with a newline."""
    assert all(body.endswith(b"\n") for body in found.values())
    return [json.loads(line) for body in found.values() for line in body.split(b"\n") if line]
