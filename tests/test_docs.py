"""The docs must keep up with the registries.

Adding a component kind, fault or assertion is only finished when users can read about
it and run it: these tests fail when the generated reference is stale, when a registered
name has no section in its hand-written page, or when a fault has no shipped scenario that
shows it in action. They read files only and need no server.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from drills import docgen
from drills.assertions import assertion_kinds
from drills.targets import target_kinds
from engine.components import component_kinds
from engine.faults import faults

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SCENARIOS = ROOT / "scenarios"


def _sections(page: str) -> dict[str, str]:
    """`## name` headings of a page mapped to the text under them."""
    text = (DOCS / page).read_text(encoding="utf-8")
    parts = re.split(r"^## +(.+?) *$", text, flags=re.MULTILINE)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _faults_used() -> dict[str, set[str]]:
    """Fault name → shipped scenario files whose disaster (or failover) steps use it."""
    used: dict[str, set[str]] = {}
    for path in sorted(SCENARIOS.glob("*.yaml")):
        data: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        for step in data.get("steps", []):
            for kind in ("disaster", "failover"):
                if isinstance(step, dict) and isinstance(step.get(kind), dict):
                    fault = step[kind].get("fault")
                    if isinstance(fault, str):
                        used.setdefault(fault, set()).add(path.name)
    return used


def test_scenario_reference_is_up_to_date() -> None:
    committed = (DOCS / "scenario-reference.md").read_text(encoding="utf-8")
    assert committed == docgen.render(), "docs/scenario-reference.md is stale; run: python -m drills.docgen"


def test_docgen_check_mode_detects_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "reference.md"
    assert docgen.main(["--output", str(target)]) == 0
    assert docgen.main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert docgen.main(["--check", "--output", str(target)]) == 1
    assert "python -m drills.docgen" in capsys.readouterr().err


def test_scenario_reference_covers_every_registered_name() -> None:
    text = docgen.render()
    for name in [*component_kinds.names(), *faults.names(), *assertion_kinds.names()]:
        assert f"\n### {name}\n" in text, name


@pytest.mark.parametrize("kind", target_kinds.names())
def test_every_kind_backup_config_accepts_is_in_the_backup_engine_table(kind: str) -> None:
    text = (DOCS / "backup-engine.md").read_text(encoding="utf-8")
    table = text.split("| kind | keys | how it is backed up |", 1)[1].split("\n\n", 1)[0]
    assert f"`{kind}`" in table, f"docs/backup-engine.md's table of kinds lacks {kind}"


@pytest.mark.parametrize("kind", component_kinds.names())
def test_every_component_kind_has_a_section(kind: str) -> None:
    assert kind in _sections("components.md"), f"docs/components.md lacks a '## {kind}' section"


@pytest.mark.parametrize("fault", faults.names())
def test_every_fault_has_a_section(fault: str) -> None:
    assert fault in _sections("faults.md"), f"docs/faults.md lacks a '## {fault}' section"


@pytest.mark.parametrize("fault", faults.names())
def test_every_fault_is_in_the_table(fault: str) -> None:
    text = (DOCS / "faults.md").read_text(encoding="utf-8")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert any(row.startswith(f"| `{fault}` |") for row in rows), f"docs/faults.md's table lacks a row for {fault}"


@pytest.mark.parametrize("fault", faults.names())
def test_every_fault_is_used_by_a_shipped_scenario(fault: str) -> None:
    assert _faults_used().get(fault), f"no scenario in scenarios/ has a disaster or failover step with fault: {fault}"


@pytest.mark.parametrize("fault", faults.names())
def test_fault_sections_name_scenarios_that_really_use_the_fault(fault: str) -> None:
    named = set(re.findall(r"scenarios/([\w.-]+\.yaml)", _sections("faults.md").get(fault, "")))
    assert named, f"the '## {fault}' section of docs/faults.md names no shipped scenario"
    assert named <= _faults_used().get(fault, set()), f"'## {fault}' names scenarios that do not use it"


@pytest.mark.parametrize("assertion", [*assertion_kinds.names(), "timeline"])
def test_every_assertion_has_a_section(assertion: str) -> None:
    assert assertion in _sections("assertions.md"), f"docs/assertions.md lacks a '## {assertion}' section"


def _anchors(page: Path) -> set[str]:
    """Heading anchors as GitHub renders them: lower case, punctuation dropped, spaces to -."""
    headings = re.findall(r"^#+ +(.+?) *$", page.read_text(encoding="utf-8"), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_links_between_docs_resolve() -> None:
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text(encoding="utf-8")
        for target, anchor in re.findall(r"\]\(([\w.-]+\.md)?(?:#([\w-]+))?\)", text):
            path = DOCS / target if target else page
            assert path.is_file(), f"{page.name} links to missing {target}"
            if anchor:
                assert anchor in _anchors(path), f"{page.name} links to #{anchor}, not a heading of {path.name}"


def _doc_assertions() -> list[tuple[str, str, Any]]:
    """Every assertion written in a YAML example of docs/ (blocks that parse and hold ``assertions``)."""
    found = []
    for page in [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL):
            try:
                data = yaml.safe_load(block)
            except yaml.YAMLError:
                continue
            entries = data.get("assertions") if isinstance(data, dict) else None
            for entry in entries if isinstance(entries, list) else []:
                tag, params = (entry, None) if isinstance(entry, str) else next(iter(entry.items()))
                found.append((page.name, tag, params))
    return found


@pytest.mark.parametrize(("page", "tag", "params"), _doc_assertions())
def test_every_assertion_in_a_doc_example_is_valid(page: str, tag: str, params: Any) -> None:
    """The first YAML a user copies must load (found by review: `postgres_checks: {target: ...}` did not)."""
    kind = assertion_kinds.get(tag)
    kind.Params.model_validate(params or {})
