"""A damaged row of the history is a domain error naming the file and the run (review of verdicts, finding 5).

SQLite keeps what it is given: text in a REAL column, infinity, a date that is no date.
Such a row was a traceback in ``drproof history`` and, after the drill had run, in the
regression gate; an RTO of infinity in a passing row set a baseline no run could exceed.
"""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from drills.cli import main
from drills.history import HistoryError, open_history
from tests.test_history import _record, _results
from tests.test_pytest_plugin import PASSING

DAMAGE = {
    "started_at": "yesterday",
    "content": "{not json",
    "rto_seconds": "fast",
    "verdict": "PASS",
    "drill_seconds": math.inf,
}


def _damaged(tmp_path: Path, column: str, value: Any) -> Path:
    db = tmp_path / "h.sqlite"
    _record(db, _results(10.0, day=0), _results(11.0, day=1))
    conn = sqlite3.connect(db)
    conn.execute(f"UPDATE runs SET {column} = ? WHERE id = 2", (value,))
    conn.commit()
    conn.close()
    return db


@pytest.mark.parametrize(("column", "value"), DAMAGE.items(), ids=DAMAGE.keys())
def test_a_damaged_row_names_the_file_and_the_run(tmp_path: Path, column: str, value: Any) -> None:
    db = _damaged(tmp_path, column, value)
    with pytest.raises(HistoryError, match=f"history {db}: run 2 is damaged") as caught, open_history(db) as h:
        h.runs("orders")
    assert caught.value.exit_code == 2
    assert main(["history", "--history", str(db)]) == 2


def test_a_damaged_history_fails_before_the_drill_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _damaged(tmp_path, "rto_seconds", math.inf)
    scenario = tmp_path / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    report = tmp_path / "report"
    code = main(["run", str(scenario), "--report-dir", str(report), "--history", str(db), "--quiet"])
    assert code == 2 and "run 2 is damaged (rto_seconds inf is not a finite number)" in capsys.readouterr().err
    assert not report.exists()


def test_a_sound_history_is_read_and_gated(tmp_path: Path) -> None:
    db = tmp_path / "h.sqlite"
    _record(db, _results(10.0, day=0), _results(11.0, day=1, verdict="fail"), _results(None, day=2, verdict="error"))
    with open_history(db) as h:
        assert [(r.verdict, r.rto_seconds) for r in h.runs("orders")] == [("error", None), ("fail", 11.0), ("pass", 10.0)]
    scenario = tmp_path / "roundtrip.yaml"
    scenario.write_text(PASSING, encoding="utf-8")
    assert main(["run", str(scenario), "--report-dir", str(tmp_path / "r"), "--history", str(db), "--quiet"]) == 0
