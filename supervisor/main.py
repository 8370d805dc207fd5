"""`edge [CONFIG.json]`: the supervisor process.

It validates the config (one error line, exit 2), binds the listening socket (one error
line, exit 2), lays out the run directory and the shared-memory segments, starts gunicorn
with the Falcon workers on that socket at once (they pass traffic through raw until the
first snapshot), runs the policy providers, whose merged policy sets it compiles and
publishes, and logs the ready line once `/_health` answers. On SIGTERM/SIGINT it stops accepting,
lets gunicorn drain in-flight requests (at most 10 s), performs a final policy sync
with the last statistics, removes every shared-memory segment and exits 0.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from edge import __version__, logs
from edge.channels.ratelimit import create_table
from edge.channels.run_dir import RUN_DIR_ENV, RuntimePaths
from edge.channels.snapshots import SnapshotPublisher, remove_stale_segments
from edge.channels.stats_spool import StatsSpool
from edge.config import Config, ConfigError, load
from edge.control.builder import build_control_plane
from edge.engine.extensions import S3_DUMP
from edge.lifecycle import child_preexec
from supervisor.child import ChildProcess
from supervisor.cli import parse
from supervisor.grpc_children import GrpcWorkers, serves_grpc
from supervisor.listener import ListenError, bind_listener, reserve_port
from supervisor.ready import HEALTH_TIMEOUT_S, health_host, ready_message, wait_healthy
from supervisor.sampler_child import SOCKET_NAME, runs_sampler, sampler_process
from supervisor.tail_child import tail_worker
from supervisor.validate import validate

log = logging.getLogger("edge.supervisor")

DEFAULT_CONFIG = "config.json"
# Where a container keeps its config: Tero Edge's image reads /app/config.json (edge's image works in /app
# too), edge's image ships its default at /etc/edge/config.json, where the Helm chart mounts its ConfigMap.
# Outside a container neither exists, so `edge` reads ./config.json, else the embedded default.
CONFIG_SEARCH = (Path(DEFAULT_CONFIG), Path("/app/config.json"), Path("/etc/edge/config.json"))
EMBEDDED_CONFIG = Path(__file__).resolve().parent.parent / "edge" / "examples" / "config.json"
DISTRIBUTION_ENV = "EDGE_DISTRIBUTION"
DRAIN_SECONDS = 10
WORKER_CLASS = "workers.http_worker.HttpWorker"  # uvicorn's worker (httptools, uvloop) within gunicorn's limits
PROVIDERS_READY_S = 10.0  # the ready line waits this long at most for the providers' first load (one sync)


def gunicorn_argv(c: Config, listen_fd: int) -> list[str]:
    """gunicorn serving the workers on the inherited socket, logging JSON through edge's formatter.

    No `--worker-connections`: the workers admit requests themselves (`edge.protocols.body.Admission`)."""
    return [sys.executable, "-m", "gunicorn", "-k", WORKER_CLASS,
            "--workers", str(c.workers), "--bind", f"fd://{listen_fd}",
            "--graceful-timeout", str(DRAIN_SECONDS),
            "--keep-alive", "75", "--log-level", GUNICORN_LEVELS[c.log_level],
            "--logger-class", "workers.gunicorn_logging.JsonLogger",
            "--limit-request-field_size", "16384", "--no-control-socket",
            "--config", "python:workers.preload", "workers.app:app"]


# gunicorn's info lines (every worker boot) are noise at edge's info level; trace and debug show them.
GUNICORN_LEVELS = {"trace": "debug", "debug": "debug", "info": "warning", "warn": "warning", "err": "error"}


def _config_path(argument: str | None, search: tuple[Path, ...] = CONFIG_SEARCH) -> Path:
    """The named file; with no argument the first of `search` that exists, else the embedded default.

    The embedded default applies no policies: edge never drops or samples telemetry unless a
    config the user chose names policies.
    """
    if argument:
        return Path(argument)
    return next((path for path in search if path.exists()), EMBEDDED_CONFIG)


class Supervisor:
    def __init__(self, config: Config, distribution: str, stopping: threading.Event | None = None,
                 grpc_port: socket.socket | None = None) -> None:
        self.config = config
        self.grpc_port = grpc_port  # held (bound, not listening) while the gRPC workers serve on it
        self.distribution = distribution
        stale = remove_stale_segments()
        if stale:
            log.info("removed %d shared-memory segments left by edge processes that no longer exist", len(stale))
        self.run_dir = Path(tempfile.mkdtemp(prefix="edge-"))
        prefix = f"edge-{os.getpid()}"
        self.publisher = SnapshotPublisher(prefix)
        self.rate_table = create_table(f"{prefix}-rl")
        self.paths = RuntimePaths(
            config=str(self.run_dir / "config.json"), snapshot_control=self.publisher.control_name,
            rate_table=self.rate_table.name, rate_lock=str(self.run_dir / "ratelimit.lock"),
            stats_spool=str(self.run_dir / "stats"), prometheus_dir=str(self.run_dir / "prometheus"),
            sampler_socket=str(self.run_dir / SOCKET_NAME) if runs_sampler(config, distribution) else "")
        self.control = build_control_plane(config, self.publisher, StatsSpool(self.paths.stats_spool),
                                           extensions=[S3_DUMP] if config.s3_dump.enabled else [])
        self.gunicorn: subprocess.Popen | None = None
        self.tail_worker: ChildProcess | None = None
        self.sampler: ChildProcess | None = None
        self.grpc_workers: GrpcWorkers | None = None
        self.stopping = stopping or threading.Event()
        self._shut_down = False

    def _write_runtime(self) -> None:
        # Workers need no provider settings, and provider headers may hold secrets.
        worker_config = dataclasses.replace(self.config, policy_providers=())
        Path(self.paths.config).write_bytes(worker_config.to_json())
        Path(self.paths.prometheus_dir).mkdir()
        self.paths.write(self.run_dir)

    def _worker_env(self) -> dict[str, str]:
        """What every serving process needs to attach to the instance (gunicorn's and the gRPC workers)."""
        return {**os.environ, RUN_DIR_ENV: str(self.run_dir), "PROMETHEUS_MULTIPROC_DIR": self.paths.prometheus_dir,
                DISTRIBUTION_ENV: self.distribution}

    def _start_gunicorn(self, listener: socket.socket) -> None:
        """gunicorn on the supervisor's bound socket; the supervisor's copy is closed once gunicorn has it."""
        env = self._worker_env()
        try:
            self.gunicorn = subprocess.Popen(gunicorn_argv(self.config, listener.fileno()), env=env,
                                             pass_fds=(listener.fileno(),), preexec_fn=child_preexec())
        finally:
            listener.close()

    def _announce_ready(self) -> None:
        """Log the ready line once `/_health` answers (nothing when gunicorn exits or a stop comes first)."""
        c = self.config
        assert self.gunicorn is not None
        if not wait_healthy(health_host(c.listen_address), c.listen_port, self.gunicorn, self.stopping):
            if self.gunicorn.poll() is None and not self.stopping.is_set():
                log.warning("the workers did not answer /_health within %.0f s; edge keeps running, not ready yet",
                            HEALTH_TIMEOUT_S)
            return
        self.control.providers.wait_ready(PROVIDERS_READY_S)
        snapshot = self.control.manager.snapshot
        log.info("%s", ready_message(c, self.distribution, __version__,
                                     None if snapshot is None else len(snapshot.policies)))

    def _start_tail_worker(self) -> None:
        """With a `tail` config section, the edge-tail pipeline runs as a child process (workers/tail.py)."""
        if not self.config.tail:
            return
        self.tail_worker = tail_worker({**os.environ, RUN_DIR_ENV: str(self.run_dir)})
        self.tail_worker.start()

    def _start_sampler(self) -> None:
        """The tail sampler (workers/sampler.py), before any worker takes traces: a worker's first
        submissions wait briefly for its socket rather than being refused."""
        if not self.paths.sampler_socket:
            return
        self.sampler = sampler_process(self._worker_env())
        self.sampler.start()

    def _start_grpc_workers(self) -> None:
        """OTLP/gRPC workers (workers/grpc.py), as many as the HTTP workers, on the port reserved for them."""
        if self.grpc_port is None:
            return
        self.grpc_workers = GrpcWorkers(self.config.workers, self._worker_env())
        self.grpc_workers.start()

    def run(self, listener: socket.socket) -> int:
        self._write_runtime()
        self._start_sampler()
        self._start_gunicorn(listener)
        self._start_grpc_workers()
        self._start_tail_worker()
        self.control.start()
        self._announce_ready()
        while not self.stopping.wait(1.0):
            self.control.tick()
            if self.tail_worker is not None:
                self.tail_worker.watch()
            if self.sampler is not None:
                self.sampler.watch()
            if self.grpc_workers is not None:
                self.grpc_workers.watch()
            if self.gunicorn.poll() is not None:
                log.error("gunicorn exited with status %s; shutting down", self.gunicorn.returncode)
                return 1
        return 0

    def shutdown(self) -> None:
        """Drain workers, final sync, release every shared resource (idempotent)."""
        if self._shut_down:
            return
        self._shut_down = True
        self.control.stop()
        if self.grpc_workers is not None:
            self.grpc_workers.terminate()  # they drain while the tail worker and gunicorn stop
        if self.tail_worker is not None:
            self.tail_worker.stop()
        if self.gunicorn is not None and self.gunicorn.poll() is None:
            self.gunicorn.send_signal(signal.SIGTERM)
            try:
                self.gunicorn.wait(DRAIN_SECONDS + 2)
            except subprocess.TimeoutExpired:
                log.warning("workers did not drain in %d s; killing them", DRAIN_SECONDS)
                self.gunicorn.kill()
                self.gunicorn.wait()
        if self.grpc_workers is not None:
            self.grpc_workers.wait()
        if self.sampler is not None:
            self.sampler.stop()  # after the workers: what they accepted while draining is in its log
        if self.grpc_port is not None:
            self.grpc_port.close()
        self.control.final_sync()
        self.publisher.close()
        self.rate_table.close()
        self.rate_table.unlink()
        shutil.rmtree(self.run_dir, ignore_errors=True)


def _load_config(path: Path) -> Config | None:
    """The validated config, or None after one plain error line on stderr (logging is not set up yet)."""
    try:
        return load(path)
    except ConfigError as exc:
        print(f"edge: {logs.redact(str(exc))}", file=sys.stderr)  # may quote a URL with credentials
        return None


def _log_start(config: Config, path: Path) -> None:
    """What the config leaves worth saying before the ready line."""
    for warning in config.warnings:
        log.warning("%s", warning)
    log.info("configuration from %s", path)
    if not config.policy_providers:
        log.info("no policy providers configured: everything passes unfiltered")


def _stop_on_signals() -> threading.Event:
    """SIGTERM/SIGINT set the returned event. Installed before anything is created, so a stop that
    arrives during start-up still goes through shutdown instead of leaving shared memory behind."""
    stopping = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("received %s: draining", signal.Signals(signum).name)
        stopping.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stopping


def _serve(config: Config, distribution: str, listener: socket.socket, stopping: threading.Event,
           grpc_port: socket.socket | None) -> int:
    if stopping.is_set():  # stopped while starting: nothing was created yet
        listener.close()
        if grpc_port is not None:
            grpc_port.close()
        return 0
    supervisor = Supervisor(config, distribution, stopping, grpc_port)
    try:
        status = supervisor.run(listener)
    finally:
        listener.close()
        supervisor.shutdown()
    log.info("stopped")
    return status


def run(distribution: str, argv: list[str] | None = None) -> int:
    args = parse(distribution, sys.argv[1:] if argv is None else argv)
    faulthandler.enable()
    path = _config_path(args.config)
    if args.dry_run:
        return validate(path)
    config = _load_config(path)
    if config is None:
        return 2
    logs.configure(config.log_level)
    stopping = _stop_on_signals()
    try:
        listener = bind_listener(config.listen_address, config.listen_port)
    except ListenError as exc:
        log.error("%s", exc)
        return 2
    config = dataclasses.replace(config, listen_port=listener.getsockname()[1])  # port 0: the one the OS chose
    grpc_port = None
    if serves_grpc(config, distribution):
        try:
            grpc_port = reserve_port(config.grpc.listen_address, config.grpc.listen_port, "grpc.")
        except ListenError as exc:
            listener.close()
            log.error("%s", exc)
            return 2
        config = dataclasses.replace(config, grpc=dataclasses.replace(config.grpc,
                                                                      listen_port=grpc_port.getsockname()[1]))
    _log_start(config, path)
    return _serve(config, distribution, listener, stopping, grpc_port)


def main() -> int:
    return run("edge")


def main_otlp() -> int:
    return run("otlp")


def main_datadog() -> int:
    return run("datadog")


def main_prometheus() -> int:
    return run("prometheus")


if __name__ == "__main__":
    sys.exit(main())
