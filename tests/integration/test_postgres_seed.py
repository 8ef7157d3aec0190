"""PostgreSQL seeded from a user's SQL file is backed up and restored with fidelity."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DATA
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]


def test_sql_file_seed_round_trips(tmp_path: Path) -> None:
    report = tmp_path / "r"
    code = run_cli(["run", str(DATA / "drills" / "postgres-sql-file.yaml"), "--report-dir", str(report), "-q"])
    results = read_results(report)
    assert code == 0, results["assertions"]
    [fid] = [a for a in results["assertions"] if a["name"] == "fidelity"]
    # 400 of the table and the 15 of the materialized view low_stock, compared by content too.
    assert fid["evidence"]["content_compared"]["rows"] == 400 + 15
    assert results["disasters"][0]["effect"] == {"table": "public.inventory", "rows_lost": 400}


def test_unknown_runtime_is_refused_before_anything_starts(capsys: pytest.CaptureFixture[str]) -> None:
    code = run_cli(["run", str(DATA / "drills" / "postgres-sql-file.yaml"), "--runtime", "k8s"])
    assert code == 2
    assert "--runtime 'k8s' is not available (available: docker, local)" in capsys.readouterr().err
