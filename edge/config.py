"""The proxy's configuration: the keys of docs/configuration.md, their defaults, env overrides and `${VAR}`.

Every key is declared once, as a field of `Config` or of one of its section classes: the
field's default and annotation are the key's default and type, and its metadata (`setting`
for a scalar, `section` for an object or a list) holds the one-line doc, the check, and how
a default that depends on other keys is derived. `build`, the `TERO_*` overrides and the
README's config reference (a test compares them) are all read from that declaration.

Order of precedence: command line > environment > file > defaults. Any scalar key can be
overridden with `TERO_` + its path joined by `_` in upper case (`TERO_LOG_LEVEL`,
`TERO_PROMETHEUS_MAX_INPUT_BYTES_PER_SCRAPE`). Then `${VAR}` is substituted in every
string (unset -> empty, `$${` -> literal `${`). A bad value is one `ConfigError` naming
the key; unknown keys are reported as warnings and ignored.
"""

from __future__ import annotations

import math
import os
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from functools import cache, partial
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, get_type_hints
from urllib.parse import SplitResult, urlsplit

import msgspec
import orjson

from edge import __version__, cpu_quota
from edge.logs import level_name
from edge.tail.settings import SettingsError, from_mapping, unknown_keys
from edge.tailsampling.policy_config import Policy, PolicyConfigError, validate_policies

_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_METADATA = "edge.config"
# Request bodies, raw and decoded: the OpenTelemetry Collector's receivers accept 20 MiB, and an SDK's
# default batch (512 records) of ~3 KB records is 1.5 MiB before compression.
MAX_BODY_DEFAULT = 20 << 20
_T = TypeVar("_T")


class ConfigError(ValueError):
    """A configuration problem, worded as one line for the operator."""


# ── the declaration: what a key's field metadata says about it ──

Check = Callable[[str, Any], Any]
"""Validates a coerced value (and may normalise it); gets the key's dotted path for the error."""
Parse = Callable[[str, Any], Any]
"""Turns a key's JSON value or env text into its type, where the default coercion does not fit (durations)."""
Derive = Callable[[Mapping[str, Any]], Any]
"""Computes a key left at its declared default from the other keys of its section."""
Reader = Callable[[str, Any, Mapping[str, str]], tuple[Any, list[str]]]
"""Parses a section's raw value (key path, value, environment) into its field value and warnings."""


@dataclass(frozen=True, slots=True)
class Setting:
    """A scalar key (JSON string, number or boolean), overridable as `TERO_<PATH>`."""

    doc: str
    check: Check | None = None
    derive: Derive | None = None  # set: the declared default stands for "computed from other keys"
    default_text: str = ""  # the default as documented, where it is not the literal value
    parse: Parse | None = None  # None: the JSON type of the annotation, or its text


@dataclass(frozen=True, slots=True)
class Section:
    """A key holding an object or a list; `read` parses it, None: an object of its class's own keys."""

    doc: str
    read: Reader | None = None
    default_text: str = ""


def setting(default: Any, doc: str, *, check: Check | None = None, derive: Derive | None = None,
            default_text: str = "", parse: Parse | None = None) -> Any:
    """Declare a scalar key as a dataclass field."""
    return field(default=default, metadata={_METADATA: Setting(doc, check, derive, default_text, parse)})


def section(factory: Callable[[], Any], doc: str, *, read: Reader | None = None, default_text: str = "") -> Any:
    """Declare an object or list key as a dataclass field."""
    return field(default_factory=factory, metadata={_METADATA: Section(doc, read, default_text)})


class Key(NamedTuple):
    """One declared key of a config class, as `build` and the README check read it."""

    name: str
    kind: Any  # the resolved annotation: a type, or a generic alias such as tuple[X, ...]
    default: Any  # dataclasses.MISSING for sections (they have a factory)
    spec: Setting | Section


@cache
def declared_keys(cls: type) -> tuple[Key, ...]:
    """The keys of a config class in declaration order (fields without metadata are not keys)."""
    hints = get_type_hints(cls)
    return tuple(Key(f.name, hints[f.name], f.default, f.metadata[_METADATA])
                 for f in fields(cls) if _METADATA in f.metadata)


def env_name(path: tuple[str, ...]) -> str:
    """`("service", "name")` -> `TERO_SERVICE_NAME`."""
    return "TERO_" + "_".join(path).upper()


# ── checks ──


def _positive(key: str, value: int) -> int:
    if value <= 0:
        raise ConfigError(f"config key {key}: must be positive, got {value}")
    return value


def _zero_or_more(key: str, value: int) -> int:
    if value < 0:
        raise ConfigError(f"config key {key}: must be zero or more, got {value}")
    return value


def _port(key: str, value: int) -> int:
    if not 0 <= value <= 65535:
        raise ConfigError(f"config key {key}: expected 0..65535, got {value}")
    return value


def _timeout(key: str, value: float) -> float:
    if not math.isfinite(value) or value <= 0:  # NaN compares false with everything; inf cannot go to JSON
        raise ConfigError(f"config key {key}: must be positive")
    return value


def _log_level(key: str, value: str) -> str:
    """The documented spelling (`warning` -> `warn`, `error` -> `err`), so logs and docs agree."""
    level = level_name(value)
    if level is None:
        raise ConfigError(f"config key {key}: expected trace, debug, info, warn or err, got {value!r}")
    return level


UNFILTERED_MODES = ("forward", "reject")


def _one_of(choices: tuple[str, ...]) -> Check:
    """A check for a setting that names one of `choices` (any case, surrounding blanks ignored)."""
    expected = f"{', '.join(choices[:-1])} or {choices[-1]}"

    def check(key: str, value: str) -> str:
        choice = value.strip().lower()
        if choice not in choices:
            raise ConfigError(f"config key {key}: expected {expected}, got {value!r}")
        return choice

    return check


def _url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"config key {key}: expected an http(s) URL, got {value!r}")
    _check_port(key, value, parts)
    return value.rstrip("/")


def _check_port(key: str, value: str, parts: SplitResult) -> None:
    """A URL's port, if it names one, is a number within 0-65535."""
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ConfigError(f"config key {key}: bad port in {value!r}") from None


def _optional_url(key: str, value: str) -> str:
    return _url(key, value) if value else value


GRPC_SCHEMES = ("grpc", "grpcs")  # a signal URL with one of these forwards that signal's OTLP over gRPC
UPSTREAM_PROTOCOLS = ("http", "grpc")


def _signal_url(key: str, value: str) -> str:
    """An OTLP signal's URL: http(s), or grpc(s) (a gRPC endpoint: host and port, no path)."""
    if not value or urlsplit(value).scheme not in GRPC_SCHEMES:
        return _optional_url(key, value)
    parts = urlsplit(value.rstrip("/"))
    if not parts.hostname or parts.path or parts.query or parts.fragment:
        raise ConfigError(f"config key {key}: expected grpc(s)://host:port without a path, got {value!r}")
    _check_port(key, value, parts)
    return value.rstrip("/")


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Accept the JSON type or, for env overrides, its text; anything else is a ConfigError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        if isinstance(value, int) and not isinstance(value, bool):
            if not -(1 << 63) <= value < 1 << 63:  # what JSON (and so the workers' copy) carries
                raise ConfigError(f"config key {key}: {value} is out of the 64-bit integer range")
            return value
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, str):
        return value
    raise ConfigError(f"config key {key}: expected {kind.__name__}, got {value!r}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION = re.compile(f"(?:{_DURATION_PART.pattern})+")
_SECONDS_PER_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(key: str, value: Any) -> float:
    """Seconds, from a Collector (Go) duration such as `30s`, `500ms` or `1m30s`, or from a number of seconds.

    Collector configs are pasted as they are, so their spelling is accepted; a bare number (JSON
    or `TERO_*` text) keeps meaning seconds as everywhere else in edge's config."""
    if isinstance(value, str) and _DURATION.fullmatch(text := value.strip()):
        return sum(float(number) * _SECONDS_PER_UNIT[unit] for number, unit in _DURATION_PART.findall(text))
    try:
        return _coerce(key, value, float)
    except ConfigError:
        raise ConfigError(f"config key {key}: expected a duration such as 30s, 500ms, 1m or a number of "
                          f"seconds, got {value!r}") from None


# ── reading a config class from its sub-document ──


def _read(cls: type[_T], raw: Mapping[str, Any], prefix: str, env: Mapping[str, str]) -> tuple[_T, list[str]]:
    """Unknown keys warned about; every scalar coerced, then checked; sections read; derived defaults last."""
    keys = declared_keys(cls)
    names = {key.name for key in keys}
    warnings = [f"config key {prefix}{k}: unknown, ignored" for k in raw if k not in names]
    values = {key.name: (key.spec.parse or partial(_coerce, kind=key.kind))(prefix + key.name, raw[key.name])
              for key in keys if isinstance(key.spec, Setting) and key.name in raw}
    for key in keys:
        if isinstance(key.spec, Section):
            values[key.name], more = _read_section(key.spec, key.kind, prefix + key.name, raw.get(key.name), env)
            warnings += more
        elif key.name not in values:
            values[key.name] = key.default
        elif key.spec.check is not None:
            values[key.name] = key.spec.check(prefix + key.name, values[key.name])
    for key in keys:
        if isinstance(key.spec, Setting) and key.spec.derive is not None and values[key.name] == key.default:
            values[key.name] = key.spec.derive(values)
    return cls(**values), warnings


def _read_section(spec: Section, kind: Any, path: str, raw: Any, env: Mapping[str, str]) -> tuple[Any, list[str]]:
    """A section without a reader of its own is an object of its class's keys; absent or empty: all defaults."""
    if spec.read is not None:
        return spec.read(path, raw, env)
    return _read_object(kind, path, raw, env)


def _read_object(cls: type[_T], path: str, raw: Any, env: Mapping[str, str]) -> tuple[_T, list[str]]:
    """An object of `cls`'s keys at `path` (absent or empty: all defaults); readers with checks of their
    own start here."""
    raw = raw or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {path}: expected an object")
    return _read(cls, raw, f"{path}.", env)


# ── the sections ──


@dataclass(frozen=True)
class ProviderConfig:
    """One entry of `policy_providers`: a policy file to watch or a sync server to poll."""

    id: str
    type: str  # "file" | "http"
    path: str = ""
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    poll_interval: float = 60.0
    max_response_bytes: int = 16 << 20  # a larger sync reply is refused, keeping the last good policies


def _providers(key: str, raw: Any, env: Mapping[str, str]) -> tuple[tuple[ProviderConfig, ...], list[str]]:
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise ConfigError(f"config key {key}: expected a list")
    out = [_provider(f"{key}[{i}]", i, item) for i, item in enumerate(raw)]
    ids = [p.id for p in out]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"config key {key}: provider ids must be unique")
    return tuple(out), []


def _provider(where: str, index: int, item: Any) -> ProviderConfig:
    if not isinstance(item, dict):
        raise ConfigError(f"config key {where}: expected an object")
    kind = item.get("type")
    if kind not in ("file", "http"):
        raise ConfigError(f"config key {where}.type: expected file or http, got {kind!r}")
    ident = str(item.get("id") or f"{kind}-{index}")
    interval = item.get("poll_interval", item.get("poll_interval_secs", ProviderConfig.poll_interval))
    interval = _coerce(f"{where}.poll_interval", interval, float)
    if interval <= 0:
        raise ConfigError(f"config key {where}.poll_interval: must be positive, got {interval:g}")
    headers = item.get("headers") or []
    if not isinstance(headers, list) or not all(isinstance(h, dict) and "name" in h for h in headers):
        raise ConfigError(f"config key {where}.headers: expected a list of {{name, value}}")
    if kind == "file":
        path = item.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"config key {where}.path: a file provider needs a path")
        return ProviderConfig(ident, kind, path=path, poll_interval=interval)
    url = _url(f"{where}.url", str(item.get("url") or ""))
    cap = _coerce(f"{where}.max_response_bytes", item.get("max_response_bytes", ProviderConfig.max_response_bytes), int)
    if cap <= 0:
        raise ConfigError(f"config key {where}.max_response_bytes: must be positive, got {cap}")
    return ProviderConfig(ident, kind, url=url, poll_interval=interval, max_response_bytes=cap,
                          headers=tuple((str(h["name"]), str(h.get("value", ""))) for h in headers))


@dataclass(frozen=True)
class ServiceConfig:
    """Who this proxy is, as reported to policy servers."""

    name: str = setting("tero-edge", "the `service.name` attribute of sync requests")
    namespace: str = setting("tero", "the `service.namespace` attribute of sync requests")
    version: str = setting(__version__, "the `service.version` attribute of sync requests",
                           default_text="the package version")
    instance_id: str = setting("", "the `service.instance.id` attribute; a fresh one per start unless set",
                               derive=lambda _: str(uuid.uuid4()), default_text="generated")


@dataclass(frozen=True)
class PrometheusConfig:
    """Where scrapes go, and bounds on one, so memory stays bounded whatever the upstream serves."""

    scrape_url: str = setting("", "scrapes are fetched from this URL + the same path and query", check=_optional_url,
                              default_text="`metrics_url`")
    max_input_bytes_per_scrape: int = setting(10_485_760, "scrape bytes read from upstream; 0 = unlimited",
                                              check=_zero_or_more)
    max_output_bytes_per_scrape: int = setting(10_485_760, "scrape bytes answered; 0 = unlimited",
                                               check=_zero_or_more)


def _path(key: str, value: str) -> str:
    if not value.startswith("/") or any(c in value for c in "?# "):
        raise ConfigError(f"config key {key}: expected a path starting with /, got {value!r}")
    return value


@dataclass(frozen=True)
class OtlpConfig:
    """Where OTLP/HTTP senders post each signal: an SDK endpoint with a path prefix is filtered too."""

    logs_path: str = setting("/v1/logs", "OTLP logs", check=_path)
    metrics_path: str = setting("/v1/metrics", "OTLP metrics", check=_path)
    traces_path: str = setting("/v1/traces", "OTLP traces", check=_path)

    def paths(self) -> dict[str, str]:
        """Signal -> the path its OTLP requests are filtered on."""
        return {"log": self.logs_path, "metric": self.metrics_path, "trace": self.traces_path}


def _otlp(key: str, raw: Any, env: Mapping[str, str]) -> tuple[OtlpConfig, list[str]]:
    """The otlp section: one path per signal, no two signals on the same path."""
    config, warnings = _read_object(OtlpConfig, key, raw, env)
    paths = list(config.paths().values())
    if len(set(paths)) != len(paths):
        raise ConfigError(f"config key {key}: logs_path, metrics_path and traces_path must differ, got {paths}")
    return config, warnings


@dataclass(frozen=True)
class S3Target:
    """Where the s3-dump extension writes; an empty endpoint/region means AWS's defaults."""

    name: str
    bucket: str
    endpoint: str = ""
    region: str = ""
    prefix: str = ""


def _s3_targets(key: str, raw: Any, env: Mapping[str, str]) -> tuple[tuple[S3Target, ...], list[str]]:
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise ConfigError(f"config key {key}: expected a list")
    out = tuple(_s3_target(f"{key}[{i}]", item) for i, item in enumerate(raw))
    names = [t.name for t in out]
    if len(names) != len(set(names)):
        raise ConfigError(f"config key {key}: target names must be unique")
    return out, []


def _s3_target(where: str, item: Any) -> S3Target:
    if not isinstance(item, dict):
        raise ConfigError(f"config key {where}: expected an object")
    values = {f.name: _coerce(f"{where}.{f.name}", item[f.name], str) for f in fields(S3Target)
              if item.get(f.name) is not None}
    if not values.get("bucket"):
        raise ConfigError(f"config key {where}.bucket: a target needs a bucket")
    values.setdefault("name", values["bucket"])
    if values.get("endpoint"):
        values["endpoint"] = _url(f"{where}.endpoint", values["endpoint"])
    if "prefix" in values:
        values["prefix"] = values["prefix"].strip("/")
    return S3Target(**values)


@dataclass(frozen=True)
class S3DumpConfig:
    """The s3-dump extension: its buckets and how records are batched on their way there."""

    enabled: bool = setting(False, "run the s3-dump extension")
    targets: tuple[S3Target, ...] = section(tuple, "buckets the extension may write to", read=_s3_targets,
                                            default_text="none")
    flush_interval_ms: int = setting(5000, "upload a partial batch after this long", check=_positive)
    max_batch_bytes: int = setting(1_048_576, "upload a batch once it holds this many bytes", check=_positive)
    max_batch_records: int = setting(10_000, "upload a batch once it holds this many records", check=_positive)
    max_queued_batches: int = setting(32, "sealed batches waiting for upload; beyond it the oldest is dropped",
                                      check=_positive)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> S3DumpConfig:
        """The section from its `Config.to_json` form."""
        return msgspec.convert(doc, cls)


def _s3_dump(key: str, raw: Any, env: Mapping[str, str]) -> tuple[S3DumpConfig, list[str]]:
    """The s3_dump section (docs/configuration.md): absent means off; enabled without a target is an error."""
    if raw is None:
        return S3DumpConfig(), []
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {key}: expected an object")
    config, warnings = _read(S3DumpConfig, raw, f"{key}.", env)
    if config.enabled and not config.targets:
        raise ConfigError(f"config key {key}.targets: {key} is enabled but names no target")
    return config, warnings


def _tail(key: str, raw: Any, env: Mapping[str, str]) -> tuple[Mapping[str, Any], list[str]]:
    """Validate the tail worker's section with edge-tail's own checks; kept as written for the worker."""
    if raw is None:
        return {}, []
    if not isinstance(raw, dict):
        raise ConfigError(f"config key {key}: expected an object")
    try:
        settings = from_mapping(raw, env)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    if raw and (settings.stdin_mode or "-" in settings.paths):
        raise ConfigError(f"config key {key}.paths: the tail worker needs a list of files or globs to tail")
    return raw, [f"config key {key}.{k}: unknown, ignored" for k in unknown_keys(raw)]


@dataclass(frozen=True)
class GrpcConfig:
    """The OTLP/gRPC receiver (`grpc`), served by its own worker processes next to the HTTP workers."""

    enabled: bool = setting(True, "serve OTLP/gRPC (distributions `edge` and `otlp`)")
    listen_address: str = setting("127.0.0.1", "address the gRPC receiver listens on")
    listen_port: int = setting(4317, "port the gRPC receiver listens on", check=_port)
    max_recv_msg_size: int = setting(0, "bytes of one request message; more is RESOURCE_EXHAUSTED; 0 = "
                                     "`max_body_size`", check=_zero_or_more, default_text="`max_body_size`")
    tls_cert_file: str = setting("", "PEM certificate (chain) for server TLS; with `tls_key_file`, else plaintext",
                                 default_text="none")
    tls_key_file: str = setting("", "PEM private key for server TLS", default_text="none")

    def message_limit(self, max_body_size: int) -> int:
        """The largest request message accepted: the key, else the HTTP body limit."""
        return self.max_recv_msg_size or max_body_size


def _grpc(key: str, raw: Any, env: Mapping[str, str]) -> tuple[GrpcConfig, list[str]]:
    """The grpc section: TLS needs both files, and both readable (checked here, not in every worker)."""
    config, warnings = _read_object(GrpcConfig, key, raw, env)
    if bool(config.tls_cert_file) != bool(config.tls_key_file):
        raise ConfigError(f"config key {key}: tls_cert_file and tls_key_file must be set together")
    for name in ("tls_cert_file", "tls_key_file"):
        path = getattr(config, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"config key {key}.{name}: cannot read {path!r}")
    return config, warnings


# ── tail sampling (docs/tail-sampling.md) ──

DEFAULT_WAL_DIR = ".tero/tail-sampling-wal"  # next to edge-tail's `.tero` state: relative to the working directory
WAL_FSYNC_MODES = ("interval", "always", "never")
_MEMBER = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def _member(key: str, value: str) -> str:
    """A peer as `host:port` (`[v6]:port` for an IPv6 address): the form members are hashed and dialled by."""
    match = _MEMBER.match(value.strip())
    if match is None or not 0 < int(match.group(2)) <= 65535:
        raise ConfigError(f"config key {key}: expected host:port, got {value!r}")
    return value.strip()


def member_address(host: str, port: int) -> str:
    """`host:port`, bracketing an IPv6 address."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _static_peers(key: str, raw: Any, env: Mapping[str, str]) -> tuple[tuple[str, ...], list[str]]:
    if raw is None:
        return (), []
    if not isinstance(raw, list):
        raise ConfigError(f"config key {key}: expected a list of host:port")
    return tuple(_member(f"{key}[{i}]", _coerce(f"{key}[{i}]", item, str)) for i, item in enumerate(raw)), []


@dataclass(frozen=True)
class DecisionCacheConfig:
    """Trace ids remembered after their decision, so late spans follow it instead of starting a new trace."""

    sampled_cache_size: int = setting(0, "sampled trace ids remembered; their late spans are sampled too; 0 = off",
                                      check=_zero_or_more)
    non_sampled_cache_size: int = setting(0, "not-sampled trace ids remembered; their late spans are rolled up "
                                          "and dropped; 0 = off", check=_zero_or_more)


@dataclass(frozen=True)
class PeersConfig:
    """The instances sharing the traces: each trace id is owned by one of them (rendezvous hashing)."""

    static: tuple[str, ...] = section(tuple, "the members as host:port, this instance included", read=_static_peers,
                                      default_text="none")
    dns: str = setting("", "a name resolving to every member's address (a headless Service)", default_text="none")
    port: int = setting(8080, "the members' port when they come from `dns`", check=_port)
    interval: float = setting(5.0, "how often `dns` is resolved again", parse=_duration, check=_timeout,
                              default_text="5s")
    advertise: str = setting("", "this instance's host:port among the members",
                             default_text="`$POD_IP` or `listen_address`, with `listen_port`")


def _export_headers(key: str, raw: Any, env: Mapping[str, str]) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """`{name: value}` as the Collector's exporters write headers; values are strings (`${VAR}` expanded)."""
    raw = raw or {}
    if not isinstance(raw, dict) or not all(isinstance(v, str) and k for k, v in raw.items()):
        raise ConfigError(f"config key {key}: expected an object of header names to string values")
    return tuple(raw.items()), []


def _peers(key: str, raw: Any, env: Mapping[str, str]) -> tuple[PeersConfig, list[str]]:
    """One way of finding the members: a static list or a DNS name."""
    config, warnings = _read_object(PeersConfig, key, raw, env)
    if config.static and config.dns:
        raise ConfigError(f"config key {key}: static and dns exclude each other; set one")
    if config.advertise:
        _member(f"{key}.advertise", config.advertise)
    return config, warnings


@dataclass(frozen=True)
class TailLogsConfig:
    """Logs that belong to buffered traces."""

    follow_traces: bool = setting(False, "logs carrying the id of a buffered trace are held and leave, or are "
                                  "dropped, with their trace")


def _tail_policies(key: str, raw: Any, env: Mapping[str, str]) -> tuple[tuple[Policy, ...], list[str]]:
    try:
        return validate_policies(key, raw)
    except PolicyConfigError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class TailSamplingConfig:
    """Whole-trace sampling after `decision_wait`, Collector-compatible (`tail_sampling` processor keys)."""

    enabled: bool = setting(False, "run the sampler process and send traces through it")
    decision_wait: float = setting(30.0, "from a trace's first span to its decision", parse=_duration,
                                   check=_timeout, default_text="30s")
    num_traces: int = setting(50_000, "traces buffered at once; beyond it the oldest are decided early",
                              check=_positive)
    expected_new_traces_per_sec: int = setting(0, "a sizing hint only", check=_zero_or_more)
    decision_cache: DecisionCacheConfig = section(DecisionCacheConfig, "late spans follow their trace's decision",
                                                  default_text="off")
    sample_on_first_match: bool = setting(False, "stop evaluating policies at the first one that samples")
    policies: tuple[Policy, ...] = section(tuple, "`{name, type, <type>: {...}}`, checked at load",
                                           read=_tail_policies, default_text="none")
    max_buffer_bytes: int = setting(268_435_456, "span bytes buffered; beyond it the oldest traces are decided early",
                                    check=_positive)
    wal_dir: str = setting("", "the write-ahead log's directory", derive=lambda _: DEFAULT_WAL_DIR,
                           default_text=f"`{DEFAULT_WAL_DIR}`")
    wal_fsync: str = setting("interval", "interval, always or never", check=_one_of(WAL_FSYNC_MODES))
    wal_fsync_interval: float = setting(0.1, "between syncs under `interval`", parse=_duration, check=_timeout,
                                        default_text="100ms")
    max_wal_bytes: int = setting(1_073_741_824, "write-ahead log bytes; beyond it senders get 503 with Retry-After",
                                 check=_positive)
    peers: PeersConfig = section(PeersConfig, "the instances sharing the traces", read=_peers, default_text="none")
    rollup_interval: float = setting(60.0, "how often span metrics of what is not sampled are sent",
                                     parse=_duration, check=_timeout, default_text="60s")
    rollup_cardinality_limit: int = setting(1000, "span metric series per interval; more fold into one overflow "
                                            "series", check=_positive)
    metrics_url: str = setting("", "where span metrics go (OTLP/HTTP protobuf)", check=_optional_url,
                               default_text="`metrics_url` + `/v1/metrics`")
    export_queue_bytes: int = setting(67_108_864, "sampled trace bytes waiting for the traces upstream",
                                      check=_positive)
    export_headers: tuple[tuple[str, str], ...] = section(
        tuple, "headers sent with every export (sampled traces, span metrics, held logs), such as the backend's "
        "API key: `{name: value}`, `${VAR}` expanded; the senders' own headers do not reach these exports",
        read=_export_headers, default_text="none")
    logs: TailLogsConfig = section(TailLogsConfig, "logs of buffered traces", default_text="off")


def _tail_sampling(key: str, raw: Any, env: Mapping[str, str]) -> tuple[TailSamplingConfig, list[str]]:
    """The tail_sampling section: enabled without a policy would drop every trace, so it is an error."""
    config, warnings = _read_object(TailSamplingConfig, key, raw, env)
    if config.enabled and not config.policies:
        raise ConfigError(f"config key {key}.policies: {key} is enabled but has no policy: no trace would be sampled")
    return config, warnings


def _resolve_tail_sampling(config: Config, env: Mapping[str, str]) -> Config:
    """The tail_sampling defaults taken from outside the section: the rollup URL and this instance's address."""
    tail = config.tail_sampling
    if tail.enabled:
        exported = ("traces_url", "metrics_url" if not tail.metrics_url else "",
                    "logs_url" if tail.logs.follow_traces else "")
        for key in filter(None, exported):
            if config.over_grpc(getattr(config, key)):
                raise ConfigError(f"config key {key}: the tail sampler exports over OTLP/HTTP; a gRPC upstream "
                                  "is not supported with tail_sampling.enabled (give an http(s) URL)")
    metrics_url = tail.metrics_url or f"{config.metrics_url}/v1/metrics"
    advertise = tail.peers.advertise or member_address(env.get("POD_IP") or config.listen_address, config.listen_port)
    return replace(config, tail_sampling=replace(tail, metrics_url=metrics_url,
                                                 peers=replace(tail.peers, advertise=advertise)))


# ── the whole configuration (field order = the README reference's row order) ──


@dataclass(frozen=True)
class Config:
    """The resolved configuration the supervisor validates and hands to every worker."""

    listen_address: str = setting("127.0.0.1", "address the proxy listens on")
    listen_port: int = setting(8080, "port the proxy listens on", check=_port)
    upstream_url: str = setting("http://127.0.0.1:80", "passthrough, and the signal URLs' default", check=_url)
    logs_url: str = setting("", "OTLP logs and Datadog logs; `grpc(s)://host:port`: OTLP logs over gRPC",
                            check=_signal_url, derive=itemgetter("upstream_url"), default_text="`upstream_url`")
    metrics_url: str = setting("", "OTLP metrics, Datadog series, Prometheus scrapes; `grpc(s)://host:port`: "
                               "OTLP metrics over gRPC", check=_signal_url, derive=itemgetter("upstream_url"),
                               default_text="`upstream_url`")
    traces_url: str = setting("", "OTLP traces; `grpc(s)://host:port`: over gRPC", check=_signal_url,
                              derive=itemgetter("upstream_url"), default_text="`upstream_url`")
    upstream_protocol: str = setting(
        "http", "how OTLP leaves edge: `http` (OTLP/HTTP) or `grpc` (OTLP/gRPC); a `grpc://` or `grpcs://` "
        "signal URL is gRPC whatever this says; see [gRPC upstreams](#grpc-upstreams)",
        check=_one_of(UPSTREAM_PROTOCOLS))
    log_level: str = setting("info", "trace, debug, info, warn, err; JSON lines on stderr", check=_log_level)
    max_body_size: int = setting(MAX_BODY_DEFAULT, "raw request bytes; more is 413", check=_positive)
    max_decoded_bytes: int = setting(
        0, "after decompression; more is unfiltered (see `unfiltered`)", check=_zero_or_more,
        derive=lambda keys: max(MAX_BODY_DEFAULT, keys["max_body_size"]),
        default_text="20971520, or `max_body_size` if larger")
    unfiltered: str = setting(
        "forward", "a request edge cannot filter (too large decoded, unknown codec, undecodable, nested too deep, "
        "internal error): `forward` it as received or `reject` it (413, 415, 400, 500); counted in "
        "`edge_unfiltered_requests_total`", check=_one_of(UNFILTERED_MODES))
    max_connections: int = setting(
        256, "requests in flight for the instance; each worker admits its share and answers 503 with "
        "`Retry-After: 1` beyond it; `/_health` and `/_edge/*` are always answered", check=_positive)
    workers: int = setting(
        0, "ASGI worker processes; 0 = the cgroup CPU quota (`cpu.max`, else `cpu.cfs_quota_us`) rounded up, "
        "at most one per core the process may run on",
        check=_zero_or_more, derive=lambda _: cpu_quota.available_cpus(), default_text="one per CPU")
    upstream_timeout: float = setting(30.0, "seconds; slower upstreams give 504", check=_timeout)
    client_body_timeout: float = setting(
        30.0, "seconds from a request's headers to the end of its body; later: 408 and the connection closed",
        check=_timeout)
    tls_insecure_skip_verify: bool = setting(False, "upstream TLS is verified unless set")
    workspace_id: str = setting("", "the Tero workspace this proxy belongs to; sent with every policy sync request "
                                "as the `workspace.id` resource attribute", default_text="none")
    otlp: OtlpConfig = section(OtlpConfig, "the OTLP/HTTP paths filtered, per signal (as the Collector's receiver)",
                               read=_otlp)
    service: ServiceConfig = section(ServiceConfig, "reported to policy servers")
    policy_providers: tuple[ProviderConfig, ...] = section(
        tuple, "`{id, type: file, path}` (reloaded within 2 s of a change; a broken file keeps the last good "
        "policies) or `{id, type: http, url, headers: [{name, value}], poll_interval, max_response_bytes}` "
        "(sync protocol, JSON; backoff with jitter on failure; redirects followed within the server's origin "
        "only; replies over `max_response_bytes`, default 16 MiB, refused; one sync ends within 10 s); http "
        "wins over file for the same policy id",
        read=_providers, default_text="none")
    prometheus: PrometheusConfig = section(
        PrometheusConfig, "the scrape target (empty: `metrics_url`); byte limits: 0 = unlimited, the scrape ends "
        "at a line boundary, logged as truncated and counted in `edge_prometheus_scrapes_truncated_total`")
    s3_dump: S3DumpConfig = section(
        S3DumpConfig, "`targets: [{name, bucket, endpoint, region, prefix}]`; see "
        "[s3-dump](#the-s3-dump-extension)", read=_s3_dump)
    grpc: GrpcConfig = section(
        GrpcConfig, "the OTLP/gRPC receiver (distributions `edge` and `otlp`): one process per HTTP worker, "
        "sharing the port; a message over `max_recv_msg_size` (0 = `max_body_size`) is RESOURCE_EXHAUSTED; server "
        "TLS when both PEM files are set; see [OTLP/gRPC](#otlpgrpc)", read=_grpc)
    tail: Mapping[str, Any] = section(
        dict, "edge-tail's options (long flag names with `_`) plus `paths: [...]`: the supervisor runs the tail "
        "pipeline as a child process, restarts it if it dies and stops it with SIGTERM; it uses the section's "
        "`policy` file, else the proxy's policies", read=_tail, default_text="none")
    tail_sampling: TailSamplingConfig = section(
        TailSamplingConfig, "whole-trace sampling after `decision_wait`, with the Collector's `tail_sampling` keys "
        "and policy types (durations: `30s`, `500ms`, `1m` or seconds); a sampler process buffers, logs to "
        "`wal_dir`, decides, exports and rolls up; see [tail sampling](docs/tail-sampling.md)", read=_tail_sampling)
    warnings: tuple[str, ...] = ()

    def otlp_urls(self) -> dict[str, str]:
        """Signal -> where its OTLP goes (both receivers, HTTP and gRPC)."""
        return {"log": self.logs_url, "metric": self.metrics_url, "trace": self.traces_url}

    def over_grpc(self, url: str) -> bool:
        """Whether OTLP sent to this URL goes over gRPC: a grpc(s) scheme, or `upstream_protocol: grpc`."""
        return self.upstream_protocol == "grpc" or urlsplit(url).scheme in GRPC_SCHEMES

    def http_url(self, url: str) -> str:
        """The URL for what only speaks HTTP (Datadog intake, Prometheus scrapes): a signal URL that is
        a gRPC endpoint cannot take it, so `upstream_url` does."""
        return self.upstream_url if self.over_grpc(url) else url

    def to_json(self) -> bytes:
        """The resolved configuration (what workers read); contains no secrets beyond the file's."""
        return orjson.dumps(self, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError


# ── building: environment, command line, `${VAR}`, then the declaration ──


def substitute(text: str, env: Mapping[str, str], key: str) -> str:
    """`${VAR}` -> env value (unset -> ""), `$${` -> `${`; malformed -> ConfigError."""
    def replace_var(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$${":
            return "${"
        name = m.group(1)
        if name is None or not _VAR_NAME.match(name):
            raise ConfigError(f"config key {key}: bad variable reference {token!r} in {text!r}")
        return env.get(name, "")
    return _VAR.sub(replace_var, text)


def _substitute_all(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):
        return substitute(value, env, key)
    if isinstance(value, list):
        return [_substitute_all(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute_all(v, env, f"{key}.{k}") for k, v in value.items()}
    return value


def _scalar_paths(cls: type, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every scalar key, nested ones included: the keys `TERO_*` variables can override."""
    for key in declared_keys(cls):
        if isinstance(key.spec, Setting):
            yield (*prefix, key.name)
        elif is_dataclass(key.kind):
            yield from _scalar_paths(key.kind, (*prefix, key.name))


def _env_overrides(doc: dict[str, Any], env: Mapping[str, str]) -> None:
    for path in _scalar_paths(Config):
        name = env_name(path)
        if name in env:
            target = doc
            for section_name in path[:-1]:
                sub = target.get(section_name)
                target[section_name] = dict(sub) if isinstance(sub, dict) else {}
                target = target[section_name]
            target[path[-1]] = env[name]


def build(doc: Any, env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """Validate a parsed config document; `overrides` are command-line values (highest precedence)."""
    env = os.environ if env is None else env
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError("config: the file must hold a JSON object")
    doc = dict(doc)
    _env_overrides(doc, env)
    doc.update(overrides or {})
    doc = {k: _substitute_all(v, env, k) for k, v in doc.items()}
    config, warnings = _read(Config, doc, "", env)
    _check_grpc_paths(config)
    return replace(_resolve_tail_sampling(config, env), warnings=tuple(warnings))


def _check_grpc_paths(config: Config) -> None:
    """A gRPC call has no URL path: under `upstream_protocol: grpc` a signal URL with one is an error,
    not a path silently ignored."""
    if config.upstream_protocol != "grpc":
        return
    for key in ("logs_url", "metrics_url", "traces_url"):
        if urlsplit(getattr(config, key)).path not in ("", "/"):
            raise ConfigError(f"config key {key}: a gRPC upstream (upstream_protocol grpc) takes no path, "
                              f"got {getattr(config, key)!r}")


def _resolve_paths(config: Config, base: Path) -> Config:
    """A relative provider path means the working directory if it exists there, else the config's folder."""
    def resolve(provider: ProviderConfig) -> ProviderConfig:
        path = Path(provider.path)
        if provider.type != "file" or path.is_absolute() or path.exists():
            return provider
        return replace(provider, path=str(base / path))
    return replace(config, policy_providers=tuple(map(resolve, config.policy_providers)))


def load(path: str | Path | None, env: Mapping[str, str] | None = None,
         overrides: Mapping[str, Any] | None = None) -> Config:
    """Read and validate a config file (None: defaults only)."""
    doc: Any = {}
    if path is not None:
        try:
            text = Path(path).read_bytes()
        except OSError as exc:
            raise ConfigError(f"config {path}: {exc.strerror or exc}") from None
        try:
            doc = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"config {path}: not valid JSON: {exc}") from None
        return _resolve_paths(build(doc, env, overrides), Path(path).resolve().parent)
    return build(doc, env, overrides)


def from_json(data: bytes) -> Config:
    """The inverse of `Config.to_json` (the supervisor hands workers the resolved config)."""
    return msgspec.convert(orjson.loads(data), Config)
