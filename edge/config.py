"""The proxy's configuration: the keys of docs/configuration.md, their defaults, env overrides and `${VAR}`.

Order of precedence: command line > environment > file > defaults. Any scalar key can be
overridden with `TERO_` + its path joined by `_` in upper case (`TERO_LOG_LEVEL`,
`TERO_PROMETHEUS_MAX_INPUT_BYTES_PER_SCRAPE`). Then `${VAR}` is substituted in every
string (unset -> empty, `$${` -> literal `${`). A bad value is one `ConfigError` naming
the key; unknown keys are reported as warnings and ignored.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from edge import __version__
from edge.tail.settings import SettingsError, from_mapping, unknown_keys

LOG_LEVELS = {"debug": "debug", "info": "info", "warn": "warning", "warning": "warning", "err": "error",
              "error": "error"}
_VAR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(ValueError):
    """A configuration problem, worded as one line for the operator."""


@dataclass(frozen=True)
class ProviderConfig:
    id: str
    type: str  # "file" | "http"
    path: str = ""
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    poll_interval: float = 60.0


@dataclass(frozen=True)
class ServiceConfig:
    name: str = "tero-edge"
    namespace: str = "tero"
    version: str = __version__
    instance_id: str = ""


@dataclass(frozen=True)
class PrometheusConfig:
    max_input_bytes_per_scrape: int = 10_485_760
    max_output_bytes_per_scrape: int = 10_485_760


@dataclass(frozen=True)
class S3Target:
    """Where the s3-dump extension writes; an empty endpoint/region means AWS's defaults."""

    name: str
    bucket: str
    endpoint: str = ""
    region: str = ""
    prefix: str = ""


@dataclass(frozen=True)
class S3DumpConfig:
    enabled: bool = False
    targets: tuple[S3Target, ...] = ()
    flush_interval_ms: int = 5000
    max_batch_bytes: int = 1_048_576
    max_batch_records: int = 10_000
    max_queued_batches: int = 32  # ours: sealed batches waiting for upload; beyond it the oldest is dropped

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> S3DumpConfig:
        return cls(**{**doc, "targets": tuple(S3Target(**t) for t in doc.get("targets", ()))})


@dataclass(frozen=True)
class Config:
    listen_address: str = "127.0.0.1"
    listen_port: int = 8080
    upstream_url: str = "http://127.0.0.1:80"
    logs_url: str = ""
    metrics_url: str = ""
    log_level: str = "info"
    max_body_size: int = 1_048_576
    max_decoded_bytes: int = 0
    max_connections: int = 256
    workers: int = 0
    upstream_timeout: float = 30.0
    tls_insecure_skip_verify: bool = False
    service: ServiceConfig = field(default_factory=ServiceConfig)
    policy_providers: tuple[ProviderConfig, ...] = ()
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    s3_dump: S3DumpConfig = field(default_factory=S3DumpConfig)
    tail: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()

    def to_json(self) -> bytes:
        """The resolved configuration (what workers read); contains no secrets beyond the file's."""
        return orjson.dumps(self, default=_plain)


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError


# ── schema: key -> (type, default) for scalars, nested sections by name ──

_SCALARS: dict[str, type] = {
    "listen_address": str, "listen_port": int, "upstream_url": str, "logs_url": str, "metrics_url": str,
    "log_level": str, "max_body_size": int, "max_decoded_bytes": int, "max_connections": int, "workers": int,
    "upstream_timeout": float, "tls_insecure_skip_verify": bool,
}
_SECTIONS: dict[str, dict[str, type]] = {
    "service": {"name": str, "namespace": str, "version": str, "instance_id": str},
    "prometheus": {"max_input_bytes_per_scrape": int, "max_output_bytes_per_scrape": int},
}
_S3_DUMP_SCALARS: dict[str, type] = {
    "enabled": bool, "flush_interval_ms": int, "max_batch_bytes": int, "max_batch_records": int,
    "max_queued_batches": int,
}
_OPAQUE = {"policy_providers", "s3_dump", "tail"}


def _coerce(key: str, value: Any, kind: type) -> Any:
    """Accept the JSON type or, for env overrides, its text; anything else is a ConfigError."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
            return value.strip().lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            return int(value)
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


def substitute(text: str, env: Mapping[str, str], key: str) -> str:
    """`${VAR}` -> env value (unset -> ""), `$${` -> `${`; malformed -> ConfigError."""
    def replace(m: re.Match[str]) -> str:
        token = m.group(0)
        if token == "$${":
            return "${"
        name = m.group(1)
        if name is None or not _VAR_NAME.match(name):
            raise ConfigError(f"config key {key}: bad variable reference {token!r} in {text!r}")
        return env.get(name, "")
    return _VAR.sub(replace, text)


def _substitute_all(value: Any, env: Mapping[str, str], key: str) -> Any:
    if isinstance(value, str):
        return substitute(value, env, key)
    if isinstance(value, list):
        return [_substitute_all(v, env, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _substitute_all(v, env, f"{key}.{k}") for k, v in value.items()}
    return value


def _env_overrides(doc: dict[str, Any], env: Mapping[str, str]) -> None:
    for key in _SCALARS:
        name = "TERO_" + key.upper()
        if name in env:
            doc[key] = env[name]
    for section, keys in {**_SECTIONS, "s3_dump": _S3_DUMP_SCALARS}.items():
        for key in keys:
            name = f"TERO_{section}_{key}".upper()
            if name in env:
                sub = doc.get(section)
                doc[section] = sub = dict(sub) if isinstance(sub, dict) else {}
                sub[key] = env[name]


def _positive(key: str, value: int, allow_zero: bool = False) -> int:
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"config key {key}: must be {'zero or more' if allow_zero else 'positive'}, got {value}")
    return value


def _url(key: str, value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"config key {key}: expected an http(s) URL, got {value!r}")
    try:
        parts.port  # noqa: B018 - validates the port number
    except ValueError:
        raise ConfigError(f"config key {key}: bad port in {value!r}") from None
    return value.rstrip("/")


def _providers(raw: Any) -> tuple[ProviderConfig, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("config key policy_providers: expected a list")
    out = []
    for i, item in enumerate(raw):
        where = f"policy_providers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config key {where}: expected an object")
        kind = item.get("type")
        if kind not in ("file", "http"):
            raise ConfigError(f"config key {where}.type: expected file or http, got {kind!r}")
        ident = str(item.get("id") or f"{kind}-{i}")
        interval = item.get("poll_interval", item.get("poll_interval_secs", 60))
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
            out.append(ProviderConfig(ident, kind, path=path, poll_interval=interval))
        else:
            url = _url(f"{where}.url", str(item.get("url") or ""))
            out.append(ProviderConfig(ident, kind, url=url, poll_interval=interval,
                                      headers=tuple((str(h["name"]), str(h.get("value", ""))) for h in headers)))
    ids = [p.id for p in out]
    if len(ids) != len(set(ids)):
        raise ConfigError("config key policy_providers: provider ids must be unique")
    return tuple(out)


def _s3_targets(raw: Any) -> tuple[S3Target, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("config key s3_dump.targets: expected a list")
    out = []
    for i, item in enumerate(raw):
        where = f"s3_dump.targets[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config key {where}: expected an object")
        values = {k: _coerce(f"{where}.{k}", item[k], str) for k in ("name", "bucket", "endpoint", "region", "prefix")
                  if item.get(k) is not None}
        if not values.get("bucket"):
            raise ConfigError(f"config key {where}.bucket: a target needs a bucket")
        values.setdefault("name", values["bucket"])
        if values.get("endpoint"):
            values["endpoint"] = _url(f"{where}.endpoint", values["endpoint"])
        values["prefix"] = values.get("prefix", "").strip("/")
        out.append(S3Target(**values))
    names = [t.name for t in out]
    if len(names) != len(set(names)):
        raise ConfigError("config key s3_dump.targets: target names must be unique")
    return tuple(out)


def _s3_dump(raw: Any) -> tuple[S3DumpConfig, list[str]]:
    """The s3_dump section (docs/configuration.md); enabled without a target is an error, numbers must be positive."""
    if raw is None:
        return S3DumpConfig(), []
    if not isinstance(raw, dict):
        raise ConfigError("config key s3_dump: expected an object")
    known = {*_S3_DUMP_SCALARS, "targets"}
    warnings = [f"config key s3_dump.{k}: unknown, ignored" for k in raw if k not in known]
    values = {k: _coerce(f"s3_dump.{k}", raw[k], kind) for k, kind in _S3_DUMP_SCALARS.items() if k in raw}
    for key, value in values.items():
        if key != "enabled":
            _positive(f"s3_dump.{key}", value)
    config = S3DumpConfig(**values, targets=_s3_targets(raw.get("targets")))
    if config.enabled and not config.targets:
        raise ConfigError("config key s3_dump.targets: s3_dump is enabled but names no target")
    return config, warnings


def _tail(raw: Any, env: Mapping[str, str]) -> list[str]:
    """Validate the tail worker's section with edge-tail's own checks; warnings for unknown keys."""
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise ConfigError("config key tail: expected an object")
    try:
        settings = from_mapping(raw, env)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    if raw and (settings.stdin_mode or "-" in settings.paths):
        raise ConfigError("config key tail.paths: the tail worker needs a list of files or globs to tail")
    return [f"config key tail.{k}: unknown, ignored" for k in unknown_keys(raw)]


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
    warnings = [f"config key {k}: unknown, ignored" for k in doc
                if k not in _SCALARS and k not in _SECTIONS and k not in _OPAQUE]
    values: dict[str, Any] = {k: _coerce(k, doc[k], kind) for k, kind in _SCALARS.items() if k in doc}
    for section, keys in _SECTIONS.items():
        sub = doc.get(section) or {}
        if not isinstance(sub, dict):
            raise ConfigError(f"config key {section}: expected an object")
        warnings += [f"config key {section}.{k}: unknown, ignored" for k in sub if k not in keys]
        values[section] = {k: _coerce(f"{section}.{k}", sub[k], kind) for k, kind in keys.items() if k in sub}
    level = str(values.get("log_level", "info")).strip().lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"config key log_level: expected debug, info, warn or err, got {values['log_level']!r}")
    values["log_level"] = LOG_LEVELS[level]
    port = values.get("listen_port", 8080)
    if not 0 <= port <= 65535:
        raise ConfigError(f"config key listen_port: expected 0..65535, got {port}")
    upstream = _url("upstream_url", values.get("upstream_url", "http://127.0.0.1:80"))
    values["upstream_url"] = upstream
    for key in ("logs_url", "metrics_url"):
        values[key] = _url(key, values[key]) if values.get(key) else upstream
    body = _positive("max_body_size", values.get("max_body_size", 1_048_576))
    values["max_decoded_bytes"] = _positive("max_decoded_bytes", values.get("max_decoded_bytes", 0),
                                            allow_zero=True) or body
    _positive("max_connections", values.get("max_connections", 256))
    values["workers"] = _positive("workers", values.get("workers", 0), allow_zero=True) or (os.cpu_count() or 1)
    if values.get("upstream_timeout", 30.0) <= 0:
        raise ConfigError("config key upstream_timeout: must be positive")
    service = values.pop("service")
    service.setdefault("instance_id", str(uuid.uuid4()))
    prometheus = values.pop("prometheus")
    for key, value in prometheus.items():
        _positive(f"prometheus.{key}", value, allow_zero=True)
    warnings += _tail(doc.get("tail"), env)
    s3_dump, s3_warnings = _s3_dump(doc.get("s3_dump"))
    return Config(**values, service=ServiceConfig(**service), prometheus=PrometheusConfig(**prometheus),
                  policy_providers=_providers(doc.get("policy_providers")),
                  s3_dump=s3_dump, tail=doc.get("tail") or {}, warnings=tuple(warnings + s3_warnings))


def _resolve_paths(config: Config, base: Path) -> Config:
    """A relative provider path means the working directory if it exists there, else the config's folder."""
    providers = []
    for p in config.policy_providers:
        if p.type == "file" and not Path(p.path).is_absolute() and not Path(p.path).exists():
            p = ProviderConfig(**{**p.__dict__, "path": str(base / p.path)})
        providers.append(p)
    return Config(**{**config.__dict__, "policy_providers": tuple(providers)})


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
    doc = orjson.loads(data)
    return Config(**{**doc, "service": ServiceConfig(**doc["service"]),
                     "prometheus": PrometheusConfig(**doc["prometheus"]),
                     "policy_providers": tuple(ProviderConfig(**{**p, "headers": tuple(map(tuple, p["headers"]))})
                                               for p in doc["policy_providers"]),
                     "s3_dump": S3DumpConfig.from_dict(doc["s3_dump"]),
                     "warnings": tuple(doc["warnings"])})
