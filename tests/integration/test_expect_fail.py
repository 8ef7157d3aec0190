"""Negative controls in scenarios: `expect: fail` passes only when the check fires."""

from __future__ import annotations

from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner, _negative_control
from engine.journal import AssertionResult
from tests.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]


def test_a_check_that_passes_where_it_must_fail_fails_the_drill(tmp_path: Path) -> None:
    """The same drill restored from a backup taken after the migration: nothing is lost."""
    text = (SCENARIOS / "expect-fail-backup-before-migration.yaml").read_text()
    moved = text.replace("  - backup: {name: before-migration}\n", "").replace(
        "  - disaster: {target: orders-db, fault: delete_data_dir}\n",
        "  - backup: {name: before-migration}\n  - disaster: {target: orders-db, fault: delete_data_dir}\n",
    )
    path = tmp_path / "blind.yaml"
    path.write_text(moved)
    results = DrillRunner(load_scenario(path)).run()
    assert results.verdict == "fail" and results.exit_code == 1
    [control] = [a for a in results.assertions if a.id == "fidelity[orders-db@before-disaster]"]
    assert control.status == "fail" and control.observed == "pass" and control.expected == "fail"
    assert "expected this check to fail" in control.findings[0]


def test_the_shipped_negative_control_passes_because_fidelity_names_the_missing_table() -> None:
    results = DrillRunner(load_scenario(SCENARIOS / "expect-fail-backup-before-migration.yaml")).run()
    assert results.verdict == "pass"
    [control] = [a for a in results.assertions if a.id == "fidelity[orders-db@before-disaster]"]
    assert control.observed == "fail"
    assert any("table public.invoices: missing" in f for f in control.evidence["findings_as_expected"])


@pytest.mark.parametrize("status", ["error", "not_run"])
def test_a_check_that_could_not_run_is_never_turned_green(status: str) -> None:
    r = _negative_control(AssertionResult(id="x", name="x", status=status, summary="could not run"))  # type: ignore[arg-type]
    assert r.status == status and r.observed == status


DEAD_SERVER = """
name: negative-control-on-a-dead-server
objectives: {rto: 1m}
stack:
  components:
    cache: {kind: redis, seed: {keys: 100}}
steps:
  - backup: {name: nightly}
  - disaster: {target: cache, fault: kill}
assertions:
  - fidelity: {expect: fail}
"""

TIMED_OUT = """
name: negative-control-that-timed-out
objectives: {rto: 1m}
stack:
  components:
    cache: {kind: redis, seed: {keys: 10}}
steps:
  - backup: {name: nightly}
assertions:
  - command: {argv: ["{python}", "-c", "import time; time.sleep(30)"], timeout: 1s, expect: fail}
"""


@pytest.mark.parametrize(("scenario", "check"), [(DEAD_SERVER, "fidelity[cache]"), (TIMED_OUT, "command")])
def test_a_negative_control_that_measured_nothing_is_an_error(tmp_path: Path, scenario: str, check: str) -> None:
    """Found by review: both "failed as expected" and the drill passed.

    A killed server's fingerprint was a placeholder, so fidelity listed every key space as
    lost (findings nobody measured); a check command that timed out was a failure. Both
    are errors now: neither measured anything, so neither can be a detection.
    """
    path = tmp_path / "s.yaml"
    path.write_text(scenario)
    results = DrillRunner(load_scenario(path), work_root=tmp_path / "work").run()
    [control] = [a for a in results.assertions if a.id.startswith(check)]
    assert control.status == "error", control
    assert control.observed == "error" or "measured nothing" in control.summary, control
    assert results.verdict != "pass" and results.exit_code == 2
