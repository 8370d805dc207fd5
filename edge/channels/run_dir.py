"""Where one edge instance keeps its shared state: the names the supervisor hands its workers.

Kept apart from `workers.runtime` so the supervisor (and the tail worker) can name the
run directory without importing what a request-serving worker needs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

RUN_DIR_ENV = "EDGE_RUN_DIR"


@dataclass(frozen=True)
class RuntimePaths:
    """Names the supervisor chose for this instance (written once, read by every worker)."""

    config: str  # resolved worker config (JSON)
    snapshot_control: str  # shared-memory control segment
    rate_table: str  # shared-memory rate-limit table
    rate_lock: str  # lock file for the rate-limit table
    stats_spool: str  # directory
    prometheus_dir: str  # prometheus-client multiprocess directory
    sampler_socket: str = ""  # the tail sampler's Unix socket ("" : tail sampling is off)

    def write(self, run_dir: Path) -> Path:
        path = run_dir / "runtime.json"
        path.write_bytes(orjson.dumps(self.__dict__))
        return path

    @classmethod
    def read(cls, run_dir: str | Path) -> RuntimePaths:
        return cls(**orjson.loads((Path(run_dir) / "runtime.json").read_bytes()))

    @classmethod
    def from_environment(cls) -> RuntimePaths:
        """The paths of the instance whose supervisor started this process (`EDGE_RUN_DIR`)."""
        run_dir = os.environ.get(RUN_DIR_ENV)
        if not run_dir:
            raise RuntimeError(f"{RUN_DIR_ENV} is not set: workers are started by the edge supervisor")
        return cls.read(run_dir)
