"""The reference docs under docs/: every example loads, and every reference to them leads somewhere.

Users copy the examples of docs/policies.md and docs/configuration.md into their own files,
so each JSON or YAML block is run through the same reader edge uses. A block's fence says
what it is (```json policy, ```yaml policy, ```json config, ...); a JSON or YAML block without
a known kind fails, so no example escapes the check. Code comments cite `docs/policies.md §N`
and sections of docs/configuration.md by their title in quotes; those must name real
sections, and the old names of the references must not come back.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from google.protobuf import json_format

from edge.config import build
from edge.policy.compiler import compile_policies
from edge.policy.loader import load_document, parse_document
from edge.proto.tero.policy.v1 import policy_pb2 as pb
from edge.tail.settings import from_mapping, unknown_keys

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted((REPO / "docs").glob("*.md"))
POLICIES_DOC = REPO / "docs" / "policies.md"
CONFIGURATION_DOC = REPO / "docs" / "configuration.md"
CODE_DIRS = ("edge", "supervisor", "workers", "tests", "benchmarks")
DATA_LANGUAGES = {"json", "yaml", "yml"}

_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.MULTILINE)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECTION_CITATION = re.compile(r"docs/policies\.md\b(.*)")
_TITLE_CITATION = re.compile(r'docs/configuration\.md\s+"([^"]+)"')
_OLD_NAMES = re.compile(r"\b(POLICY|EDGE|SCHEMA)\.md\b")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a doc page."""

    page: Path
    line: int
    language: str
    kind: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.page.name}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page; the info string is `<language> [<kind>]`."""
    text = page.read_text()
    found = []
    for m in _FENCE.finditer(text):
        words = m.group(1).split()
        language = words[0].lower() if words else ""
        kind = words[1] if len(words) > 1 else ""
        found.append(Block(page, text.count("\n", 0, m.start()) + 1, language, kind, m.group(2)))
    return found


def without_fences(text: str) -> str:
    return _FENCE.sub("", text)


# ── what each kind of example must satisfy ──


def _load_policies(doc: object, where: str) -> list[pb.Policy]:
    loaded = load_document(doc, where)
    assert loaded.errors == [], f"{where}: policies that do not decode: {loaded.errors}"
    assert loaded.policies, f"{where}: no policy in the example"
    return loaded.policies


def check_policy(block: Block) -> None:
    """A policy file: every policy decodes and compiles without an error (disabled ones too)."""
    policies = _load_policies(parse_document(block.text, block.where), block.where)
    errors = {p.id: p.errors for p in compile_policies(policies).policies if p.errors}
    assert errors == {}, f"{block.where}: compile errors {errors}"


def check_invalid_policy(block: Block) -> None:
    """A deliberately invalid policy file: it decodes, and the page quotes each of its compile errors."""
    policies = _load_policies(parse_document(block.text, block.where), block.where)
    errors = [f"policy {p.id}: {e}" for p in compile_policies(policies).policies for e in p.errors]
    assert errors, f"{block.where}: the invalid example compiles cleanly"
    page = block.page.read_text()
    missing = [e for e in errors if e not in page]
    assert missing == [], f"{block.where}: the page does not show these errors: {missing}"


def check_config(block: Block) -> None:
    """A proxy config: valid with no warning; `${VAR}` references get a value like a user's environment."""
    env = {name: "example" for name in _VARIABLE.findall(block.text)}
    config = build(orjson.loads(block.text), env=env)
    assert config.warnings == (), f"{block.where}: {config.warnings}"


def check_tail_config(block: Block) -> None:
    """An `edge-tail -c` file: every key known, every value valid."""
    doc = orjson.loads(block.text)
    assert unknown_keys(doc) == [], f"{block.where}: unknown keys {unknown_keys(doc)}"
    from_mapping(doc, env={}, key_prefix="")


def check_sync_request(block: Block) -> None:
    """A SyncRequest in proto-JSON, read strictly (an unknown field is an error)."""
    json_format.Parse(block.text, pb.SyncRequest())


def check_sync_response(block: Block) -> None:
    """A SyncResponse: its policies as the proxy reads them, the other fields strictly."""
    doc = orjson.loads(block.text)
    policies = _load_policies({"policies": doc.pop("policies", [])}, block.where)
    json_format.ParseDict(doc, pb.SyncResponse())
    errors = {p.id: p.errors for p in compile_policies(policies).policies if p.errors}
    assert errors == {}, f"{block.where}: compile errors {errors}"


CHECKS: dict[str, Callable[[Block], None]] = {
    "policy": check_policy,
    "policy-invalid": check_invalid_policy,
    "config": check_config,
    "tail-config": check_tail_config,
    "sync-request": check_sync_request,
    "sync-response": check_sync_response,
}

EXAMPLES = [b for page in DOCS for b in blocks(page) if b.language in DATA_LANGUAGES or b.kind]


def test_the_docs_exist_and_have_examples() -> None:
    assert POLICIES_DOC in DOCS and CONFIGURATION_DOC in DOCS
    assert {b.kind for b in EXAMPLES} == set(CHECKS), "every kind of example is used at least once"


@pytest.mark.parametrize("block", EXAMPLES, ids=[b.where for b in EXAMPLES])
def test_example_loads(block: Block) -> None:
    assert block.kind in CHECKS, f"{block.where}: say what the example is: ```{block.language} <{'|'.join(CHECKS)}>"
    CHECKS[block.kind](block)


BROKEN = [
    ("json", "policy", '{"policies": [{"id": "p", "log": {"match": [{"log_field": "body", "regex": "(["}]}}]}'),
    ("json", "policy", '{"policies": [{"id": "p", "log": {"match": [{"log_field": "severity"}], "keep": "none"}}]}'),
    ("yaml", "policy", "policies:\n  - id: p\n    trace:\n      match:\n        - span_kind: server\n"),
    ("json", "policy", '{"policies": [}'),
    ("json", "policy-invalid",  # a valid policy shown as an invalid one
     '{"policies": [{"id": "p", "log": {"match": [{"log_field": "body", "exists": true}]}}]}'),
    ("json", "config", '{"listen_port": 70000}'),
    ("json", "config", '{"listen_prot": 8080}'),
    ("json", "tail-config", '{"poll_ms": 0}'),
    ("json", "tail-config", '{"pol_ms": 10}'),
    ("json", "sync-request", '{"fullSync": true, "clientMetdata": {}}'),
    ("json", "sync-response", '{"policies": [{"id": "p", "log": {"match": [{"log_field": "body", "exists": true}]}}], '
                              '"recomendedSyncIntervalSeconds": 5}'),
]


@pytest.mark.parametrize("language,kind,text", BROKEN)
def test_a_broken_example_fails(tmp_path: Path, language: str, kind: str, text: str) -> None:
    """The checks catch what a typo in an example would cause (else a broken doc would pass)."""
    page = tmp_path / "page.md"
    page.write_text(f"```{language} {kind}\n{text}\n```\n")
    (block,) = blocks(page)
    with pytest.raises(Exception):  # noqa: B017 - any failure will do: assertion, config or parse error
        CHECKS[block.kind](block)


# ── citations and links ──


def _code_files() -> list[Path]:
    return [p for d in CODE_DIRS for p in sorted((REPO / d).rglob("*.py"))]


def slug(heading: str) -> str:
    """The anchor a Markdown renderer gives a heading: lower case, punctuation gone, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(page: Path) -> list[str]:
    return [m.group(2) for m in _HEADING.finditer(without_fences(page.read_text()))]


def numbered_sections(page: Path) -> set[str]:
    return {m.group(1) for h in headings(page) if (m := re.match(r"(\d+)\.\s", h))}


def test_section_citations_name_real_sections() -> None:
    sections = numbered_sections(POLICIES_DOC)
    assert sections == {str(n) for n in range(1, 11)}
    cited = 0
    for path in _code_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = _SECTION_CITATION.search(line)
            if m:
                for section in re.findall(r"§(\d+)", m.group(1)):
                    cited += 1
                    assert section in sections, f"{path.relative_to(REPO)}:{number} cites a missing §{section}"
    assert cited, "no code cites docs/policies.md §N any more: is the pattern still right?"


def test_title_citations_name_real_sections() -> None:
    titles = {re.sub(r"^\d+\.\s+", "", h) for h in headings(CONFIGURATION_DOC)}
    for path in _code_files():
        for title in _TITLE_CITATION.findall(path.read_text()):
            assert title in titles, f"{path.relative_to(REPO)} cites a missing section \"{title}\""


def test_code_cites_the_docs_by_their_names() -> None:
    stale = [f"{path.relative_to(REPO)}:{number}" for path in _code_files()
             for number, line in enumerate(path.read_text().splitlines(), 1) if _OLD_NAMES.search(line)]
    assert stale == [], "cite docs/policies.md or docs/configuration.md instead"


@pytest.mark.parametrize("page", [*DOCS, REPO / "README.md"], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    for target in _LINK.findall(without_fences(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check
        path_part, _, fragment = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        assert linked.exists(), f"{page.name}: link to a missing file {target}"
        if fragment and linked.suffix == ".md":
            anchors = {slug(h) for h in headings(linked)}
            assert fragment in anchors, f"{page.name}: link to a missing section {target}"
