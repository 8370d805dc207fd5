"""`edge-tail [OPTIONS] [PATH...]`: apply edge policies to log lines from files or stdin.

No path (or `-`) reads stdin until EOF. Paths and globs (`*`, `?` in the file name)
are tailed until SIGTERM or SIGINT, which flush the output, save the checkpoints and
exit 0. A bad option, an unreadable input or an unwritable output is one line on
stderr and exit status 2. See `edge-tail -h` and docs/configuration.md for every option.
"""

from __future__ import annotations

import faulthandler
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from edge import logs
from edge.tail.runner import TailStartupError, run
from edge.tail.settings import SettingsError, from_command_line

USAGE_ERROR = 2


def _fail(message: str) -> int:
    print(f"edge-tail: {logs.redact(message)}", file=sys.stderr)
    return USAGE_ERROR


def install_stop_handlers(stop: threading.Event, wakeup: threading.Event) -> None:
    """SIGTERM and SIGINT ask the pipeline to finish cleanly (flush, checkpoint, exit 0).

    A dedicated thread takes the signals with sigwait instead of a Python handler: a
    handler runs in the main thread between bytecodes, and setting `wakeup` there would
    take the event's lock while the main thread may already hold it (inside Event.wait
    or clear), hanging the tailer forever. Call this before any other thread starts, so
    every thread inherits the blocked mask.
    """
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)

    def take_signals() -> None:
        while True:
            signal.sigwait(signals)
            stop.set()
            wakeup.set()

    threading.Thread(target=take_signals, name="edge-tail-signals", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = from_command_line(argv)
    except SettingsError as exc:
        return _fail(str(exc))
    faulthandler.enable()
    logs.configure("debug" if settings.verbose else "info")
    for key in settings.unknown_config_keys:
        logging.getLogger("edge.tail").warning("config key %s: unknown, ignored", key)
    stop, wakeup = threading.Event(), threading.Event()
    install_stop_handlers(stop, wakeup)
    try:
        return run(settings, stop, wakeup)
    except TailStartupError as exc:
        return _fail(str(exc))


if __name__ == "__main__":
    sys.exit(main())
