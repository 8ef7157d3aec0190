"""The shipped restore-test example works as README.md tells a new user to run it: one
command makes a small "production" backup, one restores it into a sandbox and passes."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]

EXAMPLE = Path(__file__).resolve().parents[2] / "scenarios" / "restore-test"


def test_the_shipped_restore_test_passes_on_the_backup_its_neighbour_makes(tmp_path: Path) -> None:
    work = tmp_path / "restore-test"
    shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("demo-repository"))
    assert run_cli(["run", str(work / "make-production-backup.yaml"), "--report-dir", str(tmp_path / "r1"), "-q"]) == 0
    assert run_cli(["run", str(work / "shop-restore-test.yaml"), "--report-dir", str(tmp_path / "r2"), "-q"]) == 0
    results = read_results(tmp_path / "r2")
    assert results["scope"]["kind"] == "restore-test"
    assert results["backups"][0]["name"] == "source"
    assert {c["id"]: c["status"] for c in results["controls"]}["ISO A.8.13"] == "evidenced"
    assert {a["name"] for a in results["assertions"]} >= {"fidelity", "rto", "freshness", "backup_integrity"}
    # Scope and identity, as the executive summary shows them (issue 19).
    html = (tmp_path / "r2" / "report.html").read_text(encoding="utf-8")
    assert "What was tested</dt><dd>restore test of backup" in html
    assert f"Run by</dt><dd>{results['identity']['user']} on {results['identity']['host']}" in html
