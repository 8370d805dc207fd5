"""Assemble and run one tail pipeline from settings (the command and the supervisor's worker).

Startup problems (bad policy file, unreadable input, unwritable output, unusable state
dir) raise `TailStartupError` before anything is read, so the caller can print one line
and exit 2. A failure while running (the output went away) is logged and gives exit 1;
a stop request flushes the output, records the checkpoints and gives exit 0.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edge import __version__
from edge.formats.lines.records import resource_attributes
from edge.logs import redact
from edge.memory import tune_gc
from edge.tail import sidecar_env
from edge.tail.checkpoint import CheckpointStore
from edge.tail.discovery import WatchUnavailable
from edge.tail.keeping import Filter, KeepAll
from edge.tail.output import FileSink, OutputError, Sink
from edge.tail.pipeline import CheckpointRecorder, FileTailer, StartupError, check_inputs, run_stdin
from edge.tail.reader import display
from edge.tail.settings import STDIO, TailSettings

if TYPE_CHECKING:
    from edge.engine.holder import SnapshotSource
    from edge.formats.lines.patterns import Fields
    from edge.tail.ledger import AheadDelivered
    from edge.tail.multiline import Multiline

log = logging.getLogger("edge.tail")


# A container started without its paths reads a closed stdin: say why nothing happened.
EMPTY_STDIN = ("stdin ended before any input: without a PATH argument or LOG_PATHS, edge-tail reads stdin; "
               "give the files to tail as arguments or in LOG_PATHS (or pipe the logs in)")


class TailStartupError(ValueError):
    """Something named in the settings cannot be used (one line for the operator)."""


def line_fields(settings: TailSettings) -> Fields | None:
    """The fields parser of -f regex|auto with the user's patterns compiled once; None for the other formats."""
    if settings.format not in ("regex", "auto"):
        return None
    from edge.formats.lines.patterns import PatternError, compile_patterns, fields_parser, load_patterns

    try:
        return fields_parser(settings.format, compile_patterns(load_patterns(settings.patterns), settings.patterns))
    except PatternError as exc:
        raise TailStartupError(str(exc)) from None


def multiline(settings: TailSettings) -> Multiline | None:
    """The compiled --multiline-start (None without it); TailStartupError when RE2 refuses the pattern."""
    if not settings.multiline_start:
        return None
    from edge.tail.multiline import Multiline, MultilineError

    try:
        return Multiline.compile(settings.multiline_start, settings.multiline_timeout_ms)
    except MultilineError as exc:
        raise TailStartupError(str(exc)) from None


def make_sink(settings: TailSettings, resource: Mapping[str, str], on_delivered: AheadDelivered,
              wakeup: threading.Event, fields: Fields | None = None, stop: threading.Event | None = None) -> Sink:
    if settings.forward_url:
        from edge.tail.forward import DEAD_LETTER_DIR, Delivery, ForwardSink  # aiohttp, OTLP: only to forward
        from edge.tail.otlp import record_parser

        return ForwardSink(settings.forward_url, fmt=settings.forward_format, batch_lines=settings.batch_lines,
                           batch_interval_ms=settings.batch_interval_ms, resource=resource,
                           on_delivered=on_delivered, wakeup=wakeup,
                           parse=record_parser(settings.format, settings.field_names, fields),
                           delivery=Delivery(http_timeout_s=settings.http_timeout_s,
                                             retry_backoff_s=settings.retry_backoff_ms / 1000,
                                             max_retries=settings.max_retries,
                                             dead_letter_dir=os.path.join(settings.state_dir, DEAD_LETTER_DIR)),
                           stop=stop, max_queued=-(-settings.max_buffer_records // settings.batch_lines))
    try:
        return FileSink(settings.output, write_buf=settings.write_buf, flush_lines=settings.flush_lines,
                        flush_interval_ms=settings.flush_interval_ms, on_delivered=on_delivered)
    except OutputError as exc:
        raise TailStartupError(exc.strerror) from None


def open_store(settings: TailSettings) -> CheckpointStore:
    try:
        return CheckpointStore(settings.state_dir, sync_batch=settings.checkpoint_sync_batch,
                               interval_ms=settings.checkpoint_interval_ms,
                               snapshot_interval_ms=settings.checkpoint_snapshot_interval_ms,
                               ttl_ms=settings.checkpoint_ttl_ms, max_slots=settings.checkpoint_max_slots)
    except OSError as exc:
        raise TailStartupError(f"state dir {settings.state_dir}: {exc.strerror or exc}") from None


def run(settings: TailSettings, stop: threading.Event, wakeup: threading.Event | None = None,
        env: Mapping[str, str] | None = None, snapshots: SnapshotSource | None = None) -> int:
    """Run until EOF (stdin) or `stop`; TailStartupError before anything is read.

    Policies come from `settings.policy`, else from `snapshots` (the supervisor's), else none.
    """
    env = os.environ if env is None else env
    wakeup = wakeup or threading.Event()
    try:
        missing = [] if settings.stdin_mode else check_inputs(settings.paths,
                                                             exit_on_missing=settings.exit_on_missing)
    except StartupError as exc:
        raise TailStartupError(str(exc)) from None
    resource = resource_attributes(settings.resource, sidecar_env.resource_defaults(env))
    fields = line_fields(settings)
    joins = multiline(settings)
    line_filter = make_filter(settings, snapshots, resource, fields)
    tune_gc()
    if settings.stdin_mode:
        return _run_stdin(settings, line_filter, resource, stop, wakeup, fields, joins)
    return _run_files(settings, line_filter, resource, stop, wakeup, missing, fields, joins)


def make_filter(settings: TailSettings, snapshots: SnapshotSource | None, resource: Mapping[str, str],
                fields: Fields | None) -> Filter:
    """The policy filter; without `-p` or supervisor snapshots, KeepAll (and the engine is never imported)."""
    if not settings.policy and snapshots is None:
        return KeepAll()
    from edge.tail.filtering import LineFilter, PolicyLoadError, load_snapshot

    if settings.policy:
        try:
            snapshot = load_snapshot(settings.policy)
        except PolicyLoadError as exc:
            raise TailStartupError(str(exc)) from None
        snapshots = lambda: snapshot  # noqa: E731 - a fixed source
    return LineFilter(snapshots, settings.format, settings.max_line, resource, settings.field_names, fields)


def _run_stdin(settings: TailSettings, line_filter: Filter, resource: Mapping[str, str],
               stop: threading.Event, wakeup: threading.Event, fields: Fields | None,
               joins: Multiline | None) -> int:
    sink = make_sink(settings, resource, lambda positions, ahead=None: None, wakeup, fields, stop)
    log.info("%s", summary(settings))
    try:
        if not run_stdin(settings, line_filter, sink, stop, multiline=joins) and not stop.is_set():
            log.warning("%s", EMPTY_STDIN)
    except OutputError as exc:
        log.error("%s", exc.strerror)
        return 1
    finally:
        _close_sink(sink)
    return 0


def _run_files(settings: TailSettings, line_filter: Filter, resource: Mapping[str, str],
               stop: threading.Event, wakeup: threading.Event, missing: list[str], fields: Fields | None,
               joins: Multiline | None) -> int:
    recorder = CheckpointRecorder()
    sink = make_sink(settings, resource, recorder, wakeup, fields, stop)
    try:
        store = recorder.store = open_store(settings)
    except BaseException:
        _close_sink(sink)
        raise
    tailer = FileTailer(settings, line_filter, sink, store, stop, wakeup, joins)
    status = 0
    try:
        tailer.open_initial(missing)
        log.info("%s", summary(settings, tailer))
        tailer.run()
    except WatchUnavailable as exc:
        raise TailStartupError(str(exc)) from None
    except OutputError as exc:
        log.error("%s", exc.strerror)
        status = 1
    finally:
        try:
            _close_sink(sink)
        except OutputError as exc:
            log.error("%s", exc.strerror)
            status = 1
        tailer.close()
        store.close()
    return status


def target(settings: TailSettings) -> str:
    if settings.forward_url:
        return f"forwarding OTLP/{settings.forward_format} to {redact(settings.forward_url)}"
    return "writing to stdout" if settings.output == STDIO else f"writing to {settings.output}"


def summary(settings: TailSettings, tailer: FileTailer | None = None, shown: int = 5) -> str:
    """The one start-up line: inputs, format, output or forward target, state dir, resumed offsets."""
    head = f"edge-tail {__version__}: format {settings.format}, {target(settings)}"
    if tailer is None:
        return f"{head}, reading stdin"
    resumed = [f"{t.name}@{t.offset}" for t in tailer.files.values() if t.offset]
    more = f" and {len(resumed) - shown} more" if len(resumed) > shown else ""
    return (f"{head}, tailing {len(tailer.files)} file(s) of {display(', '.join(settings.paths))} "
            f"(read-from {settings.read_from}), state dir {settings.state_dir}, "
            f"start offsets: {', '.join(resumed[:shown]) + more if resumed else 'all 0'}")


def _close_sink(sink: Sink) -> None:
    sink.close()
