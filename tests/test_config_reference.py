"""The README's config reference is the declaration in edge/config.py, row for row.

Each top-level key or section of `Config` is one row of the "### Config reference" table:
`key | default | description`. A section row names its keys in braces and lists their
defaults in the same order; a derived or generated default is written as the declaration's
`default_text`, and the description is the declaration's one-line doc. Adding a key, changing
a default or rewording a doc without the README (or the other way round) fails here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, is_dataclass
from pathlib import Path
from typing import get_origin

from edge import config as cfg

README = Path(__file__).resolve().parent.parent / "README.md"
Row = tuple[str, str, str]


def readme_rows() -> list[Row]:
    """The body rows of the table under "### Config reference", as (key, default, description) cells."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n### Config reference\n", 1)[1].split("\n#", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    assert lines[:2] == ["| key | default | description |", "|---|---|---|"], lines[:2]
    rows = []
    for line in lines[2:]:
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        assert len(cells) == 3, line
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def default_text(key: cfg.Key) -> str:
    """A key's default as the README writes it: the declared text, else the value (strings in backticks)."""
    if key.spec.default_text:
        return key.spec.default_text
    if is_dataclass(key.kind):
        return ", ".join(default_text(k) for k in cfg.declared_keys(key.kind))
    value = key.default
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"`{value}`"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def key_cell(key: cfg.Key) -> str:
    """`name`, `name[]` for a list, `name.{a, b}` for a section with its own keys."""
    if is_dataclass(key.kind):
        return f"`{key.name}.{{{', '.join(k.name for k in cfg.declared_keys(key.kind))}}}`"
    return f"`{key.name}[]`" if get_origin(key.kind) is tuple else f"`{key.name}`"


def declared_rows(cls: type) -> list[Row]:
    return [(key_cell(key), default_text(key), key.spec.doc) for key in cfg.declared_keys(cls)]


def test_readme_config_reference_matches_the_declaration() -> None:
    assert readme_rows() == declared_rows(cfg.Config)


def test_every_field_of_config_is_a_declared_key_with_a_doc() -> None:
    """A plain field would be no key at all: not read, not overridable, not in the README (`warnings` aside)."""
    names = {key.name for key in cfg.declared_keys(cfg.Config)}
    assert names == set(cfg.Config.__dataclass_fields__) - {"warnings"}
    assert all(key.spec.doc for key in cfg.declared_keys(cfg.Config))


@dataclass(frozen=True)
class _GrownConfig(cfg.Config):
    """Config with one more key, as a developer might add it without touching the README."""

    drain_seconds: float = cfg.setting(10.0, "seconds to finish requests in flight on SIGTERM")


@dataclass(frozen=True)
class _ChangedServiceConfig(cfg.ServiceConfig):
    name: str = cfg.setting("edge", "the `service.name` attribute of sync requests")


@dataclass(frozen=True)
class _ChangedDefaultConfig(cfg.Config):
    service: _ChangedServiceConfig = cfg.section(_ChangedServiceConfig, "reported to policy servers")


def test_the_check_notices_a_new_key_or_a_changed_default() -> None:
    """The comparison above is not vacuous: a key added or a nested default changed makes the rows differ."""
    readme = readme_rows()
    assert declared_rows(_GrownConfig) != readme
    assert declared_rows(_ChangedDefaultConfig) != readme
