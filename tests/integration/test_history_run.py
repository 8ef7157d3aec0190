"""Real drills recorded in a history: a slowed restore trips the regression gate.

Two ordinary runs of postgres-drop-table make the baseline; the third has its restore
slowed by two seconds (far more than 20% of a restore that takes well under a second
here), so ``--fail-on-regression 20%`` must turn that run into a failure with exit 1.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.components.postgres import PostgresComponent
from tests.conftest import SCENARIOS
from tests.integration.helpers import read_results, run_cli

pytestmark = [pytest.mark.integration]


def _run(tmp_path: Path, n: int, history: Path, *extra: str) -> tuple[int, Path]:
    report = tmp_path / "reports" / f"run{n}"
    args = ["run", str(SCENARIOS / "postgres-drop-table.yaml"), "--report-dir", str(report)]
    args += ["--work-dir", str(tmp_path / "work"), "--quiet", "--history", str(history), *extra]
    return run_cli(args), report


def test_history_trend_regression_gate_and_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.sqlite"
    # Without the gate: sub-second RTOs of unslowed runs vary by more than 20% on a busy machine.
    for n in (1, 2, 3):
        code, report = _run(tmp_path, n, history)
        assert code == 0
    second = read_results(report)
    assert len(second["history"]["runs"]) == 3 and second["history"]["last_pass_rto_seconds"] is not None
    assert second["history"]["regression_threshold_percent"] is None
    assert not any(a["id"] == "regression[rto]" for a in second["assertions"])

    original = PostgresComponent.restore

    def slow_restore(self: PostgresComponent, source: Any) -> None:
        time.sleep(2)
        original(self, source)

    monkeypatch.setattr(PostgresComponent, "restore", slow_restore)
    code, report = _run(tmp_path, 4, history, "--fail-on-regression", "20%", "--regression-floor", "1s")
    assert code == 1
    third = read_results(report)
    assert (third["verdict"], third["exit_code"]) == ("fail", 1)
    gate = next(a for a in third["assertions"] if a["id"] == "regression[rto]")
    assert gate["status"] == "fail" and gate["name"] == "regression" and gate["source"] is None
    trend = third["history"]
    assert trend["regressed"] and trend["rto_change_percent"] > 20
    assert [p["verdict"] for p in trend["runs"]] == ["pass", "pass", "pass", "fail"]
    assert trend["last_pass_rto_seconds"] == second["measured"]["rto_seconds"]
    assert trend["baseline_runs"] == 3 and f"{trend['baseline_rto_seconds']:.2f} s" in gate["summary"]

    capsys.readouterr()
    assert run_cli(["history", "--history", str(history), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["verdict"] for r in listed] == ["fail", "pass", "pass", "pass"]  # newest first
    assert listed[0]["report_dir"] == str(report.resolve())

    index = tmp_path / "index.html"
    assert run_cli(["summary", str(tmp_path / "reports"), "--out", str(index)]) == 0
    html = index.read_text(encoding="utf-8")
    for n in (1, 2, 3, 4):
        assert f'href="reports/run{n}/report.html"' in html
    assert html.count('class="badge pass"') == 3 and html.count('class="badge fail"') == 1
