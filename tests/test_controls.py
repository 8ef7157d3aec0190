"""Control mapping: each rule judged on synthetic results, and ids checked at validation.

The property that matters most for an auditor is asymmetric: a control may wrongly read
"not evidenced" and cost a question, but it must never read "evidenced" on evidence the
run did not produce. Most tests here pin that side.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from drills.controls import CATALOGUE, control_ids, coverage, evaluate
from drills.scenario import Scenario
from drills.validation import validate
from drills.yamlsource import load
from engine.journal import (
    AssertionResult,
    BackupRecord,
    ComponentResult,
    DisasterRecord,
    Measured,
    Objectives,
    Phase,
    Results,
    ScenarioInfo,
)

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def _phase(name: str, kind: str, status: str = "ok") -> Phase:
    return Phase(
        name=name,
        kind=kind,
        status=status,  # type: ignore[arg-type]
        started_at=T0,
        finished_at=T0,
        offset_seconds=0.0,
        duration_seconds=0.0,
    )


def _assertion(id_: str, status: str = "pass", expected: str = "pass") -> AssertionResult:
    return AssertionResult(
        id=id_,
        name=id_.split("[")[0],
        status=status,  # type: ignore[arg-type]
        summary="",
        expected=expected,  # type: ignore[arg-type]
    )


def _results(**overrides: Any) -> Results:
    """A drill where everything a rule can look at is present and passing."""
    base: dict[str, Any] = dict(
        drproof_version="0",
        scenario=ScenarioInfo(name="drill", file="drill.yaml", sha256="a" * 64, source=""),
        verdict="pass",
        exit_code=0,
        runtime={"runtime": "local", "isolation": "private processes"},
        repository={
            "type": "local",
            "path": "/r",
            "encryption": "aes-256-gcm, key from memory",
            "signing": "ed25519, trusted key(s) 00",
            "offsite": "/o",
        },
        environment={},
        started_at=T0,
        finished_at=T0 + timedelta(seconds=30),
        objectives=Objectives(rto_seconds=60.0, rpo_seconds=10.0),
        measured=Measured(rto_seconds=5.0, components={"db": 5.0}, drill_seconds=30.0),
        components=[ComponentResult(name="db", kind="postgres", restored_from="b1", healthy=True)],
        phases=[_phase("backup nightly", "backup"), _phase("disaster", "disaster"), _phase("restore db", "restore")],
        backups=[
            BackupRecord(
                name="nightly",
                id="b1",
                created_at=T0,
                components=["db"],
                artifacts=[],
                manifest_sha256="b" * 64,
                duration_seconds=1.0,
            )
        ],
        disasters=[
            DisasterRecord(
                step=2,
                name="wipe",
                fault="delete_data_dir",
                target="db",
                injected_at=T0,
                offset_seconds=2.0,
                effect={},
            )
        ],
        assertions=[
            _assertion("fidelity[db]"),
            _assertion("rto[stack]"),
            _assertion("rpo[stack]"),
            _assertion("backup_integrity[nightly]"),
        ],
    )
    base.update(overrides)
    return Results(**base)


def _status(control: str, results: Results) -> str:
    (result,) = evaluate([control], results)
    return result.status


def test_catalogue_ids_are_unique_and_complete() -> None:
    ids = control_ids()
    assert len(ids) == len(set(ids)) == 19
    assert {c.framework for c in CATALOGUE} >= {"NIST SP 800-53 r5", "ISO/IEC 27001:2022", "EU DORA"}
    for c in CATALOGUE:
        assert c.description and c.rule_text and c.title


@pytest.mark.parametrize("control", control_ids())
def test_every_control_is_evidenced_by_a_complete_passing_drill(control: str) -> None:
    (result,) = evaluate([control], _results())
    assert result.status == "evidenced"
    assert result.evidence, "an evidenced control must say what it rests on"


_EMPTY_ASPECTS: dict[str, dict[str, Any]] = {
    "no assertions": {"assertions": [], "verdict": "error"},
    "no backups": {"backups": []},
    "no disasters": {"disasters": []},
    "no restore": {"phases": [_phase("backup nightly", "backup")]},
    "no runtime facts": {"runtime": {"runtime": "external"}},
    "no repository facts": {"repository": {"type": "local"}},
    "no components": {"components": []},
}


@pytest.mark.parametrize("aspect", sorted(_EMPTY_ASPECTS))
def test_absent_evidence_is_never_a_tick(aspect: str) -> None:
    """Removing anything a rule relies on turns its control to "not evidenced", never "evidenced"."""
    judged = evaluate(control_ids(), _results(**_EMPTY_ASPECTS[aspect]))
    flipped = [c for c in judged if c.status != "evidenced"]
    assert flipped, f"removing {aspect} changed nothing: some rule ignores it"
    assert all(c.status == "not evidenced" and c.evidence == [] for c in flipped)


def test_unconfigured_check_is_not_evidenced() -> None:
    without_integrity = _results(assertions=[_assertion("fidelity[db]"), _assertion("rto[stack]")])
    assert _status("NIST CP-9(1)", without_integrity) == "not evidenced"
    assert _status("NIST CP-10(4)", without_integrity) == "not evidenced"
    assert _status("NIST CP-10", without_integrity) == "not evidenced"  # RPO objective set, rpo not asserted


def test_rpo_is_only_required_when_an_objective_is_set() -> None:
    results = _results(
        objectives=Objectives(rto_seconds=60.0),
        assertions=[_assertion("rto[stack]")],
    )
    assert _status("NIST CP-10", results) == "evidenced"
    assert _status("ISO A.5.30", results) == "evidenced"


@pytest.mark.parametrize("status", ["fail", "error"])
def test_a_failing_check_fails_its_controls(status: str) -> None:
    results = _results(
        assertions=[_assertion("fidelity[db]", status), _assertion("backup_integrity[nightly]"), _assertion("rto")]
    )
    (result,) = evaluate(["NIST CP-9(1)"], results)
    assert result.status == "failed"
    assert result.evidence == [f"fidelity[db]: {status}"]


def test_not_run_checks_are_not_evidence() -> None:
    results = _results(assertions=[_assertion("fidelity[db]", "not_run")], verdict="error", error="stopped")
    assert _status("NIST CP-9(2)", results) == "not evidenced"
    assert _status("NIST CP-4(3)", results) == "not evidenced"
    assert _status("NIST CP-4", results) == "not evidenced"


def test_negative_controls_do_not_count_as_recovery_evidence() -> None:
    """A fidelity check expected to fail "passes" by finding damage: that is no restore proof."""
    results = _results(assertions=[_assertion("fidelity[db@before-disaster]", "pass", expected="fail")])
    assert _status("NIST CP-9(2)", results) == "not evidenced"


def test_encryption_needs_the_recorded_fact() -> None:
    plain = _results(repository={"type": "local", "path": "/r"})
    (result,) = evaluate(["NIST CP-9(8)"], plain)
    assert result.status == "not evidenced" and result.evidence == []
    (result,) = evaluate(["NIST CP-9(8)"], _results())
    assert result.status == "evidenced"
    assert "repository encryption: aes-256-gcm, key from memory" in result.evidence


def test_offsite_and_isolation_facts() -> None:
    assert _status("SOC2 A1.2", _results(repository={"type": "local"})) == "not evidenced"
    assert _status("DORA 12(3)", _results(runtime={"runtime": "external"})) == "not evidenced"
    assert _status("ISO A.5.29", _results(runtime={"runtime": "external"})) == "not evidenced"


def test_self_challenge_needs_a_disaster() -> None:
    assert _status("NIST CP-4(5)", _results(disasters=[])) == "not evidenced"
    (result,) = evaluate(["NIST CP-4(5)"], _results())
    assert result.evidence == ["disaster wipe: delete_data_dir on db"]


def test_restores_refused_on_purpose_are_neither_evidence_nor_failure() -> None:
    refused = _results(phases=[_phase("restore db from latest", "restore", "refused")])
    assert _status("NIST CP-9(2)", refused) == "not evidenced"
    broken = _results(phases=[_phase("restore db", "restore", "failed")])
    assert _status("NIST CP-9(2)", broken) == "failed"


def test_full_recovery_needs_every_component_back() -> None:
    partial = _results(
        components=[
            ComponentResult(name="db", kind="postgres", restored_from="b1", healthy=True),
            ComponentResult(name="cache", kind="redis"),
        ]
    )
    assert _status("NIST CP-4(4)", partial) == "not evidenced"
    sick = _results(components=[ComponentResult(name="db", kind="postgres", restored_from="b1", healthy=False)])
    assert _status("NIST CP-4(4)", sick) == "failed"


def test_a_failed_drill_fails_the_plan_test_controls() -> None:
    failed = _results(verdict="fail", exit_code=1)
    assert _status("NIST CP-4", failed) == "failed"
    assert _status("HIPAA 164.308(a)(7)(ii)(D)", failed) == "failed"


def test_only_declared_controls_are_reported_in_declared_order() -> None:
    results = evaluate(["DORA 12(2)", "NIST CP-9", "DORA 12(2)"], _results())
    assert [c.id for c in results] == ["DORA 12(2)", "NIST CP-9"]
    assert evaluate([], _results()) == []


def test_coverage_matrix() -> None:
    first = _results()
    first.controls = evaluate(["NIST CP-9", "NIST CP-9(8)"], first)
    second = _results(repository={"type": "local"}, started_at=T0 + timedelta(days=1))
    second.controls = evaluate(["NIST CP-9(8)", "DORA 12(2)"], second)
    matrix = coverage([first, second])
    assert matrix.controls == ["NIST CP-9", "NIST CP-9(8)", "DORA 12(2)"]
    assert matrix.runs == ["drill@2026-03-01T02:00:00", "drill@2026-03-02T02:00:00"]
    assert matrix.cells["NIST CP-9"] == ["evidenced", None]
    assert matrix.cells["NIST CP-9(8)"] == ["evidenced", "not evidenced"]
    assert matrix.cells["DORA 12(2)"] == [None, "evidenced"]
    assert matrix.evidenced_by_any() == ["NIST CP-9", "NIST CP-9(8)", "DORA 12(2)"]
    assert coverage([]).controls == []


_SCENARIO = """\
name: controls
stack:
  components:
    db: {kind: postgres}
steps:
  - backup
  - restore
assertions:
  - fidelity
controls:
{controls}
"""


def test_known_controls_validate(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_SCENARIO.replace("{controls}", "  - NIST CP-9(1)\n  - DORA 12(3)"), encoding="utf-8")
    scenario, problems = validate(load(path))
    assert problems == []
    assert isinstance(scenario, Scenario) and scenario.controls == ["NIST CP-9(1)", "DORA 12(3)"]


def test_unknown_control_is_a_located_error_with_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(_SCENARIO.replace("{controls}", "  - NIST CP-9(1)\n  - ISO A.8.31"), encoding="utf-8")
    scenario, problems = validate(load(path))
    assert scenario is None
    (problem,) = problems
    assert (problem.line, problem.column, problem.path) == (12, 5, "controls[1]")
    assert "unknown control 'ISO A.8.31'; did you mean 'ISO A.8.13'?" in problem.message
    assert "known controls: NIST CP-4," in problem.message


def test_docs_list_every_control() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "controls.md").read_text(encoding="utf-8")
    for control in CATALOGUE:
        assert f"| `{control.id}` | {control.framework} |" in text, f"docs/controls.md misses {control.id}"


def test_an_unsigned_repository_evidences_no_integrity_control() -> None:
    """Digests alone prove nothing against whoever can rewrite the manifest: never a tick."""
    unsigned = _results(
        repository={
            "type": "local",
            "path": "/r",
            "encryption": "aes-256-gcm, key from memory",
            "offsite": "/o",
            "integrity": "NOT proven against anyone who can write the repository: its manifests are not signed",
        }
    )
    for control in ("NIST CP-9(1)", "NIST CP-10(4)", "NIST CP-9(8)"):
        (result,) = evaluate([control], unsigned)
        assert result.status == "not evidenced" and result.evidence == [], control
    assert _status("NIST CP-9(1)", _results()) == "evidenced"  # the same run, signed


def test_restored_data_nobody_compared_is_not_recovery_evidence() -> None:
    """Found by review: ``fidelity: {components: [uploads]}`` with app-config restored too (and
    altered afterwards) evidenced full recovery, "whole and unaltered" and "bring back any
    data that was lost" on ``fidelity[uploads]: pass`` alone."""
    two = [
        ComponentResult(name="db", kind="postgres", restored_from="b1", healthy=True),
        ComponentResult(name="cache", kind="redis", restored_from="b1", healthy=True),
    ]
    only_db = _results(components=two)
    whole = ("NIST CP-4(4)", "SOC2 A1.3", "HIPAA 164.308(a)(7)(ii)(B)")
    for control in whole:
        assert _status(control, only_db) == "not evidenced", control
    # Sampling is what CP-9(2) asks, so one compared component is enough there.
    assert _status("NIST CP-9(2)", only_db) == "evidenced"
    # The quiet control: both compared (one against the state before the disaster, one a
    # repeated check with a #2 suffix), and an application, which holds no data, restored too.
    both = _results(
        components=[*two, ComponentResult(name="web", kind="application", restored_from="b1", healthy=True)],
        assertions=[
            _assertion("fidelity[db]"),
            _assertion("fidelity[cache@before-disaster]"),
            _assertion("fidelity[db]#2"),
            _assertion("rto[stack]"),
            _assertion("rpo[stack]"),
            _assertion("backup_integrity[nightly]"),
        ],
    )
    for control in whole:
        assert _status(control, both) == "evidenced", control
