"""edge-tail settings: the flags of docs/configuration.md, a JSON config file, `TERO_*` overrides.

Every option is declared once, as a field of `TailSettings` (default, kind, help, flags);
`OPTIONS` lists them, and the command line, the `-c` file, the environment and the
supervisor's `tail` config section are all read through it, so a value is validated the
same way wherever it comes from and an error names where the bad value came from
(`--poll-ms`, `TERO_POLL_MS`, `config key poll_ms`, `BATCH_SIZE`). Precedence: command line >
`TERO_*` > the sidecar collector's variables (`edge.tail.sidecar_env`) > file > defaults.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import orjson

from edge import __version__
from edge.formats.lines.records import FieldNames
from edge.tail import sidecar_env

STDIO = "-"
_OPTION = "edge.tail.option"  # the TailSettings field metadata that makes a field an option


class SettingsError(ValueError):
    """A bad option value, worded as one line for the operator."""


@dataclass(frozen=True, slots=True)
class Option:
    """One edge-tail option: its flag(s), kind and default."""

    name: str  # long flag with `_` (also the config-file key and the TERO_ suffix)
    kind: str  # "count" (positive int) | "text" | "choice" | "url" | "flag" | "pairs"
    default: Any
    help: str
    short: str = ""
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


class _Declared(NamedTuple):
    """What a TailSettings field says about its option beyond its name and default."""

    kind: str
    help: str
    short: str
    choices: tuple[str, ...]


def _option(default: Any, kind: str, help: str, *, short: str = "", choices: tuple[str, ...] = ()) -> Any:
    """A TailSettings field that is also an option: a flag, a `-c` file key and a `TERO_*` variable."""
    return field(default=default, metadata={_OPTION: _Declared(kind, help, short, choices)})


@dataclass(frozen=True, slots=True)
class TailSettings:
    """Resolved, validated edge-tail settings; each option is declared here, once (field name = option name)."""

    paths: tuple[str, ...] = ()
    output: str = _option(STDIO, "text", "output file (appended to) or - for stdout", short="-o")
    read_from: str = _option("tail", "choice", "start position of files present at startup",
                             choices=("head", "tail", "checkpoint"))
    format: str = _option("raw", "choice", "how lines map to policy fields", short="-f",
                          choices=("raw", "json", "logfmt", "regex", "auto"))
    patterns: str = _option("", "text", "file of RE2 patterns with named groups, one per line, tried before the "
                            "defaults (-f regex|auto)")
    time_key: str = _option("", "text", "json/logfmt time key (default timestamp|time|ts|@timestamp)")
    level_key: str = _option("", "text", "json/logfmt severity key (default level|severity|lvl|severity_text)")
    message_key: str = _option("", "text", "json/logfmt body key (default message|msg|log|body)")
    trace_id_key: str = _option("", "text", "json/logfmt hex trace id key (default trace_id|traceId|trace.id)")
    span_id_key: str = _option("", "text", "json/logfmt hex span id key (default span_id|spanId|span.id)")
    policy: str = _option("", "text", "policy file (JSON or YAML)", short="-p")
    exit_on_missing: bool = _option(False, "flag", "exit 2 when a named file or a glob's directory does not exist "
                                    "at start-up, instead of waiting for it")
    io_engine: str = _option("auto", "choice", "file watcher backend", choices=("auto", "inotify", "poll"))
    poll_ms: int = _option(200, "count", "poll interval")
    glob_interval_ms: int = _option(5000, "count", "glob re-expansion interval")
    rotate_wait_ms: int = _option(5000, "count", "keep draining a rotated file this long")
    removed_expire_ms: int = _option(60000, "count", "forget vanished files after this long")
    checkpoint_interval_ms: int = _option(5000, "count", "checkpoint flush cadence")
    checkpoint_sync_batch: int = _option(64, "count", "checkpoint WAL records per fsync")
    checkpoint_snapshot_interval_ms: int = _option(60000, "count", "checkpoint snapshot + WAL truncation cadence")
    checkpoint_ttl_ms: int = _option(259_200_000, "count", "forget checkpoints not updated this long")
    checkpoint_max_slots: int = _option(256, "count", "tracked files in the checkpoint store; oldest evicted")
    state_dir: str = _option(".tero", "text", "checkpoint directory")
    read_buf: int = _option(65536, "count", "bytes per read() call")
    max_line: int = _option(262144, "count", "longer lines (with --multiline-start: records) are cut to their "
                            "first N bytes")
    multiline_start: str = _option("", "text", "RE2 pattern of a record's first line: the lines after it that do "
                                   "not match join its record (stack traces)")
    multiline_timeout_ms: int = _option(1000, "count", "emit a multi-line record this long after its last line "
                                        "when no next record has started")
    write_buf: int = _option(65536, "count", "output buffer bytes")
    flush_interval_ms: int = _option(100, "count", "output flush cadence")
    flush_lines: int = _option(1024, "count", "flush after this many lines")
    forward_url: str = _option("", "url", "send lines as OTLP/HTTP logs to this URL instead of --output")
    forward_format: str = _option("protobuf", "choice", "OTLP encoding when forwarding",
                                  choices=("protobuf", "json"))
    http_timeout_s: int = _option(30, "count", "seconds before a forward request is abandoned and retried")
    retry_backoff_ms: int = _option(100, "count", "first retry delay; doubles up to 30 s, with jitter")
    max_retries: int | None = _option(None, "natural", "retries before a failing batch goes to the dead-letter "
                                      "directory of the state dir (default: retry forever)")
    max_buffer_records: int = _option(4000, "count", "forwarded records waiting for the target before reading "
                                      "pauses (whole batches)")
    no_trace_correlation: bool = _option(False, "flag", "leave trace and span id fields as attributes")
    batch_lines: int = _option(1000, "count", "log records per forwarded request")
    batch_interval_ms: int = _option(1000, "count", "send a partial forward batch after this long")
    resource: tuple[tuple[str, str], ...] = _option(
        (), "pairs", "resource attribute key=value for forwarded logs (repeatable)")
    verbose: bool = _option(False, "flag", "log at debug level", short="-v")
    explicit_output: bool = field(default=False, compare=False)
    unknown_config_keys: tuple[str, ...] = field(default=(), compare=False)  # warned about, as `edge` does

    @property
    def field_names(self) -> FieldNames:
        names = FieldNames.overridden(time=self.time_key, level=self.level_key, message=self.message_key,
                                      trace_id=self.trace_id_key, span_id=self.span_id_key)
        return replace(names, trace_id=(), span_id=()) if self.no_trace_correlation else names

    @property
    def stdin_mode(self) -> bool:
        return not self.paths or self.paths == (STDIO,)


OPTIONS: tuple[Option, ...] = tuple(Option(f.name, default=f.default, **f.metadata[_OPTION]._asdict())
                                    for f in fields(TailSettings) if _OPTION in f.metadata)
BY_NAME = {o.name: o for o in OPTIONS}


# ── value checks (one per kind) ──


def _count(where: str, value: Any) -> int:
    if isinstance(value, bool):
        raise SettingsError(f"{where}: expected a positive integer, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        value = int(value)
    if not isinstance(value, int):
        raise SettingsError(f"{where}: expected a positive integer, got {value!r}")
    if value <= 0:
        raise SettingsError(f"{where}: must be a positive integer, got {value}")
    return value


def _natural(where: str, value: Any) -> int:
    """A non-negative integer (0 allowed: no retry at all)."""
    zero = re.fullmatch(r"\s*0+\s*", value) is not None if isinstance(value, str) else value == 0
    if zero and not isinstance(value, bool):
        return 0
    return _count(where, value)


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"{where}: expected a string, got {value!r}")
    return value


def _choice(option: Option) -> Callable[[str, Any], str]:
    def check(where: str, value: Any) -> str:
        text = _text(where, value).strip().lower()
        if text not in option.choices:
            raise SettingsError(f"{where}: expected one of {', '.join(option.choices)}, got {value!r}")
        return text
    return check


def _url(where: str, value: Any) -> str:
    text = _text(where, value).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - validates the port number
    except ValueError:
        raise SettingsError(f"{where}: bad port in {text!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{where}: expected an http(s) URL, got {text!r}")
    return text


def _flag(where: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no", ""):
        return value.strip().lower() in ("true", "1", "yes")
    raise SettingsError(f"{where}: expected true or false, got {value!r}")


def _pairs(where: str, value: Any) -> tuple[tuple[str, str], ...]:
    """`key=value` items: a list, or one comma-separated string (environment variables)."""
    if isinstance(value, str):
        items: list[Any] = [item for item in value.split(",") if item.strip()]
    elif isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, dict):
        items = [f"{k}={v}" for k, v in value.items()]
    else:
        raise SettingsError(f"{where}: expected key=value items, got {value!r}")
    out = []
    for item in items:
        if not isinstance(item, str) or "=" not in item or not item.split("=", 1)[0].strip():
            raise SettingsError(f"{where}: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        out.append((key.strip(), text))
    return tuple(out)


def _checker(option: Option) -> Callable[[str, Any], Any]:
    if option.kind == "choice":
        return _choice(option)
    checks = {"count": _count, "natural": _natural, "text": _text, "url": _url, "flag": _flag, "pairs": _pairs}
    return checks[option.kind]


def _paths(where: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) and p for p in value):
        raise SettingsError(f"{where}: expected a list of paths")
    return tuple(value)


# ── merging the sources ──


def validate(values: Mapping[str, tuple[Any, str]], paths: tuple[Any, str] | None) -> TailSettings:
    """Check every (value, where) pair and build the settings; SettingsError on the first bad one."""
    resolved: dict[str, Any] = {}
    for name, (value, where) in values.items():
        resolved[name] = _checker(BY_NAME[name])(where, value)
    path_list = _paths(paths[1], paths[0]) if paths is not None else ()
    if STDIO in path_list and len(path_list) > 1:
        raise SettingsError("paths: '-' (stdin) cannot be mixed with file paths")
    settings = TailSettings(paths=path_list, explicit_output="output" in values, **resolved)
    if settings.forward_url and settings.explicit_output:
        raise SettingsError("--output and --forward-url are alternatives: give one of them")
    return settings


def _file_values(doc: Any, label: Callable[[str], str]) -> tuple[dict[str, tuple[Any, str]], tuple[Any, str] | None]:
    if not isinstance(doc, dict):
        raise SettingsError(f"{label('')}: expected a JSON object")
    values = {k: (v, label(k)) for k, v in doc.items() if k in BY_NAME}
    paths = (doc["paths"], label("paths")) if "paths" in doc else None
    return values, paths


def unknown_keys(doc: Mapping[str, Any]) -> list[str]:
    return [k for k in doc if k not in BY_NAME and k not in ("paths", "config")]


def _env_values(env: Mapping[str, str], prefix: str) -> dict[str, tuple[Any, str]]:
    out = {}
    for option in OPTIONS:
        name = prefix + option.name.upper()
        if name in env:
            out[option.name] = (env[name], name)
    return out


def read_config_file(path: str) -> Any:
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"config {path}: {exc.strerror or exc}") from None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise SettingsError(f"config {path}: not valid JSON: {exc}") from None


def from_mapping(doc: Mapping[str, Any], env: Mapping[str, str] | None = None, *,
                 key_prefix: str = "tail.", env_prefix: str = "TERO_TAIL_") -> TailSettings:
    """Settings from the supervisor's `tail` config section (environment `TERO_TAIL_*` wins)."""
    env = os.environ if env is None else env
    values, paths = _file_values(dict(doc), lambda k: f"config key {key_prefix}{k}".rstrip(". "))
    values.update(_env_values(env, env_prefix))
    return validate(values, paths)


_METAVARS = {"count": "N", "natural": "N", "text": "PATH", "url": "URL"}
_KEY_SUFFIX = "_key"
_NAMED_METAVARS = {"multiline_start": "REGEX"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-tail", argument_default=argparse.SUPPRESS,
        description="Tail files (or stdin), apply edge policies to each line, write or forward what is kept.",
        epilog="Every option can also be set in the -c file (key = long name with _) or as TERO_<NAME>.")
    parser.add_argument("-c", "--config", metavar="PATH", help="JSON config (keys = long flag names with _)")
    for option in OPTIONS:
        flags = [f for f in (option.short, option.flag) if f]
        if option.kind == "flag":
            parser.add_argument(*flags, dest=option.name, action="store_true", help=option.help)
        elif option.kind == "pairs":
            parser.add_argument(*flags, dest=option.name, action="append", metavar="KEY=VALUE", help=option.help)
        else:
            metavar = "|".join(option.choices) if option.choices else _METAVARS[option.kind]
            if option.name.endswith(_KEY_SUFFIX):
                metavar = "KEY"
            metavar = _NAMED_METAVARS.get(option.name, metavar)
            shown = f" (default {option.default})" if option.default not in ("", None) else ""
            parser.add_argument(*flags, dest=option.name, metavar=metavar, help=f"{option.help}{shown}")
    parser.add_argument("paths", nargs="*", metavar="PATH", help="files or globs (* and ? in the file name); "
                        "none or - reads stdin")
    parser.add_argument("--version", action="version", version=f"edge-tail {__version__}")
    return parser


def from_command_line(argv: Sequence[str] | None, env: Mapping[str, str] | None = None) -> TailSettings:
    """Parse the command line; argparse itself exits 2 on unknown flags or missing values."""
    env = os.environ if env is None else env
    args = vars(build_parser().parse_intermixed_args(argv))
    values: dict[str, tuple[Any, str]] = {}
    paths: tuple[Any, str] | None = None
    if "config" in args:
        values, paths = _file_values(read_config_file(args["config"]),
                                     lambda k: f"config key {k}" if k else f"config {args['config']}")
    values.update(sidecar_env.values(env))
    paths = sidecar_env.paths(env) or paths
    values.update(_env_values(env, "TERO_"))
    for option in OPTIONS:
        if option.name in args:
            values[option.name] = (args[option.name], option.flag)
    if args.get("paths"):
        paths = (args["paths"], "paths")
    settings = validate(values, paths)
    if "config" in args:
        doc = read_config_file(args["config"])
        settings = replace(settings, unknown_config_keys=tuple(unknown_keys(doc)) if isinstance(doc, dict) else ())
    return settings
