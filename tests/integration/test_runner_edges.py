"""Edge cases of the runner that must never produce a false pass."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from drills.loader import load_scenario
from drills.runner import DrillRunner, Hooks
from engine.components.base import Component
from tests.conftest import DATA, SCENARIOS
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]


def test_component_damaged_again_after_restore_fails_rto() -> None:
    results = DrillRunner(load_scenario(DATA / "drills" / "damaged-after-restore.yaml")).run()
    [rto] = [a for a in results.assertions if a.name == "rto"]
    assert rto.status == "fail" and "never recovered" in rto.summary
    assert results.verdict == "fail" and results.exit_code == 1
    assert results.measured.rto_seconds is None


def test_unexpected_exception_is_an_error_with_results_not_a_crash() -> None:
    def explode(comp: Component) -> None:
        raise RuntimeError("simulated bug in a hook")

    runner = DrillRunner(load_scenario(SCENARIOS / "configuration-delete.yaml"), hooks=Hooks(after_restore=explode))
    results = runner.run()
    assert results.verdict == "error" and results.exit_code == 2
    assert results.error is not None and "internal error" in results.error and "simulated bug" in results.error
    assert runner.internal_error is not None and "Traceback" in runner.internal_error
    assert {a.status for a in results.assertions} == {"not_run"}


@pytest.fixture
def group_writable_umask() -> Iterator[None]:
    old = os.umask(0o002)
    try:
        yield
    finally:
        os.umask(old)


def test_restore_keeps_group_write_permission(group_writable_umask: None, tmp_path: Path) -> None:
    results = DrillRunner(load_scenario(SCENARIOS / "configuration-modify.yaml"), work_root=tmp_path).run()
    assert results.verdict == "pass", [(a.id, a.findings) for a in results.assertions]


def test_kinds_that_cannot_run_on_docker_are_refused_before_anything_starts(tmp_path: Path) -> None:
    report = tmp_path / "r"
    code = run_cli(["run", str(SCENARIOS / "postgres-physical-delete-data-dir.yaml"), "--runtime", "docker",
                    "--report-dir", str(report), "-q"])  # fmt: skip
    assert code == 2
    assert (
        "cannot run on the docker runtime: orders-db (postgres-physical needs physical-access "
        "(runtimes that have it: local, external))" in read_results(report)["error"]
    )
