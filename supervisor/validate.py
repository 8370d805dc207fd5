"""`edge validate [CONFIG]` and `edge --dry-run [CONFIG]`: check what a start would use, start nothing.

The config is read and validated exactly as a start reads it; every file provider's policies
are read, validated and compiled (Hyperscan included) as the supervisor would publish them;
every http provider gets one sync request with a short timeout. The summary is plain text on
stdout, one fact per line. Exit status 0 when everything is usable, 2 otherwise.

A policy server that cannot be reached is reported but does not fail the check: edge starts
without it (everything passes until it answers) and keeps retrying, so a server that is down
during a deploy must not block the deploy. No gunicorn, no shared memory, no socket bound.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TextIO

from edge import logs
from edge.config import Config, ConfigError, ProviderConfig, load
from edge.control.file_provider import read_regular_file
from edge.policy.compiler import compile_policies
from edge.policy.loader import LoadResult, PolicyFileError, load_document, parse_document
from edge.policy.sync import SyncClient, SyncError
from supervisor.listener import ListenError, display_address, resolve
from supervisor.ready import upstreams

SYNC_CHECK_TIMEOUT_S = 3.0


@dataclasses.dataclass
class Check:
    """One line of the summary; `ok` False makes the exit status 2."""

    label: str
    text: str
    ok: bool = True


def _policies(result: LoadResult, source: str) -> Check:
    snapshot = compile_policies(result.policies)
    problems = [*result.errors, *(f"policy {pid}: {m}" for pid, ms in snapshot.errors().items() for m in ms)]
    text = f"{len(result.policies)} policies" + "".join(f"\n    error: {p}" for p in problems)
    return Check(source, text, ok=not problems)


def _file_provider(provider: ProviderConfig) -> Check:
    label = f"provider {provider.id} (file {provider.path})"
    try:
        data = read_regular_file(provider.path)
        result = load_document(parse_document(data, provider.path), provider.path)
    except OSError as exc:
        return Check(label, f"error: cannot read {provider.path}: {exc.strerror or exc}", ok=False)
    except (PolicyFileError, ValueError) as exc:
        return Check(label, f"error: {exc}", ok=False)
    return _policies(result, label)


def _http_provider(provider: ProviderConfig, config: Config) -> Check:
    label = f"provider {provider.id} (http {logs.redact(provider.url)})"
    client = SyncClient(provider.url, headers=dict(provider.headers), timeout=SYNC_CHECK_TIMEOUT_S,
                        service={k: str(v) for k, v in dataclasses.asdict(config.service).items()},
                        max_response_bytes=provider.max_response_bytes, workspace_id=config.workspace_id)
    try:
        result = client.sync([])
    except SyncError as exc:
        return Check(label, f"unreachable, edge would start without it and retry: {logs.redact(str(exc))}")
    return _policies(LoadResult(result.policies, result.decode_errors), label)


def _listen(config: Config) -> Check:
    where = display_address(config.listen_address, config.listen_port)
    try:
        resolve(config.listen_address, config.listen_port)
    except ListenError as exc:
        return Check("listen", f"error: {exc}", ok=False)
    return Check("listen", where)


def checks(path: Path, config: Config) -> list[Check]:
    """Every line of the summary for a config that loaded."""
    out = [Check("config", str(path)), _listen(config),
           Check("workers", f"{config.workers}"),
           Check("upstreams", upstreams(config))]
    out += [Check("warning", w) for w in config.warnings]
    if not config.policy_providers:
        out.append(Check("providers", "none: everything passes unfiltered"))
    for provider in config.policy_providers:
        out.append(_http_provider(provider, config) if provider.type == "http" else _file_provider(provider))
    return out


def validate(path: Path, out: TextIO = sys.stdout) -> int:
    """Print the summary for the config at `path`; 0 when everything is usable, else 2."""
    try:
        config = load(path)
    except ConfigError as exc:
        print(f"config: {path}\nerror: {logs.redact(str(exc))}", file=out)
        return 2
    results = checks(path, config)
    for check in results:
        print(f"{check.label}: {check.text}", file=out)
    problems = sum(not check.ok for check in results)
    print(f"result: {problems} problem(s)" if problems else "result: ok", file=out)
    return 2 if problems else 0
